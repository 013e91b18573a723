"""Plain text and subtitle files (SRT, WebVTT) from a transcription's sentences, and word times.

Shared by the web UI downloads and the HTTP API, so the signatures stay minimal: a sequence of
`Sentence` in, a string out. Sentences that carry a speaker are labelled `说话人N`: a `说话人N：` prefix in
TXT and SRT (one paragraph per turn in TXT), a voice tag `<v 说话人N>` in WebVTT.

With `tags=True` (opt-in) a SenseVoice sentence's language, emotion and events lead its text in brackets,
`[yue · angry · laughter] ...`: what a QA reviewer scans a subtitle file for. Plain speech in a neutral voice adds
nothing but its language.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

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


def speaker_label(speaker: int) -> str:
    """`说话人1`: how a speaker is named in files and tables (numbered from 1 in order of first appearance)."""
    return f"说话人{speaker}"


def tag_label(s: Sentence) -> str:
    """`[yue · angry · laughter]` for a sentence SenseVoice described (neutral emotion left out); "" otherwise."""
    parts = [s.language or "", "" if s.emotion in (None, "neutral") else str(s.emotion), *s.events]
    parts = [p for p in parts if p]
    return f"[{' · '.join(parts)}]" if parts else ""


def _cues(sentences: Sequence[Sentence], tags: bool = False) -> list[Sentence]:
    # A cue without text is noise in a subtitle file; an end before the start would be rejected by players.
    cues = []
    for s in sentences:
        if not s.text.strip():
            continue
        text = s.text.strip()
        if tags and tag_label(s):
            text = f"{tag_label(s)} {text}"
        cues.append(replace(s, text=text, end=max(s.end, s.start), words=[]))
    return cues


def _with_speaker(s: Sentence) -> str:
    return s.text if s.speaker is None else f"{speaker_label(s.speaker)}：{s.text}"


def to_srt(sentences: Sequence[Sentence], *, tags: bool = False) -> str:
    """SubRip: numbered cues `1\nHH:MM:SS,mmm --> HH:MM:SS,mmm\ntext\n\n`; "" for no sentences."""
    blocks = [
        f"{i}\n{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{_with_speaker(s)}\n"
        for i, s in enumerate(_cues(sentences, tags), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(sentences: Sequence[Sentence], *, tags: bool = False) -> str:
    """WebVTT: a `WEBVTT` header then cues with `.` before the milliseconds (the header alone when empty)."""

    def text(s: Sentence) -> str:
        if s.speaker is None:
            return s.text
        escaped = s.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return f"<v {speaker_label(s.speaker)}>{escaped}</v>"

    blocks = [
        f"{format_timestamp(s.start, separator='.')} --> {format_timestamp(s.end, separator='.')}\n{text(s)}\n"
        for s in _cues(sentences, tags)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(sentences: Sequence[Sentence], *, tags: bool = False) -> str:
    """The sentences joined as one paragraph (Chinese text needs no spaces), with a final newline; "" when empty.

    With speakers: one line per turn (consecutive sentences of one speaker), `说话人N：text`. SenseVoice's
    sentences (unpunctuated, any of five languages) are joined with a space, as its text is; with `tags`, one
    line each, so every line has its own tags.
    """
    cues = _cues(sentences, tags)
    described = any(s.language for s in cues)  # SenseVoice's
    if tags and described:
        return "".join(_with_speaker(s) + "\n" for s in cues)
    if not any(s.speaker is not None for s in cues):
        text = (" " if described else "").join(s.text for s in cues)
        return text + "\n" if text else ""
    turns: list[Sentence] = []
    for s in cues:
        if turns and turns[-1].speaker == s.speaker:
            joined = turns[-1].text + (" " if described else "") + s.text
            turns[-1] = Sentence(joined, turns[-1].start, s.end, s.speaker)
        else:
            turns.append(s)
    return "".join(_with_speaker(turn) + "\n" for turn in turns)


def to_word_tsv(sentences: Sequence[Sentence]) -> str:
    """Word times, tab-separated: `start end word sentence [speaker]` (seconds, 3 decimals); "" without words."""
    with_speakers = any(s.speaker is not None for s in sentences)
    header = "start\tend\tword\tsentence" + ("\tspeaker" if with_speakers else "")
    rows = []
    for number, s in enumerate(sentences, start=1):
        speaker = ("\t" + (speaker_label(s.speaker) if s.speaker is not None else "")) if with_speakers else ""
        rows += [f"{w.start:.3f}\t{w.end:.3f}\t{w.text}\t{number}{speaker}" for w in s.words]
    return "\n".join([header, *rows]) + "\n" if rows else ""
