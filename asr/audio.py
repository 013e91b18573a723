"""Decode any audio or video input to 16 kHz mono float32 with one ffmpeg pass.

Paths are read by ffmpeg itself and bytes are piped through stdin, so no temp file is written,
except for containers that need to seek (MP4/M4A with the index at the end), which a pipe cannot
serve: those bytes go to one temp file in the configured temp dir, removed straight after.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Union

import ffmpeg
import numpy as np

from .errors import (
    AudioTooLongError,
    AudioTooShortError,
    DecodeError,
    EmptyAudioError,
    FileTooLargeError,
    NoAudioStreamError,
    NotAudioError,
)
from .progress import checkpoint

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: How often a running ffmpeg is checked for a stop (`asr.progress.checkpoint`).
_POLL_S = 0.2

AudioSource = Union[str, os.PathLike, bytes, bytearray, np.ndarray, tuple]  # noqa: UP007
"""A path, encoded bytes, a float/int sample array (with `sample_rate`), or Gradio's (rate, array)."""


@dataclass(frozen=True)
class Audio:
    """Decoded audio: float32 mono samples at 16 kHz in [-1, 1]."""

    samples: np.ndarray
    name: str = ""

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int = 200 * 1024 * 1024
    max_seconds: float = 3600.0
    min_seconds: float = 0.1
    timeout_s: float = 300.0
    temp_dir: Path | None = None


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """The system ffmpeg, else the one shipped in the imageio-ffmpeg wheel."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def load_audio(
    source: AudioSource, *, sample_rate: int | None = None, limits: AudioLimits = AudioLimits(), name: str = ""
) -> Audio:
    """Decode `source` to 16 kHz mono and check it against `limits`.

    Raises an `InputError` subclass with a message for a person when the input is unusable.
    """
    if isinstance(source, Audio):
        audio = source
    elif isinstance(source, tuple):  # Gradio's numpy audio: (sample_rate, samples)
        rate, samples = source
        audio = _from_array(np.asarray(samples), int(rate), limits, name or "recording")
    elif isinstance(source, np.ndarray):
        if sample_rate is None:
            raise ValueError("a sample array needs its sample_rate")
        audio = _from_array(source, sample_rate, limits, name or "array")
    elif isinstance(source, (bytes, bytearray)):
        audio = _from_bytes(bytes(source), limits, name or "upload")
    else:
        audio = _from_path(Path(source), limits, name or Path(source).name)
    _check_duration(audio, limits)
    return audio


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def probe_duration(path: str | os.PathLike, timeout_s: float = 30.0) -> float | None:
    """The duration a file's container declares, in seconds, without decoding it; None when it declares none.

    For progress estimates before a file is decoded (a job's total); the decoded length is what counts.
    """
    try:  # WAV, FLAC, OGG...: the header says it, without starting a process
        import soundfile

        info = soundfile.info(str(path))
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
    except Exception:  # not a format libsndfile knows (or not audio): ask ffmpeg
        pass
    args = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", str(path)]
    try:
        # Without an output ffmpeg exits with an error after printing the input's header, which is all we need.
        proc = subprocess.run(args, capture_output=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _DURATION.search(proc.stderr.decode("utf-8", "replace"))
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _from_path(path: Path, limits: AudioLimits, name: str) -> Audio:
    if not path.is_file():
        raise NotAudioError(name, reason="not_found", detail=str(path))
    size = path.stat().st_size
    _check_size(size, limits, name)
    samples = _run_ffmpeg(ffmpeg.input(str(path)), None, limits, name)
    return Audio(samples, name)


def _from_bytes(data: bytes, limits: AudioLimits, name: str) -> Audio:
    _check_size(len(data), limits, name)
    try:
        samples = _run_ffmpeg(ffmpeg.input("pipe:0"), data, limits, name)
    except NotAudioError:
        if not _is_iso_media(data):
            raise
        # MP4/M4A whose index sits at the end cannot be read from a pipe: give ffmpeg a seekable file.
        with tempfile.NamedTemporaryFile(dir=limits.temp_dir, suffix=".mp4") as tmp:
            tmp.write(data)
            tmp.flush()
            samples = _run_ffmpeg(ffmpeg.input(tmp.name), None, limits, name)
    return Audio(samples, name)


def _from_array(samples: np.ndarray, rate: int, limits: AudioLimits, name: str) -> Audio:
    if samples.size == 0:
        raise EmptyAudioError(name, reason="array")
    if np.issubdtype(samples.dtype, np.integer):
        scale = float(np.iinfo(samples.dtype).max) + 1.0
        samples = samples.astype(np.float32) / scale
    else:
        samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:  # (frames, channels)
        samples = samples.mean(axis=1, dtype=np.float32)
    if samples.ndim != 1:
        raise NotAudioError(name, reason="array_shape", shape=tuple(samples.shape))
    if rate != SAMPLE_RATE:
        raw = ffmpeg.input("pipe:0", format="f32le", ac=1, ar=rate)
        samples = _run_ffmpeg(raw, np.ascontiguousarray(samples).tobytes(), limits, name)
    return Audio(np.ascontiguousarray(samples), name)


def _run_ffmpeg(
    stream: ffmpeg.nodes.FilterableStream, stdin: bytes | None, limits: AudioLimits, name: str
) -> np.ndarray:
    # Decode one second past the limit so an over-long input is detected without decoding all of it.
    out = stream.output(
        "pipe:1",
        format="f32le",
        acodec="pcm_f32le",
        ac=1,
        ar=SAMPLE_RATE,
        vn=None,
        map="0:a:0",
        t=limits.max_seconds + 1,
    ).global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "info")
    args = out.compile(cmd=ffmpeg_binary())
    if stdin is not None:
        args.remove("-nostdin")
    returncode, stdout, stderr = _communicate(args, stdin, limits.timeout_s, name)
    if returncode != 0:
        raise _classify_ffmpeg_error(stderr.decode("utf-8", "replace"), name)
    samples = np.frombuffer(stdout, dtype=np.float32)
    if samples.size == 0:
        raise EmptyAudioError(name, reason="no_samples")
    return samples


def _communicate(args: list[str], stdin: bytes | None, timeout_s: float, name: str) -> tuple[int, bytes, bytes]:
    """Run ffmpeg to the end: (exit status, stdout, stderr). Between polls the caller's stop check runs
    (`asr.progress.checkpoint`): a cancelled job kills ffmpeg within a poll instead of waiting for a long file.

    Threads feed stdin and drain stdout and stderr while this thread polls. Not `Popen.communicate(timeout=)`
    in a loop: once a call has timed out, CPython's retry no longer writes the rest of the input, so ffmpeg
    waited for it forever (seen under load, where the first poll often ends before the upload is written)."""
    deadline = time.monotonic() + timeout_s
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    pumps = [
        threading.Thread(target=_drain, args=(proc.stdout, stdout), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, stderr), daemon=True),
    ]
    if stdin is not None:
        pumps.append(threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True))
    for pump in pumps:
        pump.start()
    try:
        while True:
            checkpoint()
            try:
                proc.wait(timeout=min(_POLL_S, max(deadline - time.monotonic(), 0.01)))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise DecodeError(name, reason="timeout", limit_s=f"{timeout_s:.0f}") from None
    finally:
        if proc.poll() is None:  # stopped, timed out or failed: ffmpeg must not outlive the call
            proc.kill()
            proc.wait()
        for pump in pumps:
            pump.join()
    return proc.returncode, b"".join(stdout), b"".join(stderr)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
    except (BrokenPipeError, OSError):  # ffmpeg stopped reading: it exited or was killed; its status tells
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _drain(pipe: IO[bytes], into: list[bytes]) -> None:
    with pipe:
        into.append(pipe.read())


_NO_STREAM = re.compile(r"matches no streams|does not contain any stream|Output file .* does not contain", re.I)
_INPUT_FORMAT = re.compile(r"^Input #0, ([\w,]+), from", re.M)
_SEEK_NEEDED = re.compile(r"moov atom not found|partial file", re.I)
# What ffmpeg says of bytes that are no media at all. Its wording varies by version: 9.x "Invalid data found";
# Debian's 5.1 guesses mp3 from random bytes ("detected only with low score ..., misdetection possible!"),
# then fails with "Failed to read frame size".
_NOT_MEDIA = re.compile(
    r"Invalid data found|could not find codec|misdetection possible|Failed to read frame size", re.I
)


def _classify_ffmpeg_error(stderr: str, name: str) -> Exception:
    # ffmpeg's words name server paths and its own internals: they go to the log, the user gets the catalogue's.
    errors = [line for line in stderr.strip().splitlines() if not line.startswith(" ") and "Input #" not in line]
    last = errors[-1] if errors else "unknown error"
    logger.info("ffmpeg could not decode %s: %s", name, last)
    logger.debug("ffmpeg output for %s: %s", name, stderr.strip())
    if _NO_STREAM.search(stderr):
        container = _INPUT_FORMAT.search(stderr)
        if container and (container.group(1).endswith("_pipe") or container.group(1) in ("image2", "gif")):
            return NotAudioError(name, reason="image", detail=last)
        return NoAudioStreamError(name, detail=last)
    if _SEEK_NEEDED.search(stderr) or _NOT_MEDIA.search(stderr):
        return NotAudioError(name, detail=last)
    return NotAudioError(name, reason="undecodable", detail=last)


def _is_iso_media(data: bytes) -> bool:
    return len(data) > 12 and data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")


def _check_size(size: int, limits: AudioLimits, name: str) -> None:
    if size == 0:
        raise EmptyAudioError(name)
    if size > limits.max_bytes:
        raise FileTooLargeError.of(name, size, limits.max_bytes)


def _check_duration(audio: Audio, limits: AudioLimits) -> None:
    if audio.duration > limits.max_seconds:
        raise AudioTooLongError(audio.name, limit_s=f"{limits.max_seconds:.0f}")
    if audio.duration < limits.min_seconds:
        raise AudioTooShortError(
            audio.name, ms=f"{audio.duration * 1000:.0f}", min_ms=f"{limits.min_seconds * 1000:.0f}"
        )
