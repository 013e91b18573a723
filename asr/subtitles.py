"""Plain text and subtitle files (SRT, WebVTT) from a transcription's sentences.

Shared by the web UI downloads and the HTTP API, so the signatures stay minimal: a sequence of
`Sentence` in, a string out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .engine import Sentence

logger = logging.getLogger(__name__)


def format_timestamp(seconds: float, *, separator: str = ",") -> str:
    """`HH:MM:SS,mmm` (SRT) or, with `separator="."`, `HH:MM:SS.mmm` (WebVTT).

    Rounded to the millisecond once, on the total, so 59.9996 s becomes 00:01:00,000 and never
    00:00:59,1000. Hours are not wrapped at 24 (a 30-hour recording says 30:00:00,000).
    """
    millis = max(0, int(round(seconds * 1000)))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _cues(sentences: Sequence[Sentence]) -> list[Sentence]:
    # A cue without text is noise in a subtitle file; an end before the start would be rejected by players.
    return [Sentence(s.text.strip(), s.start, max(s.end, s.start)) for s in sentences if s.text.strip()]


def to_srt(sentences: Sequence[Sentence]) -> str:
    """SubRip: numbered cues `1\\nHH:MM:SS,mmm --> HH:MM:SS,mmm\\ntext\\n\\n`; "" for no sentences."""
    blocks = [
        f"{i}\n{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{s.text}\n"
        for i, s in enumerate(_cues(sentences), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(sentences: Sequence[Sentence]) -> str:
    """WebVTT: a `WEBVTT` header then cues with `.` before the milliseconds (the header alone when empty)."""
    blocks = [
        f"{format_timestamp(s.start, separator='.')} --> {format_timestamp(s.end, separator='.')}\n{s.text}\n"
        for s in _cues(sentences)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(sentences: Sequence[Sentence]) -> str:
    """The sentences joined as one paragraph (Chinese text needs no spaces), with a final newline; "" when empty."""
    text = "".join(s.text.strip() for s in sentences)
    return text + "\n" if text else ""
