"""asr/live.py (on the streaming core): the live transcript's work per chunk stays bounded as the recording grows."""

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


def _peak_hz(samples: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_to_mono_16k_keeps_frequency_and_length(rate: int) -> None:
    """A chirp (a constant maps to itself under any resampler) comes out at 16 kHz as the same chirp."""
    seconds, f0, f1, amplitude = 2.0, 100.0, 2000.0, 0.5

    def chirp(t: np.ndarray) -> np.ndarray:  # 100 Hz rising linearly to 2 kHz
        return amplitude * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))

    browser = chirp(np.arange(int(seconds * rate)) / rate)
    out = to_mono_16k((browser * 32767).astype(np.int16), rate)
    assert out.dtype == np.float32 and out.shape == (32000,)
    # Sample by sample the analytic chirp at 16 kHz: right pitch, right time, right amplitude, within
    # what linear interpolation between samples can miss at the top frequency: A (1 - cos(pi f / rate)),
    # 0.15 from 8 kHz and under 0.005 from 44.1 or 48 kHz.
    expected = chirp(np.arange(32000) / 16000)
    bound = amplitude * (1 - np.cos(np.pi * f1 / rate)) + 1e-3
    error = float(np.abs(out - expected).max())
    assert error < bound, f"{rate} Hz: off the 16 kHz chirp by up to {error:.3f} (allowed {bound:.3f})"
    assert _peak_hz(out[:1600]) == pytest.approx(f0 + (f1 - f0) * 0.05 / seconds, abs=20)  # first 0.1 s


def test_to_mono_16k_downmixes_channels() -> None:
    t = np.arange(48000) / 48000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 1000 * t)], axis=1)
    out = to_mono_16k(stereo.astype(np.float32), 48000)
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out)) / (out.size / 2)  # amplitude per 1 Hz bin
    assert spectrum[440] == pytest.approx(0.25, abs=0.01) and spectrum[1000] == pytest.approx(0.25, abs=0.01)
    assert np.delete(spectrum, [440, 1000]).max() < 0.01


def test_work_per_chunk_is_bounded(engine, vad: StreamingVad) -> None:
    audio = _speech(30.0)
    browser = np.interp(np.arange(audio.size * 3) / 3, np.arange(audio.size), audio)  # 48 kHz, like a browser
    chunk = 24000  # 0.5 s at 48 kHz
    session = LiveSession(engine, vad, hotwords="")
    decoded, buffered, partials = [], [], 0
    for start in range(0, browser.size, chunk):
        update = session.feed((browser[start : start + chunk] * 32767).astype(np.int16), 48000)
        decoded.append(session.stats.last_decoded_s)
        buffered.append(session.buffered_s)
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


def test_finals_run_off_the_feeding_path_and_keep_their_order(engine, vad: StreamingVad, monkeypatch) -> None:
    """As on the WebSocket endpoint: a slow final never holds up the next chunk, and the text is the same."""
    import time

    from asr.streaming import StreamConfig, StreamSession

    audio = _speech(20.0)
    chunk = 8000  # 0.5 s at 16 kHz
    inline = StreamSession(engine, StreamConfig(mode="2pass", partials="redecode", hotwords=""), vad=vad)
    expected = [
        r.text
        for start in range(0, audio.size, chunk)
        for r in inline.feed(audio[start : start + chunk])
        if r.kind == "final" and r.text
    ]
    expected += [r.text for r in inline.finish() if r.kind == "final" and r.text]
    assert len(expected) >= 3

    session = LiveSession(engine, vad, hotwords="")
    slow_final = session._stream.final

    def final_after_a_pause(closed):
        time.sleep(1.5)
        return slow_final(closed)

    monkeypatch.setattr(session._stream, "final", final_after_a_pause)
    feeds = []
    for start in range(0, audio.size, chunk):
        began = time.perf_counter()
        session.feed(audio[start : start + chunk], 16000)
        feeds.append(time.perf_counter() - began)
    final = session.finish()
    assert max(feeds) < 1.5, f"a feed waited for a final: {max(feeds):.2f} s"
    assert final.text == "".join(expected) and not final.partial_text
