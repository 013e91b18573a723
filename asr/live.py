"""Live transcription of a growing recording, with a cost per chunk that does not grow with its length.

A `LiveSession` receives the microphone stream chunk by chunk. A streaming FSMN-VAD (its own small
instance, loaded once per process on first use) finds where speech segments start and end:

- a segment the VAD has closed is transcribed once, through `Engine.transcribe`, and its text is final;
- the open segment (speech still going on) is decoded again on each chunk for the partial text.

So each chunk costs one VAD step on the new audio plus at most one decode of the open segment, which
the VAD cuts at `max_segment_s`; audio before the open segment is dropped from the buffer. Nothing
here knows about Gradio.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE
from .engine import Engine
from .errors import InputError

logger = logging.getLogger(__name__)

#: VAD step in milliseconds: FunASR's streaming VAD examples use 200 ms chunks.
VAD_CHUNK_MS = 200
#: Audio kept before the current position while nobody speaks, so a segment start the VAD reports
#: late (it looks back up to a few hundred ms) is still in the buffer.
LOOKBACK_S = 2.0


@dataclass(frozen=True)
class LiveUpdate:
    """What to show after a chunk: the settled text and the tentative text of the open segment."""

    final_text: str
    partial_text: str

    @property
    def text(self) -> str:
        return self.final_text + self.partial_text


@dataclass
class LiveStats:
    """Work done by the last `feed()`, for tests and logs: seconds of audio sent to the model."""

    chunks: int = 0
    last_decoded_s: float = 0.0
    max_decoded_s: float = 0.0
    segments_closed: int = 0


class StreamingVad:
    """FunASR's streaming FSMN-VAD. One instance serves every session (each has its own cache).

    The model object keeps a little per-call state (`vad_opts.nn_eval_block_size`), so calls are
    serialised; a step on 200-500 ms of audio takes a few milliseconds.
    """

    def __init__(self, model: str, device: str = "cpu", max_segment_s: float = 15.0, ncpu: int = 0):
        from funasr import AutoModel

        # AutoModel sets torch's thread count (4 unless told): keep the engine's setting.
        self._model = AutoModel(model=model, device=device, disable_update=True, disable_pbar=True,
                                disable_log=True, ncpu=ncpu or os.cpu_count() or 1)
        # Cut long monologues so the open segment, re-decoded on every chunk, stays short.
        self._model.model.vad_opts.max_single_segment_time = int(max_segment_s * 1000)
        self._lock = threading.Lock()
        self.max_segment_s = max_segment_s

    def step(self, samples: np.ndarray, cache: dict[str, Any], *, is_final: bool = False) -> list[list[int]]:
        """Feed 16 kHz samples; returns FunASR's streaming events in ms from the stream start:
        `[start, -1]` speech began, `[-1, end]` it ended, `[start, end]` a whole segment."""
        with self._lock:
            results = self._model.generate(input=samples, cache=cache, is_final=is_final, chunk_size=VAD_CHUNK_MS,
                                           disable_pbar=True)
        return [list(map(int, seg)) for seg in (results[0].get("value") or [])] if results else []


_vads: dict[tuple[str, str], StreamingVad] = {}
_vads_lock = threading.Lock()


def get_streaming_vad(engine: Engine, max_segment_s: float = 15.0) -> StreamingVad:
    """The process's streaming VAD for the engine's VAD model, loaded on first use."""
    spec = engine.spec or engine.resolve_spec()
    model = spec.vad or engine.settings.vad_model
    key = (model, spec.device)
    with _vads_lock:
        if key not in _vads:
            logger.info("loading the streaming VAD for live transcription from %s", model)
            _vads[key] = StreamingVad(model, spec.device, max_segment_s, engine.settings.ncpu)
        return _vads[key]


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Float32 mono at 16 kHz from a browser chunk (int16 or float, mono or (frames, channels)).

    Linear interpolation per chunk: crude next to ffmpeg, but free of a process per chunk, and
    the model's 80-band filterbank does not see the difference for speech.
    """
    data = np.asarray(samples)
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / (float(np.iinfo(data.dtype).max) + 1.0)
    data = data.astype(np.float32, copy=False)
    if data.ndim == 2:
        data = data.mean(axis=1, dtype=np.float32)
    if sample_rate != SAMPLE_RATE and data.size:
        count = int(round(data.size * SAMPLE_RATE / sample_rate))
        positions = np.arange(count, dtype=np.float64) * (sample_rate / SAMPLE_RATE)
        data = np.interp(positions, np.arange(data.size), data).astype(np.float32)
    return data


