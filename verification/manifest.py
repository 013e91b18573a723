"""Manifests: which recordings to verify and what was said in each (docs/verification.md).

Three shapes are read, all UTF-8 with or without a byte-order mark:

- TSV, `path<TAB>text`, one recording a line; a first line that names its columns is a header (`path` or
  `file`/`audio`/`wav`, and `text` or `reference`/`transcript`/`sentence`), and with a header the two columns
  may be anywhere among others (../shared/audio/manifest.tsv). Quotes are text, not quoting.
- CSV, the same with commas and the usual double-quote quoting.
- Kaldi's `wav.scp` (`utt_id path`) and `text` (`utt_id transcript`), joined on the utterance id.

Plus `items_from_pairs` for recordings and their transcripts that arrive together (the UI's upload).

Every row becomes a `ManifestItem`; a row that cannot be used (a missing or unreadable file, a wrong column
count, an id on one side only) carries its `Problem` and fails alone. Only a manifest with no usable row at
all raises `ManifestError`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from messages import Lang, message

from .problems import Problem

PATH_COLUMNS = ("path", "file", "audio", "wav", "filename")
TEXT_COLUMNS = ("text", "reference", "transcript", "sentence")

Delimiter = Literal["auto", "tsv", "csv"]


@dataclass(frozen=True)
class ManifestItem:
    """One recording to verify. `name` is the path as the manifest wrote it (what reports show); `path` is the
    file it resolved to, or None where the row had none; `line` is the row's line in its file (1-based; the
    last one of a CSV row whose quoted text spans lines)."""

    name: str
    path: Path | None
    reference: str
    line: int
    problem: Problem | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


class ManifestError(Exception):
    """The manifest as a whole cannot be used (not UTF-8, no rows, no usable row): the caller's input is at
    fault (HTTP 400). `items` holds the rows that were read, each with its problem."""

    code = "bad_manifest"

    def __init__(self, kind: str, *, items: Sequence[ManifestItem] = (), **params: Any):
        self.key = f"{self.code}.{kind}"
        self.params = params
        self.items = list(items)
        super().__init__(self.message("en"))

    def message(self, lang: Lang = "en") -> str:
        params = dict(self.params)
        if self.key == "bad_manifest.no_usable_row":  # the first row's own reason, in the same language
            first = next(item for item in self.items if item.problem)
            params["reason"] = first.problem.message(lang) if first.problem else ""
        return message(self.key, lang, **params)


def parse_table(
    data: bytes | str,
    *,
    base_dir: Path,
    delimiter: Delimiter = "auto",
    allowed_dirs: Sequence[Path] | None = None,
) -> list[ManifestItem]:
    """The items of a TSV or CSV manifest (`auto`: TSV when its first non-blank line has a tab). Relative
    paths resolve against `base_dir`; with `allowed_dirs`, a file outside all of them is a row problem
    whether or not it exists (so a manifest cannot probe the server's disk). Raises ManifestError when no row
    is usable."""
    text = _decode(data)
    if delimiter == "auto":
        first = next((line for line in text.split("\n") if line.strip()), "")
        delimiter = "tsv" if "\t" in first else "csv"
    source = io.StringIO(text, newline="")  # the csv module's own line handling: \r\n, quoted new lines
    if delimiter == "tsv":
        reader = csv.reader(source, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(source)
    # reader.line_num: the line a row ends on (a quoted CSV field may span lines)
    rows = [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
    if not rows:
        raise ManifestError("empty")

    path_col, text_col, width = 0, 1, 2
    header = [field.strip().lower().lstrip("#").strip() for field in rows[0][1]]
    path_names = [name for name in PATH_COLUMNS if name in header]
    text_names = [name for name in TEXT_COLUMNS if name in header]
    if path_names and text_names:
        path_col, text_col, width = header.index(path_names[0]), header.index(text_names[0]), len(header)
        rows = rows[1:]
        if not rows:
            raise ManifestError("empty")

    items = []
    for number, row in rows:
        if len(row) != width:
            name = row[path_col].strip() if len(row) > path_col else ""
            items.append(ManifestItem(name, None, "", number, _row_problem("columns", expected=width, count=len(row))))
            continue
        items.append(_item(row[path_col].strip(), row[text_col].strip(), number, base_dir, allowed_dirs))
    return _checked(items)


def parse_kaldi(
    wav_scp: bytes | str,
    text: bytes | str,
    *,
    base_dir: Path,
    allowed_dirs: Sequence[Path] | None = None,
) -> list[ManifestItem]:
    """The items of a Kaldi data folder's `wav.scp` and `text`, in wav.scp's order, then the ids only `text`
    has (as row problems). An id on one side only, a repeated id or a command pipe is a row problem."""
    audio: dict[str, tuple[int, str]] = {}
    items: list[ManifestItem] = []
    for number, utt_id, rest in _kaldi_lines(wav_scp):
        if utt_id in audio:
            first = audio[utt_id][0]
            items.append(ManifestItem(rest, None, "", number, _dup(utt_id, first)))
            continue
        audio[utt_id] = (number, rest)
    references: dict[str, str] = {}
    reference_lines: dict[str, int] = {}
    text_problems: list[ManifestItem] = []
    for number, utt_id, rest in _kaldi_lines(text):
        if utt_id in references:
            text_problems.append(ManifestItem(utt_id, None, rest, number, _dup(utt_id, reference_lines[utt_id])))
            continue
        references[utt_id] = rest
        reference_lines[utt_id] = number

    for utt_id, (number, path) in audio.items():
        if utt_id not in references:
            items.append(ManifestItem(path, None, "", number, _row_problem("no_text", utt_id=utt_id)))
        elif path.endswith("|"):
            items.append(ManifestItem(path, None, references[utt_id], number, _row_problem("command")))
        else:
            items.append(_item(path, references[utt_id], number, base_dir, allowed_dirs))
    for utt_id, reference in references.items():
        if utt_id not in audio:
            problem = _row_problem("no_audio", utt_id=utt_id)
            items.append(ManifestItem(utt_id, None, reference, reference_lines[utt_id], problem))
    items.extend(text_problems)
    if not items:
        raise ManifestError("empty")
    return _checked(items)


def read_manifest(
    path: Path,
    *,
    base_dir: Path | None = None,
    allowed_dirs: Sequence[Path] | None = None,
) -> list[ManifestItem]:
    """Read a manifest file: a Kaldi folder (or its `wav.scp`, with `text` beside it), else TSV/CSV (`.csv`
    is CSV, anything else is sniffed). Relative paths resolve against `base_dir`, by default the manifest's
    own folder."""
    path = Path(path)
    if path.is_dir() or path.name == "wav.scp":
        folder = path if path.is_dir() else path.parent
        base = base_dir if base_dir is not None else folder
        return parse_kaldi(
            (folder / "wav.scp").read_bytes(),
            (folder / "text").read_bytes(),
            base_dir=base,
            allowed_dirs=allowed_dirs,
        )
    base = base_dir if base_dir is not None else path.parent
    delimiter: Delimiter = "csv" if path.suffix.lower() == ".csv" else "auto"
    return parse_table(path.read_bytes(), base_dir=base, delimiter=delimiter, allowed_dirs=allowed_dirs)


def items_from_pairs(
    pairs: Iterable[tuple[str | os.PathLike[str], str]],
    *,
    names: Sequence[str] | None = None,
    allowed_dirs: Sequence[Path] | None = None,
) -> list[ManifestItem]:
    """Items from (file, transcript) pairs held in memory (the UI's files and a transcript column). `names`,
    when given, are what reports show for each (an upload's own file name); by default the file's name."""
    items = []
    for index, (file, reference) in enumerate(pairs):
        path = Path(file)
        name = names[index] if names is not None else path.name
        problem = _file_problem(path.resolve(), allowed_dirs)
        items.append(ManifestItem(name, path.resolve(), reference.strip(), index + 1, problem))
    if not items:
        raise ManifestError("empty")
    return _checked(items)


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError("encoding") from None


def _kaldi_lines(data: bytes | str) -> Iterable[tuple[int, str, str]]:
    for number, line in enumerate(_decode(data).splitlines(), start=1):
        if not line.strip():
            continue
        utt_id, _, rest = line.strip().partition(" ")
        if "\t" in utt_id:  # some tools write `id<TAB>path`
            utt_id, _, more = utt_id.partition("\t")
            rest = f"{more} {rest}" if rest else more
        yield number, utt_id, rest.strip()


def _row_problem(reason: str, **params: Any) -> Problem:
    return Problem("manifest", f"bad_manifest_row.{reason}", params)


def _dup(utt_id: str, first: int) -> Problem:
    return _row_problem("duplicate_id", utt_id=utt_id, first=first)


def _item(name: str, reference: str, line: int, base_dir: Path, allowed_dirs: Sequence[Path] | None) -> ManifestItem:
    if not name:
        return ManifestItem(name, None, reference, line, _row_problem("no_path"))
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    path = path.resolve()
    return ManifestItem(name, path, reference, line, _file_problem(path, allowed_dirs))


def _file_problem(path: Path, allowed_dirs: Sequence[Path] | None) -> Problem | None:
    """Why `path` (resolved) cannot be read, or None. Outside `allowed_dirs` it is refused before anything is
    asked of the disk, so the answer says nothing about files there."""
    if allowed_dirs is not None and not any(path.is_relative_to(Path(root).resolve()) for root in allowed_dirs):
        return _row_problem("not_allowed")
    if not path.exists():
        return _row_problem("not_found")
    if not path.is_file():
        return _row_problem("not_a_file")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError:
        return _row_problem("unreadable")
    return None


def _checked(items: list[ManifestItem]) -> list[ManifestItem]:
    if not any(item.usable for item in items):
        first = next(item for item in items if item.problem)
        raise ManifestError("no_usable_row", items=items, rows=len(items), line=first.line)
    return items
