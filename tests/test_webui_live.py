"""asr/live.py: the live transcript's work per chunk stays bounded as the recording grows."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from asr.live import LiveSession, StreamingVad, to_mono_16k
from conftest import DATA

MAX_SEGMENT_S = 4.0


@pytest.fixture(scope="module")
def vad(tiny_models) -> StreamingVad:
    return StreamingVad(str(tiny_models.vad), max_segment_s=MAX_SEGMENT_S, ncpu=1)


def _speech(seconds: float) -> np.ndarray:
    clips = [sf.read(p, dtype="float32")[0] for p in sorted((DATA / "utterances").glob("*.wav"))]
    audio = np.concatenate([np.concatenate([c, np.zeros(16000, np.float32)]) for c in clips])
    return np.tile(audio, int(seconds * 16000) // audio.size + 1)[: int(seconds * 16000)]


def test_to_mono_16k() -> None:
    stereo_48k = (np.ones((48000, 2)) * 16384).astype(np.int16)
    out = to_mono_16k(stereo_48k, 48000)
    assert out.dtype == np.float32 and out.shape == (16000,) and np.allclose(out, 0.5)


def test_work_per_chunk_is_bounded(engine, vad: StreamingVad) -> None:
    audio = _speech(30.0)
    browser = np.interp(np.arange(audio.size * 3) / 3, np.arange(audio.size), audio)  # 48 kHz, like a browser
    chunk = 24000  # 0.5 s at 48 kHz
    session = LiveSession(engine, vad, hotwords="")
    decoded, buffered, partials = [], [], 0
    for start in range(0, browser.size, chunk):
        update = session.feed((browser[start:start + chunk] * 32767).astype(np.int16), 48000)
        decoded.append(session.stats.last_decoded_s)
        buffered.append(session._buffer.size / 16000)
        partials += bool(update.partial_text)
    final = session.finish()

    assert session.received_s == pytest.approx(30.0, abs=0.01)
    assert session.stats.segments_closed >= 4  # closed segments were finalised along the way
    assert partials > 0 and final.text and not final.partial_text
    # Per chunk: at most the closed segment(s) plus the open one, each cut by the VAD at MAX_SEGMENT_S,
    # however long the recording has run; the buffer holds only the open segment (plus a short look-back).
    assert max(decoded) <= 2 * MAX_SEGMENT_S + 1.0, max(decoded)
    assert max(buffered) <= MAX_SEGMENT_S + 2.5, max(buffered)
    half = len(decoded) // 2
    assert np.mean(decoded[half:]) <= np.mean(decoded[:half]) * 1.5 + 0.5