class LiveSession:
    """One recording. Call `feed()` per chunk, `finish()` when the recording stops. Not thread-safe:
    one session belongs to one browser stream, whose chunks arrive one after another."""

    def __init__(self, engine: Engine, vad: StreamingVad | None = None, *, hotwords: str | None = None,
                 min_partial_s: float = 0.3):
        self.engine = engine
        self.vad = vad or get_streaming_vad(engine)
        self.hotwords = hotwords
        self.min_partial_s = min_partial_s
        self.stats = LiveStats()
        self._cache: dict[str, Any] = {}
        self._finals: list[str] = []
        self._partial = ""
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # absolute sample index of _buffer[0]
        self._open_start: int | None = None  # absolute sample index where the open segment began

    @property
    def received_s(self) -> float:
        return (self._buffer_start + self._buffer.size) / SAMPLE_RATE

    def feed(self, samples: np.ndarray, sample_rate: int) -> LiveUpdate:
        chunk = to_mono_16k(samples, sample_rate)
        self._buffer = np.concatenate([self._buffer, chunk])
        decoded = 0.0
        for start_ms, end_ms in self.vad.step(chunk, self._cache) if chunk.size else []:
            decoded += self._on_vad_event(start_ms, end_ms)
        self._partial = ""
        if self._open_start is not None:
            tail = self._slice(self._open_start, None)
            if tail.size >= self.min_partial_s * SAMPLE_RATE:
                self._partial = self._transcribe(tail, final=False)
                decoded += tail.size / SAMPLE_RATE
        self._trim()
        self._record(decoded)
        return LiveUpdate("".join(self._finals), self._partial)

    def finish(self) -> LiveUpdate:
        """Close the open segment (the recording stopped mid-speech) and return the whole text."""
        decoded = 0.0
        if self._open_start is not None:
            tail = self._slice(self._open_start, None)
            decoded = tail.size / SAMPLE_RATE
            self._add_final(tail)
            self._open_start = None
        self._partial = ""
        self._cache = {}
        self._record(decoded)
        return LiveUpdate("".join(self._finals), "")

    # ------------------------------------------------------------------ internals
    def _on_vad_event(self, start_ms: int, end_ms: int) -> float:
        """Apply one VAD event; returns the seconds of audio it sent to the model."""
        if start_ms >= 0:
            self._open_start = start_ms * SAMPLE_RATE // 1000
        if end_ms < 0 or self._open_start is None:
            return 0.0
        segment = self._slice(self._open_start, end_ms * SAMPLE_RATE // 1000)
        self._open_start = None
        self._add_final(segment)
        return segment.size / SAMPLE_RATE

    def _add_final(self, segment: np.ndarray) -> None:
        text = self._transcribe(segment)
        if text:
            self._finals.append(text)
        self.stats.segments_closed += 1

    def _transcribe(self, samples: np.ndarray, *, final: bool = True) -> str:
        # A partial is a draft of a segment that will be transcribed again when it closes: it is not a request.
        try:
            return self.engine.transcribe(samples, sample_rate=SAMPLE_RATE, hotwords=self.hotwords,
                                          name="live", record=final).text
        except InputError as exc:  # a blip shorter than the minimum length: nothing to say
            logger.debug("live segment skipped: %s", exc)
            return ""

    def _slice(self, start: int, end: int | None) -> np.ndarray:
        begin = max(start - self._buffer_start, 0)
        stop = None if end is None else max(end - self._buffer_start, begin)
        return self._buffer[begin:stop]

    def _trim(self) -> None:
        # Keep only what a later segment can still need: the open segment, else a short look-back.
        total = self._buffer_start + self._buffer.size
        keep_from = self._open_start if self._open_start is not None else total - int(LOOKBACK_S * SAMPLE_RATE)
        drop = min(max(keep_from - self._buffer_start, 0), self._buffer.size)
        if drop:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop

    def _record(self, decoded: float) -> None:
        self.stats.chunks += 1
        self.stats.last_decoded_s = decoded
        self.stats.max_decoded_s = max(self.stats.max_decoded_s, decoded)
