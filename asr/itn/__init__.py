"""Inverse text normalization (ITN): the written form of a transcript, with word times that stay right.

`二零二六年十二月一日下午三点半，百分之五十` becomes `2026年12月1日下午3:30，50%`. The grammars are
WeTextProcessing's Chinese ITN FSTs, shipped compiled in the `wetext` wheel (no pynini, nothing downloaded at
run time; docs/itn.md says why this library). Three things are ours, around the library, not in it:

- **The written forms Chinese readers expect** (`asr.itn.forms`): the grammar writes `2026/12/01`,
  `03:30:00p.m.`, `¥350`, `15-6个`, `10min`; each of its tokens is rewritten from its tag, its number and the
  spoken words it came from (`2026年12月1日`, `下午3:30`, `350元`, `15~16个`, `10分钟`).
- **Words that only look like numbers stay** (`十分感谢`, `三三两两`, `八点一刻`): a token the grammar converts
  wrongly is put back (`forms.keep_spoken`), as is any token that overlaps a hotword (`一汽大众`).
- **Times**: the grammar says which span of the spoken text each written token came from; a written-form word
  spans from the first to the last spoken word of that span (`rewrite_words`). Sentence times, subtitles
  and speaker labels do not change.

ITN never fails a transcription: on an error inside the library the spoken text is kept and the error is
logged once per kind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .forms import keep_spoken, written_token

if TYPE_CHECKING:
    from asr.engine import Sentence, Transcription, Word

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Span:
    """One rewritten token: spoken text[start:end] is written as `written`."""

    start: int
    end: int
    spoken: str
    written: str
    kind: str  # the grammar's tag: date, time, money, measure, cardinal, fraction, ...


@dataclass(frozen=True)
class Rewrite:
    """The written form of one text, and which spoken span each rewritten token came from."""

    spoken: str
    written: str
    spans: tuple[Span, ...]


class InverseNormalizer:
    """Chinese ITN over WeTextProcessing's grammars. Thread-safe; `load()` once (about 0.4 s), then cheap
    (a few ms per sentence)."""

    def __init__(self) -> None:
        self._normalizer: Any = None
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self.load_time = 0.0

    def load(self) -> None:
        with self._lock:
            if self._normalizer is not None:
                return
            started = time.perf_counter()
            from wetext import Normalizer

            normalizer = Normalizer(lang="zh", operator="itn")
            normalizer.normalize_with_mapping("一")  # reads the FSTs now, not on the first request
            self._normalizer = normalizer
            self.load_time = time.perf_counter() - started
            logger.info("ITN grammars loaded in %.2f s", self.load_time)

    def rewrite(self, text: str, protected: Iterable[str] = ()) -> Rewrite:
        """The written form of `text`; no token that overlaps a `protected` word (a hotword) is rewritten.

        The library's spans cost about 1 ms per character, so it sees only windows of the text: each run of
        numerals with up to CONTEXT characters either side (a unit such as 公里每小时, a period such as 下午),
        never across punctuation; and a window is traced only when the cheap plain pass changes it."""
        if not text.strip() or not _has_numeral(text):
            return Rewrite(text, text, ())
        try:
            self.load()
            mappings = [m for start, end in _windows(text) for m in self._window_mappings(text, start, end)]
        except Exception as exc:  # the library's failure never fails a transcription
            self._log_once(exc)
            return Rewrite(text, text, ())
        guarded = _protected_ranges(text, protected)
        spans: list[Span] = []
        for token_type, start, end, output in mappings:
            if start < 0 or (spans and start < spans[-1].end):
                continue  # a span the text does not hold where the library says: keep those words spoken
            if any(start < g_end and g_start < end for g_start, g_end in guarded):
                continue
            spoken = text[start:end]
            if keep_spoken(spoken, text[end : end + 1]):
                continue
            written = written_token(token_type, spoken, output)
            if written != spoken:
                spans.append(Span(start, end, spoken, written, token_type))
        return Rewrite(text, _apply(text, spans), tuple(spans))

    def _window_mappings(self, text: str, start: int, end: int) -> list[tuple[str, int, int, str]]:
        """(tag, start, end, output) of each token the grammar rewrites in text[start:end], in `text`'s offsets."""
        window = text[start:end]
        if self._normalizer.normalize(window) == window:
            return []
        found = []
        lead = len(window) - len(window.lstrip())
        for m in self._normalizer.normalize_with_mapping(window).mappings:
            if m.kind not in ("replace", "delete"):
                continue
            at, stop = _locate(window, m.input_text, m.input_start, lead)
            found.append((m.token_type, at + start if at >= 0 else -1, stop + start, m.output_text))
        return found

    def written(self, text: str, protected: Iterable[str] = ()) -> str:
        return self.rewrite(text, protected).written

    def transcription(self, result: Transcription, protected: Sequence[str] = ()) -> Transcription:
        """`result` in written form: its text and each sentence's text and words (with their times);
        `text_spoken` keeps the spoken text. Sentence times and speakers are unchanged."""
        sentences = [self.sentence(s, protected) for s in result.sentences]
        if result.text == "".join(s.text for s in result.sentences):
            text = "".join(s.text for s in sentences)  # the sentences' rewrites: the grammar runs once
        else:
            text = self.written(result.text, protected)
        return replace(result, text=text, sentences=sentences, text_spoken=result.text)

    def sentence(self, sentence: Sentence, protected: Sequence[str] = ()) -> Sentence:
        rewrite = self.rewrite(sentence.text, protected)
        if not rewrite.spans:
            return sentence
        return replace(sentence, text=rewrite.written, words=rewrite_words(sentence.text, sentence.words, rewrite))

    def _log_once(self, exc: Exception) -> None:
        kind = type(exc).__name__
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("ITN failed (%s: %s); the spoken text is kept (logged once per kind)", kind, exc)


