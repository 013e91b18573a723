"""Character error rate and hotword recall of a hypothesis against its reference (docs/verification.md).

Both texts are first normalised (`normalise`), so that only what was said is compared, not how it was
written: Unicode NFKC (full-width letters, digits and punctuation become their half-width forms, `ｸ` becomes
`ク`, compatibility ligatures are split), then lower case (`str.lower`), then every character whose Unicode
general category is punctuation (P*: `，。、！？“”（）《》,.!?'"-:%` ...), a separator (Z*: spaces of every
width) or "other" (C*: tabs, new lines, zero-width and other format characters) is removed. Letters (L*),
marks (M*), numbers (N*) and symbols (S*: `+`, `$`, `°`, `¥`) are kept. The same rule applies to hotwords.

CER = (S + D + I) / N over characters: N is the normalised reference's length, and S, D, I the
substitutions, deletions and insertions of a minimum-edit (Levenshtein) alignment, computed by RapidFuzz.

A hotword's **occurrences** in a text are its non-overlapping matches, left to right, in the normalised text
(so `达摩 院` and `达摩院` are one occurrence each, and so is `ＡＢＣ` of the hotword `abc`). An occurrence in the
reference is **recalled** when the hypothesis, at the place the alignment puts against it, says the hotword:
the hypothesis text aligned to the occurrence's characters (their substitutes, plus whatever the hypothesis
inserted inside the occurrence or right next to it) contains the hotword, and each hypothesis occurrence
recalls at most one reference occurrence (matched in order). Insertions next to or inside an occurrence are
included because minimum-edit alignments tie: `达摩院` against `达达摩院` has an optimal alignment that puts the
extra `达` inside the word, and the word was said all the same. A hotword said elsewhere in the hypothesis
recalls nothing. **False alarms** are the hypothesis's occurrences beyond the reference's:
max(0, hypothesis occurrences - reference occurrences), per file.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

#: Unicode general categories kept by `normalise` (first letter): letters, marks, numbers, symbols.
KEPT_CATEGORIES = frozenset("LMNS")


def normalise(text: str) -> str:
    """The text as it is compared: NFKC, lower case, and only letters, marks, numbers and symbols kept."""
    folded = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in KEPT_CATEGORIES)


def hotword_terms(hotwords: Iterable[str]) -> list[str]:
    """The distinct normalised forms of `hotwords`, in their first order; words that normalise to nothing
    (only punctuation or spaces) are dropped."""
    terms: dict[str, None] = {}
    for word in hotwords:
        term = normalise(word)
        if term:
            terms.setdefault(term, None)
    return list(terms)


@dataclass(frozen=True)
class EditCounts:
    """The edits that turn a reference into a hypothesis, and the reference's length (characters)."""

    reference_chars: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def cer(self) -> float | None:
        """(S + D + I) / N; None for an empty reference (any insertion there still counts in a sum)."""
        return self.edits / self.reference_chars if self.reference_chars else None

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.reference_chars + other.reference_chars,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )


@dataclass(frozen=True)
class HotwordCounts:
    """One hotword in one or more reference/hypothesis pairs."""

    occurrences: int = 0
    recalled: int = 0
    false_alarms: int = 0

    @property
    def recall(self) -> float | None:
        return self.recalled / self.occurrences if self.occurrences else None

    def __add__(self, other: HotwordCounts) -> HotwordCounts:
        return HotwordCounts(
            self.occurrences + other.occurrences,
            self.recalled + other.recalled,
            self.false_alarms + other.false_alarms,
        )


@dataclass(frozen=True)
class TextScore:
    """A hypothesis scored against its reference: both normalised, the edits, and each hotword term's counts."""

    reference: str
    hypothesis: str
    edits: EditCounts
    hotwords: dict[str, HotwordCounts]


def score(reference: str, hypothesis: str, hotwords: Sequence[str] = ()) -> TextScore:
    """Normalise both texts, align them once, and count the edits and every hotword's occurrences,
    recalls and false alarms (`hotwords` are normalised here too; see `hotword_terms`)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    opcodes = Levenshtein.opcodes(ref, hyp)
    substitutions = deletions = insertions = 0
    for op in opcodes:
        if op.tag == "replace":
            substitutions += op.src_end - op.src_start
        elif op.tag == "delete":
            deletions += op.src_end - op.src_start
        elif op.tag == "insert":
            insertions += op.dest_end - op.dest_start
    edits = EditCounts(len(ref), substitutions, deletions, insertions)
    before, after = _hypothesis_at_gaps(ref, list(opcodes))
    counts = {term: _hotword_counts(ref, hyp, term, before, after) for term in hotword_terms(hotwords)}
    return TextScore(ref, hyp, edits, counts)


def occurrences(text: str, term: str) -> list[int]:
    """Where `term` starts in `text`: non-overlapping matches, left to right."""
    found, start = [], text.find(term)
    while term and start >= 0:
        found.append(start)
        start = text.find(term, start + len(term))
    return found


def _hypothesis_at_gaps(ref: str, opcodes: Sequence) -> tuple[list[int], list[int]]:
    """For each gap g between reference characters (0..len(ref)): the hypothesis position the alignment
    puts there before (`before[g]`) and after (`after[g]`) what the hypothesis inserted at that gap."""
    before = [0] * (len(ref) + 1)
    after = [0] * (len(ref) + 1)
    for op in opcodes:
        if op.tag == "insert":
            continue
        # equal and replace pair characters one to one (RapidFuzz's replace blocks have one length on both
        # sides); a deletion puts all of its reference characters at one hypothesis position
        for k in range(op.src_start, op.src_end + 1):
            position = op.dest_start if op.tag == "delete" else op.dest_start + (k - op.src_start)
            before[k] = after[k] = position
    for op in opcodes:  # an insertion sits at one gap, between the operations either side of it
        if op.tag == "insert":
            before[op.src_start], after[op.src_start] = op.dest_start, op.dest_end
    return before, after


def _hotword_counts(ref: str, hyp: str, term: str, before: list[int], after: list[int]) -> HotwordCounts:
    in_ref = occurrences(ref, term)
    in_hyp = len(occurrences(hyp, term))
    recalled, used_until = 0, 0
    for start in in_ref:
        low = max(before[start], used_until)
        high = after[start + len(term)]
        found = hyp.find(term, low, high)
        if found >= 0:
            recalled += 1
            used_until = found + len(term)
    return HotwordCounts(len(in_ref), recalled, max(0, in_hyp - len(in_ref)))
