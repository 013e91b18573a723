"""A named hotword list and the file formats it is imported from and exported to.

FunASR's hotword file has one word per line, optionally followed by a weight (`阿里巴巴 20`). SeACo-Paraformer
biases every hotword alike, so weights are kept and shown (a list may later serve a model that uses them) but
do not change what this model does. A CSV file has the word in its first column and an optional weight in its
second; a header row (`word,weight`, `热词,权重`) is recognised and skipped.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

#: The owner of the lists an admin key manages for everyone (the service's default list among them).
SHARED = "shared"
#: The shared list that holds the service's default hotwords (DEFAULT_HOTWORDS seeds it on first start).
DEFAULT_LIST = "default"

_ID_RE = re.compile(r"^hl-[0-9a-f]{24}$")
_WEIGHT_RE = re.compile(r"^[+-]?\d+(\.\d+)?$")
_HEADER_WORDS = {"word", "words", "hotword", "hotwords", "热词", "词"}


class FormatError(ValueError):
    """A hotword file that cannot be read: `line` (1-based) is where, `reason` a catalogue variant."""

    def __init__(self, reason: str, line: int = 0):
        super().__init__(f"{reason} at line {line}")
        self.reason, self.line = reason, line


@dataclass(frozen=True)
class Word:
    text: str
    weight: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"word": self.text, "weight": self.weight}


@dataclass
class HotwordList:
    id: str
    name: str
    owner: str  # an `Owner.id`, or SHARED
    words: list[Word] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def shared(self) -> bool:
        return self.owner == SHARED

    @property
    def texts(self) -> list[str]:
        return [w.text for w in self.words]

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "words": [[w.text, w.weight] for w in self.words],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> HotwordList:
        return cls(
            id=doc["id"],
            name=doc["name"],
            owner=doc["owner"],
            words=[Word(text, weight) for text, weight in doc["words"]],
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
        )


def new_list_id() -> str:
    return "hl-" + secrets.token_hex(12)


def is_list_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


def new_list(name: str, owner: str, words: list[Word], now: float | None = None) -> HotwordList:
    now = time.time() if now is None else now
    return HotwordList(new_list_id(), name, owner, words, now, now)


def _weight(text: str, line: int) -> float:
    if not _WEIGHT_RE.match(text):
        raise FormatError("bad_weight", line)
    return float(text)


def _unique(words: list[Word]) -> list[Word]:
    """The first of each word, in file order (a word listed twice would only be biased once anyway)."""
    seen: set[str] = set()
    kept = []
    for word in words:
        if word.text not in seen:
            seen.add(word.text)
            kept.append(word)
    return kept


def parse_text(text: str) -> list[Word]:
    """FunASR's hotword file: a word per line, optionally `word weight`; blank lines and `#` comments skipped."""
    words = []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            raise FormatError("one_word_per_line", number)
        words.append(Word(fields[0], _weight(fields[1], number) if len(fields) == 2 else None))
    return _unique(words)


def parse_csv(text: str) -> list[Word]:
    """A CSV file: word, then an optional weight; a header row is skipped."""
    words = []
    for number, row in enumerate(csv.reader(io.StringIO(text.lstrip("\ufeff"))), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() in _HEADER_WORDS:
            continue
        weight = _weight(cells[1], number) if len(cells) > 1 and cells[1] else None
        words.append(Word(cells[0], weight))
    return _unique(words)


def parse_file(name: str, data: bytes) -> list[Word]:
    """An uploaded list by its extension: `.csv`, else FunASR's text format."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("not_utf8") from None
    return parse_csv(text) if name.lower().endswith(".csv") else parse_text(text)


def parse_words(value: Any) -> list[Word]:
    """Words as JSON gives them: a list of strings or of `{"word", "weight"}` objects, or FunASR's text."""
    if isinstance(value, str):
        return parse_text(value)
    if not isinstance(value, list):
        raise FormatError("bad_words")
    words = []
    for number, item in enumerate(value, start=1):
        if isinstance(item, str):
            words.append(Word(item.strip()))
        elif isinstance(item, dict) and isinstance(item.get("word"), str):
            weight = item.get("weight")
            if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))):
                raise FormatError("bad_weight", number)
            words.append(Word(item["word"].strip(), None if weight is None else float(weight)))
        else:
            raise FormatError("bad_words", number)
    return _unique([w for w in words if w.text])


def _format_weight(weight: float) -> str:
    return str(int(weight)) if weight == int(weight) else str(weight)


def to_text(words: list[Word]) -> str:
    """FunASR's hotword file (what `parse_text` reads back)."""
    return "".join(f"{w.text} {_format_weight(w.weight)}\n" if w.weight is not None else f"{w.text}\n" for w in words)


def to_csv(words: list[Word]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["word", "weight"])
    for w in words:
        writer.writerow([w.text, "" if w.weight is None else _format_weight(w.weight)])
    return out.getvalue()
