"""asr/subtitles.py: timestamp formatting and the SRT / WebVTT / TXT writers."""

from __future__ import annotations

import pytest

from asr.engine import Sentence
from asr.subtitles import format_timestamp, to_srt, to_txt, to_vtt

SENTENCES = [Sentence("欢迎大家来体验达摩院推出的语音识别模型。", 0.88, 5.455), Sentence("热词，科哥。", 6.0, 7.25)]


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (0, "00:00:00,000"),
        (1.5, "00:00:01,500"),
        (59.9996, "00:01:00,000"),  # rounding carries into the minutes, never ",1000"
        (61.001, "00:01:01,001"),
        (3599.999, "00:59:59,999"),
        (3600, "01:00:00,000"),
        (3 * 3600 + 25 * 60 + 7.089, "03:25:07,089"),  # hours > 1 h
        (30 * 3600, "30:00:00,000"),  # not wrapped at 24 h
        (-0.2, "00:00:00,000"),
    ],
)
def test_format_timestamp(seconds: float, expected: str) -> None:
    assert format_timestamp(seconds) == expected
    assert format_timestamp(seconds, separator=".") == expected.replace(",", ".")


def test_srt() -> None:
    assert to_srt(SENTENCES) == (
        "1\n00:00:00,880 --> 00:00:05,455\n欢迎大家来体验达摩院推出的语音识别模型。\n\n"
        "2\n00:00:06,000 --> 00:00:07,250\n热词，科哥。\n"
    )


def test_srt_long_audio_hours() -> None:
    srt = to_srt([Sentence("一", 3725.5, 3727.0)])
    assert "01:02:05,500 --> 01:02:07,000" in srt


def test_vtt() -> None:
    vtt = to_vtt(SENTENCES)
    assert vtt.startswith("WEBVTT\n\n00:00:00.880 --> 00:00:05.455\n欢迎")
    assert "00:00:06.000 --> 00:00:07.250\n热词，科哥。\n" in vtt
    assert "," not in vtt.split("\n")[2]


def test_txt() -> None:
    assert to_txt(SENTENCES) == "欢迎大家来体验达摩院推出的语音识别模型。热词，科哥。\n"


def test_empty_and_blank() -> None:
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n\n"
    assert to_txt([]) == ""
    # blank sentences (silence) are dropped and the numbering stays contiguous
    srt = to_srt([Sentence(" ", 0, 1), Sentence("好", 2, 1.5)])
    assert srt == "1\n00:00:02,000 --> 00:00:02,000\n好\n"
