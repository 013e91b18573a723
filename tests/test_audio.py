import csv
import io
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from asr import audio as audio_mod
from asr.audio import SAMPLE_RATE, AudioLimits, load_audio
from asr.errors import (
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    FileTooLargeError,
    InputError,
    NoAudioStreamError,
    NotAudioError,
)
from conftest import DATA

REFERENCE, _ = sf.read(DATA / "utterances" / "firered_BAC009S0764W0121.wav", dtype="float32")
FORMATS = sorted((DATA / "formats").iterdir())


def _similarity(a: np.ndarray, b: np.ndarray, max_lag: int = 800) -> float:
    """Peak normalised cross-correlation within ±50 ms (lossy codecs add delay)."""
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    size = 2 * n
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lags = np.concatenate([corr[: max_lag + 1], corr[-max_lag:]])
    return float(lags.max() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


@pytest.mark.parametrize("path", FORMATS, ids=lambda p: p.name)
def test_every_format_decodes_to_the_same_16k_mono_clip(path):
    decoded = load_audio(path)
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert decoded.duration == pytest.approx(4.2, abs=0.05)
    assert _similarity(decoded.samples, REFERENCE) > 0.9


def test_lossless_wav_decodes_bit_exact():
    decoded = load_audio(DATA / "utterances" / "firered_BAC009S0764W0121.wav")
    np.testing.assert_array_equal(decoded.samples, REFERENCE)


@pytest.mark.parametrize("name", ["clip.m4a", "clip_video.mp4", "clip.mp3", "clip_48k_24bit.wav"])
def test_bytes_decode_like_the_file(name):
    path = DATA / "formats" / name
    from_bytes = load_audio(path.read_bytes())
    from_path = load_audio(path)
    # From a pipe ffmpeg cannot read an MP3's gapless-playback header, so it may keep ~10 ms of padding.
    assert from_bytes.duration == pytest.approx(from_path.duration, abs=0.02)
    assert _similarity(from_bytes.samples, from_path.samples) > 0.99


def test_arrays_are_converted_resampled_and_downmixed():
    int16 = (REFERENCE * 32767).astype(np.int16)
    assert load_audio(int16, sample_rate=SAMPLE_RATE).duration == pytest.approx(4.2, abs=0.01)
    at_8k = REFERENCE[::2].copy()
    resampled = load_audio(at_8k, sample_rate=8000)
    assert resampled.duration == pytest.approx(4.2, abs=0.01)
    stereo = np.stack([REFERENCE, REFERENCE], axis=1)
    np.testing.assert_allclose(load_audio((SAMPLE_RATE, stereo)).samples, REFERENCE, atol=1e-6)
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(REFERENCE)


def _bad_cases():
    with open(DATA / "manifest.tsv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "bad"]
    return [(r["path"], r["expect"]) for r in rows]


EXPECTED_ERRORS = {
    "empty.wav": EmptyAudioError,
    "header_only.wav": EmptyAudioError,
    "not_audio.wav": NotAudioError,
    "random_bytes.mp3": NotAudioError,
    "image_renamed.wav": NotAudioError,
    "video_no_audio.mp4": NoAudioStreamError,
    "50ms.wav": AudioTooShortError,
}


@pytest.mark.parametrize("rel, expect", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_inputs_give_a_specific_error_or_audio(rel, expect):
    path = DATA / rel
    error = EXPECTED_ERRORS.get(path.name)
    if error is not None:
        assert expect.startswith("error")
        with pytest.raises(error) as info:
            load_audio(path)
        assert path.name in str(info.value) and len(str(info.value)) > len(path.name) + 10
    else:  # truncated, corrupt frames, dropout, silence, noise: decodable, the engine decides the text
        assert load_audio(path).duration > 1.0


@pytest.fixture
def ffmpeg_output_seconds(monkeypatch) -> list[float]:
    """Seconds of 16 kHz float32 audio each ffmpeg run handed back, recorded as asr.audio runs them."""
    seconds: list[float] = []
    communicate = audio_mod._communicate

    def recording(*args, **kwargs):
        returncode, stdout, stderr = communicate(*args, **kwargs)
        seconds.append(len(stdout) / 4 / SAMPLE_RATE)
        return returncode, stdout, stderr

    monkeypatch.setattr(audio_mod, "_communicate", recording)
    return seconds


def test_limits_are_enforced_before_decoding_everything(tmp_path, ffmpeg_output_seconds):
    minute = tmp_path / "minute.wav"
    sf.write(minute, np.tile(REFERENCE, 15)[: 60 * SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
    for source in (minute, minute.read_bytes()):
        with pytest.raises(AudioTooLongError, match="longer than the limit of 2 s"):
            load_audio(source, limits=AudioLimits(max_seconds=2))
    # ffmpeg stopped one second past the limit, in both runs: 3 of the file's 60 seconds were decoded.
    assert ffmpeg_output_seconds == [pytest.approx(3.0, abs=0.05)] * 2, ffmpeg_output_seconds
    assert load_audio(minute).duration == pytest.approx(60.0)  # and without a limit, all of it

    ffmpeg_output_seconds.clear()
    with pytest.raises(FileTooLargeError, match="is 1.9 MB, over the limit of 1 MB"):
        load_audio(minute, limits=AudioLimits(max_bytes=10**6))
    with pytest.raises(FileTooLargeError, match="is 1.9 MB, over the limit of 1 MB"):
        load_audio(minute.read_bytes(), limits=AudioLimits(max_bytes=10**6))
    assert ffmpeg_output_seconds == []  # refused on its size, before ffmpeg ran
    with pytest.raises(NotAudioError, match="missing.wav: file not found"):
        load_audio(DATA / "missing.wav")


def test_all_input_errors_share_one_base_class():
    for error in (*EXPECTED_ERRORS.values(), AudioTooLongError, FileTooLargeError):
        assert issubclass(error, InputError)


def test_falls_back_to_the_wheel_ffmpeg_without_a_system_one(monkeypatch):
    import imageio_ffmpeg

    audio_mod.ffmpeg_binary.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    try:
        assert audio_mod.ffmpeg_binary() == imageio_ffmpeg.get_ffmpeg_exe()
        assert load_audio(DATA / "formats" / "clip.opus").duration == pytest.approx(4.2, abs=0.05)
    finally:
        audio_mod.ffmpeg_binary.cache_clear()


def test_a_stop_check_kills_ffmpeg_within_a_poll(tmp_path, monkeypatch):
    from asr.errors import ASRError
    from asr.progress import stop_check

    class Stop(ASRError):
        code = "cancelled"

    long = tmp_path / "long.wav"
    sf.write(long, np.tile(REFERENCE, 400), SAMPLE_RATE, subtype="PCM_16")  # ~30 minutes
    asked = time.perf_counter() + 0.3
    children: list = []
    popen = audio_mod.subprocess.Popen

    def tracked(args, *rest, **kwargs):
        # Read the input at its own pace (ffmpeg's -readrate): ffmpeg cannot finish before the stop, however fast
        # the machine, so the stop always lands while it runs.
        args = [*args[:1], "-readrate", "1", *args[1:]]
        children.append(popen(args, *rest, **kwargs))
        return children[-1]

    def check() -> None:
        if children and time.perf_counter() >= asked:
            raise Stop()

    monkeypatch.setattr(audio_mod.subprocess, "Popen", tracked)
    with stop_check(check), pytest.raises(Stop):
        load_audio(long, limits=AudioLimits(max_seconds=7200))
    assert time.perf_counter() - asked < 0.5, "stopped within a poll"
    assert children and all(c.poll() is not None for c in children), "ffmpeg does not outlive the call"


def test_bytes_are_fed_whole_however_short_the_poll(monkeypatch):
    # A poll that ends before the input is written (as under load) must not stop the feeding: ffmpeg would wait
    # for the rest of stdin forever. 8 MB of WAV is far more than a pipe holds.
    monkeypatch.setattr(audio_mod, "_POLL_S", 0.001)
    data = io.BytesIO()
    sf.write(data, np.tile(REFERENCE, 60), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    started = time.perf_counter()
    audio = load_audio(data.getvalue(), limits=AudioLimits(max_seconds=7200, timeout_s=30), name="long.wav")
    assert audio.duration == pytest.approx(60 * len(REFERENCE) / SAMPLE_RATE, abs=0.01)
    assert time.perf_counter() - started < 20