def rewrite_words(text: str, words: Sequence[Word], rewrite: Rewrite) -> list[Word]:
    """The sentence's words after `rewrite`: each rewritten token becomes one word spanning the first to the last
    spoken word it came from; the other words are unchanged. `text` is the spoken sentence the words are in."""
    places = _word_places(text, words)
    out: list[Word] = []
    spans = list(rewrite.spans)
    i = 0
    while i < len(words):
        start, end = places[i]
        span = next((s for s in spans if start >= 0 and start < s.end and s.start < end), None)
        if span is None:
            out.append(words[i])
            i += 1
            continue
        j = i
        while j + 1 < len(words) and places[j + 1][0] >= 0 and places[j + 1][0] < span.end:
            j += 1
        if span.written:
            out.append(replace(words[i], text=span.written, start=words[i].start, end=words[j].end))
        spans.remove(span)
        i = j + 1
    return out


def _word_places(text: str, words: Sequence[Word]) -> list[tuple[int, int]]:
    """Where each word sits in the sentence's text, in order ((-1, -1) for one not found, such as <unk>)."""
    places: list[tuple[int, int]] = []
    at = 0
    for word in words:
        found = text.find(word.text, at) if word.text else -1
        if found < 0:
            places.append((-1, -1))
            continue
        places.append((found, found + len(word.text)))
        at = found + len(word.text)
    return places


def _apply(text: str, spans: Sequence[Span]) -> str:
    parts, at = [], 0
    for span in spans:
        parts += [text[at : span.start], span.written]
        at = span.end
    parts.append(text[at:])
    return "".join(parts)


def _locate(text: str, piece: str, start: int, lead: int) -> tuple[int, int]:
    for at in (start, start + lead):
        if text[at : at + len(piece)] == piece and piece:
            return at, at + len(piece)
    return -1, -1


def _protected_ranges(text: str, words: Iterable[str]) -> list[tuple[int, int]]:
    ranges = []
    for word in words:
        word = word.strip()
        at = text.find(word) if word else -1
        while at >= 0:
            ranges.append((at, at + len(word)))
            at = text.find(word, at + 1)
    return ranges


_NUMERALS = set("零〇一二三四五六七八九十百千万亿两幺壹贰叁肆伍陆柒捌玖拾佰仟点负半")
#: Characters of context either side of a run of numerals (公里每小时 is five, 百分之 starts with a numeral).
CONTEXT = 6
_BREAKS = set("，。？！；：、,.?!;:\n")


def _windows(text: str) -> list[tuple[int, int]]:
    """Spans of `text` around its runs of numerals, widened by CONTEXT but not across punctuation, merged."""
    windows: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] not in _NUMERALS:
            i += 1
            continue
        j = i
        while j < n and text[j] in _NUMERALS:
            j += 1
        start = i
        while start > 0 and i - start < CONTEXT and text[start - 1] not in _BREAKS:
            start -= 1
        end = j
        while end < n and end - j < CONTEXT and text[end] not in _BREAKS:
            end += 1
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(end, windows[-1][1]))
        else:
            windows.append((start, end))
        i = j
    return windows


def _has_numeral(text: str) -> bool:
    return any(c in _NUMERALS for c in text)
