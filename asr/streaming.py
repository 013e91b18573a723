"""Real-time recognition of one audio stream: FunASR's online and 2pass modes, and the web UI's live tab,
without any protocol or UI.

- **online**: the streaming Paraformer (paraformer-zh-streaming) decodes each 600 ms chunk with its
  encoder and decoder caches, so a chunk costs the same at minute 10 as at second 1. Its text per
  chunk is an increment: the partial text of the utterance is the concatenation.
- **2pass**: the same partials, plus a streaming FSMN-VAD that cuts sentences; each closed segment
  goes through `Engine.transcribe` (SeACo with hotwords, punctuation, sentence times, confidence), so
  its final text is what a file upload of that segment gives. The streaming model's cache is reset at
  every segment end, as FunASR's runtime does. A closed sentence is urgent in the engine (file jobs give
  way to it at their next segment); with `defer_finals` the caller transcribes it with `final()` on a
  thread of its own (the WebSocket endpoint does), so the partials after it never wait for it.
- **2pass with re-decoded drafts** (the web UI's live tab, `partials="redecode"`): instead of the
  streaming model, the open segment is decoded again by the engine on each feed for a tentative text
  (not counted as a request); no second model is needed.

One `StreamSession` serves one stream, utterance after utterance (`finish()` ends one). Sessions are
not thread-safe (one stream's chunks arrive in order; `final()` may run beside them); the models they share
are: the streaming Paraformer's copies and the VAD take one call at a time each, the engine owns its own lock.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from .audio import SAMPLE_RATE
from .device import planned_device
from .engine import Engine, Transcription
from .errors import InputError, ModelLoadError

logger = logging.getLogger(__name__)

#: VAD step in milliseconds: FunASR's streaming VAD examples use 200 ms chunks.
VAD_CHUNK_MS = 200


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
    model = spec.vad or engine.config.vad_model
    key = (model, spec.device)
    with _vads_lock:
        if key not in _vads:
            logger.info("loading the streaming VAD from %s", model)
            _vads[key] = StreamingVad(model, spec.device, max_segment_s, engine.config.ncpu)
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


StreamMode = Literal["online", "2pass"]
#: Samples per streaming-model frame unit: chunk_size[1] = 10 means 10 x 60 ms = 600 ms.
SAMPLES_PER_CHUNK_UNIT = 960


class OnlineModel:
    """The streaming Paraformer, loaded once per process as `workers` copies that decode side by side.

    A 600 ms chunk is small work (20 frames): a second intra-op thread buys it little (on 2 cores, one chunk
    took 0.068 s with two threads against 0.080 s with one, for 1.65x the CPU time). So on CPU each copy runs
    in its own worker thread with one intra-op thread, and concurrent streams' chunks run in parallel, one per
    core, instead of queueing for one model that uses the cores badly. A copy takes one call at a time:
    FunASR's `AutoModel.generate` merges each call's options into the model's shared kwargs.
    """

    def __init__(self, source: str, device: str = "cpu", ncpu: int = 0, quantize: bool = False, workers: int = 1):
        self.source = source
        started = time.perf_counter()
        on_cpu = device.startswith("cpu")
        #: "int8" when the linear layers run quantized (ONLINE_QUANTIZE on CPU), else "fp32".
        self.precision = "int8" if quantize and on_cpu else "fp32"
        self.workers = max(1, workers)
        threads = 1 if on_cpu and self.workers > 1 else (ncpu or os.cpu_count() or 1)
        self._models = [self._load(source, device, threads, self.precision == "int8") for _ in range(self.workers)]
        #: The copies not decoding right now (as many as the worker threads, so a worker always finds one).
        self._copies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for model in self._models:
            self._copies.put(model)
        # Worker threads of their own, so the one-thread setting never reaches the threads that run the engine.
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="online-model",
                                            initializer=_set_torch_threads, initargs=(threads,))
        self.load_seconds = time.perf_counter() - started
        logger.info("streaming model loaded in %.1f s from %s (%s, %d worker(s) x %d thread(s))", self.load_seconds,
                    source, self.precision, self.workers, threads)

    @staticmethod
    def _load(source: str, device: str, threads: int, quantize: bool) -> Any:
        from funasr import AutoModel

        try:
            # dither 0: WavFrontendOnline adds training noise to the features unless the config says otherwise.
            model = AutoModel(model=source, device=device, disable_update=True, disable_pbar=True, disable_log=True,
                              ncpu=threads, frontend_conf={"dither": 0.0})
        except Exception as exc:
            raise ModelLoadError(f"could not load the streaming model from {source}: set ONLINE_MODEL_DIR to a "
                                 f"local paraformer-zh-streaming folder ({type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})") from exc
        kind = type(model.model).__name__
        if kind != "ParaformerStreaming":
            raise ModelLoadError(f"'{source}' is a {kind}, not a streaming Paraformer (ONLINE_MODEL_DIR)")
        if quantize:
            import torch

            # A chunk's cost is the linear layers' weights, which int8 halves (docs/benchmarks.md: Real-time
            # streams). In place: no second copy of the weights.
            with warnings.catch_warnings():  # torch 2.13 says its quantized tensors will move to torchao one day
                warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
                torch.ao.quantization.quantize_dynamic(model.model, {torch.nn.Linear}, dtype=torch.qint8,
                                                       inplace=True)
        return model

    def step(self, samples: np.ndarray, cache: dict[str, Any], *, is_final: bool, chunk_size: tuple[int, int, int],
             encoder_look_back: int, decoder_look_back: int) -> str:
        """Decode the next samples of a stream (its state lives in `cache`, so any copy can take any step);
        returns the new text."""
        return self._executor.submit(self._step, samples, cache, is_final, list(chunk_size), encoder_look_back,
                                     decoder_look_back).result()

    def _step(self, samples: np.ndarray, cache: dict[str, Any], is_final: bool, chunk_size: list[int],
              encoder_look_back: int, decoder_look_back: int) -> str:
        model = self._copies.get()
        try:
            results = model.generate(input=samples, cache=cache, is_final=is_final, chunk_size=chunk_size,
                                     encoder_chunk_look_back=encoder_look_back,
                                     decoder_chunk_look_back=decoder_look_back, disable_pbar=True)
        finally:
            self._copies.put(model)
        return str(results[0].get("text", "")) if results else ""

    def modules(self) -> list[Any]:
        """Each copy's PyTorch model (for inspection)."""
        return [model.model for model in self._models]


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


_online_models: dict[tuple[str, str], OnlineModel] = {}
_online_lock = threading.Lock()
_online_error: str | None = None


def online_workers(setting: int, device: str, ncpu: int) -> int:
    """ONLINE_WORKERS, or when 0: one per core on CPU (NCPU, else the machine's cores), one on a GPU."""
    if setting:
        return setting
    return (ncpu or os.cpu_count() or 1) if device.startswith("cpu") else 1


def online_model_source(engine: Engine) -> str:
    """ONLINE_MODEL_DIR when set (checked to be a model folder), else the ModelScope id ONLINE_MODEL."""
    s = engine.config
    if s.online_model_dir is None:
        return s.online_model
    if not ((s.online_model_dir / "config.yaml").exists() and (s.online_model_dir / "model.pt").exists()):
        raise ModelLoadError(f"ONLINE_MODEL_DIR={s.online_model_dir} is not a FunASR model folder (config.yaml "
                             f"and model.pt are needed)")
    return str(s.online_model_dir)


def get_online_model(engine: Engine) -> OnlineModel:
    """The process's streaming Paraformer, loaded once (at startup by `preload`, else by the first stream)."""
    source = online_model_source(engine)
    device = engine.spec.device if engine.spec else planned_device(engine.config.device)
    key = (source, device)
    global _online_error
    with _online_lock:
        if key not in _online_models:
            try:
                s = engine.config
                _online_models[key] = OnlineModel(source, device, s.ncpu, s.online_quantize,
                                                  online_workers(s.online_workers, device, s.ncpu))
            except ModelLoadError as exc:
                _online_error = str(exc)
                raise
            _online_error = None
        return _online_models[key]


def online_model_state() -> str:
    """"ready (int8)" or "ready (fp32)" once a streaming model is loaded, "error: ..." after a failed load, else
    "not_loaded"."""
    if _online_models:
        return f"ready ({next(iter(_online_models.values())).precision})"
    return f"error: {_online_error}" if _online_error else "not_loaded"


def preload(engine: Engine) -> None:
    """Load the streaming model and the VAD now (at startup) rather than inside the first stream: loading
    a large model holds the interpreter long enough to stall the server's event loop. Errors are logged;
    online and 2pass streams then report them."""
    try:
        get_online_model(engine)
        get_streaming_vad(engine)
    except ModelLoadError as exc:
        logger.error("streaming model not available (online and 2pass streams will be refused): %s", exc)


@dataclass(frozen=True)
class StreamConfig:
    """How one utterance is recognised (FunASR's first message, parsed)."""

    mode: StreamMode = "2pass"
    #: Streaming model look-ahead configuration in 60 ms units: (history, chunk, look-ahead).
    chunk_size: tuple[int, int, int] = (5, 10, 5)
    encoder_look_back: int = 4
    decoder_look_back: int = 1
    #: Hotwords for the final (engine) pass: None = the engine's default list.
    hotwords: str | list[str] | None = None
    #: Where 2pass partials come from: the streaming model ("online"), or the engine re-decoding the open
    #: segment on each feed ("redecode": a `draft` with the segment's whole tentative text).
    partials: Literal["online", "redecode"] = "online"
    #: redecode: the open segment is decoded once it is this long.
    min_partial_s: float = 0.3

    @property
    def chunk_samples(self) -> int:
        return self.chunk_size[1] * SAMPLES_PER_CHUNK_UNIT


@dataclass(frozen=True)
class ClosedSegment:
    """A sentence the VAD has closed, not yet transcribed (a session with `defer_finals`)."""

    samples: np.ndarray
    hotwords: str | list[str] | None


@dataclass(frozen=True)
class StreamResult:
    """One answer: an online `partial` (new text since the last partial), a `draft` (the open segment's
    whole tentative text, redecode only), a `final` segment, or, with `defer_finals`, a `closed` segment whose
    final `StreamSession.final()` gives.

    `start`/`end` are seconds from the start of the utterance: the audio a partial covers, or the
    segment. `is_last` marks the result that ends the utterance (after `finish()`).
    """

    kind: Literal["partial", "draft", "final", "closed"]
    text: str
    start: float
    end: float
    transcription: Transcription | None = None
    is_last: bool = False
    closed: ClosedSegment | None = None


@dataclass
class StreamStats:
    chunks: int = 0
    partial_steps: int = 0
    segments_closed: int = 0
    audio_seconds: float = 0.0
    #: Most samples held in memory at once (the open segment plus a short look-back).
    max_buffered: int = 0
    #: Seconds of audio the last feed sent to the engine (closed segments and the draft), and the most.
    last_decoded_s: float = 0.0
    max_decoded_s: float = 0.0


@dataclass
class _Utterance:
    """Per-utterance state, dropped whole by `finish()`."""

    online_cache: dict[str, Any] = field(default_factory=dict)
    vad_cache: dict[str, Any] = field(default_factory=dict)
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    pending_start: int = 0  # sample index of pending[0] since the utterance began
    online_dirty: bool = False  # the streaming model has audio it has not finalised
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    buffer_start: int = 0
    vad_pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    open_start: int | None = None  # sample index where the open VAD segment began
    received: int = 0


#: Audio kept before the current position while nobody speaks, so a segment start the VAD reports
#: late (it looks back up to a few hundred ms) is still in the buffer.
LOOKBACK_S = 2.0


class StreamSession:
    """One stream. `feed()` 16 kHz float32 mono samples as they arrive, `finish()` at the end of an
    utterance (the session then starts the next one), `close()` when the stream goes away."""

    def __init__(self, engine: Engine, config: StreamConfig, *, online: OnlineModel | None = None,
                 vad: StreamingVad | None = None, defer_finals: bool = False):
        self.engine = engine
        self.config = config
        #: Closed sentences come back as `closed` results, for the caller to pass to `final()` on a thread of
        #: its own: the next partials then never wait for a sentence's turn at the engine.
        self.defer_finals = defer_finals
        self.online = online
        self.vad = vad
        self.stats = StreamStats()
        self._u = _Utterance()
        self._decoded = 0
        self.reconfigure(config)

    def reconfigure(self, config: StreamConfig) -> None:
        """Settings for the next utterance (only between utterances: the caches depend on them). Loads
        the streaming model and the VAD on first need."""
        if config.mode == "online" or config.partials == "online":
            self.online = self.online or get_online_model(self.engine)
        if config.mode == "2pass":
            self.vad = self.vad or get_streaming_vad(self.engine)
        self.config = config

    @property
    def utterance_seconds(self) -> float:
        return self._u.received / SAMPLE_RATE

    @property
    def buffered_s(self) -> float:
        """Seconds of audio held now (the open segment, a short look-back, a partial chunk)."""
        return (self._u.buffer.size + self._u.pending.size) / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[StreamResult]:
        u = self._u
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not chunk.size:
            return []
        self.stats.chunks += 1
        self.stats.audio_seconds += chunk.size / SAMPLE_RATE
        self._decoded = 0
        u.received += chunk.size
        results = []
        if self._streaming_partials:
            u.pending = np.concatenate([u.pending, chunk])
            results += self._online_steps()
        if self.config.mode == "2pass":
            u.buffer = np.concatenate([u.buffer, chunk])
            u.vad_pending = np.concatenate([u.vad_pending, chunk])
            # The VAD steps on 200 ms at least: FunASR's clients send 60 ms frames, and a VAD call costs
            # mostly its fixed overhead, under a lock every stream shares.
            if u.vad_pending.size >= VAD_CHUNK_MS * SAMPLE_RATE // 1000:
                results += self._vad_step()
            if self.config.partials == "redecode":
                results += self._draft()
            self._trim()
        self.stats.max_buffered = max(self.stats.max_buffered, u.buffer.size + u.pending.size)
        self._record_decoded()
        return results

    def finish(self) -> list[StreamResult]:
        """End the utterance: flush the streaming model, close the open segment. The last result has
        `is_last` set (an empty one when there is nothing left to say)."""
        u = self._u
        results: list[StreamResult] = []
        end = u.received / SAMPLE_RATE
        self._decoded = 0
        if self.config.mode == "online":
            text = self._online_final()
            results.append(StreamResult("partial", text, u.pending_start / SAMPLE_RATE, end, is_last=True))
        else:
            if u.vad_pending.size:
                results += self._vad_step()
            if self._streaming_partials:
                self._online_final()  # the final pass gives this text; the streaming model only resets
            if u.open_start is not None:
                results += self._close_segment(u.open_start, u.received)
        if self.config.mode == "2pass":
            if results and results[-1].kind in ("final", "closed"):
                results[-1] = replace(results[-1], is_last=True)
            else:
                results.append(StreamResult("final", "", end, end, is_last=True))
        self._record_decoded()
        self._u = _Utterance()
        return results

    def close(self) -> None:
        """Drop everything the stream holds (also fine mid-utterance: nothing is transcribed)."""
        self._u = _Utterance()

    @property
    def _streaming_partials(self) -> bool:
        return self.config.mode == "online" or self.config.partials == "online"

    def _record_decoded(self) -> None:
        self.stats.last_decoded_s = self._decoded / SAMPLE_RATE
        self.stats.max_decoded_s = max(self.stats.max_decoded_s, self.stats.last_decoded_s)

    # ------------------------------------------------------------------ online pass
    def _online_steps(self) -> list[StreamResult]:
        u, stride = self._u, self.config.chunk_samples
        results = []
        while u.pending.size >= stride:
            piece, u.pending = u.pending[:stride], u.pending[stride:]
            text = self._step(piece, is_final=False)
            start = u.pending_start / SAMPLE_RATE
            u.pending_start += stride
            if text:
                results.append(StreamResult("partial", text, start, u.pending_start / SAMPLE_RATE))
        return results

    def _online_final(self) -> str:
        """Run the streaming model's last step on what is pending, then reset its cache."""
        u = self._u
        text = ""
        if u.online_dirty or u.pending.size:
            text = self._step(u.pending, is_final=True)
        u.pending_start += u.pending.size
        u.pending = np.zeros(0, dtype=np.float32)
        u.online_cache = {}
        u.online_dirty = False
        return text

    def _step(self, samples: np.ndarray, *, is_final: bool) -> str:
        c = self.config
        self.stats.partial_steps += 1
        self._u.online_dirty = not is_final
        return self.online.step(samples, self._u.online_cache, is_final=is_final, chunk_size=c.chunk_size,
                                encoder_look_back=c.encoder_look_back, decoder_look_back=c.decoder_look_back)

    # ------------------------------------------------------------------ final pass (2pass)
    def _vad_step(self) -> list[StreamResult]:
        u = self._u
        samples, u.vad_pending = u.vad_pending, np.zeros(0, dtype=np.float32)
        results = []
        for start_ms, end_ms in self.vad.step(samples, u.vad_cache):
            results += self._on_vad_event(start_ms, end_ms)
        return results

    def _on_vad_event(self, start_ms: int, end_ms: int) -> list[StreamResult]:
        u = self._u
        if start_ms >= 0:
            u.open_start = start_ms * SAMPLE_RATE // 1000
        if end_ms < 0 or u.open_start is None:
            return []
        # The segment ended: the streaming model starts afresh for the next sentence, as in FunASR's runtime.
        if self._streaming_partials:
            self._online_final()
        start, u.open_start = u.open_start, None
        return self._close_segment(start, end_ms * SAMPLE_RATE // 1000)

    def _close_segment(self, start: int, end: int) -> list[StreamResult]:
        u = self._u
        begin = max(start - u.buffer_start, 0)
        segment = u.buffer[begin:max(end - u.buffer_start, begin)]
        self.stats.segments_closed += 1
        if self.defer_finals:
            return [StreamResult("closed", "", start / SAMPLE_RATE, end / SAMPLE_RATE,
                                 closed=ClosedSegment(segment.copy(), self.config.hotwords))]
        result = self._transcribe(segment, self.config.hotwords, urgent=True)
        if result is None:
            return []
        return [StreamResult("final", result.text, start / SAMPLE_RATE, end / SAMPLE_RATE, result)]

    def final(self, closed: StreamResult) -> StreamResult:
        """The `final` result of a `closed` one (thread-safe: it only calls the engine, ahead of file jobs)."""
        assert closed.closed is not None
        result = self._transcribe(closed.closed.samples, closed.closed.hotwords, urgent=True)
        return replace(closed, kind="final", text=result.text if result else "", transcription=result, closed=None)

    def _draft(self) -> list[StreamResult]:
        u = self._u
        if u.open_start is None:
            return []
        tail = u.buffer[max(u.open_start - u.buffer_start, 0):]
        if tail.size < self.config.min_partial_s * SAMPLE_RATE:
            return []
        # A draft of a segment that will be transcribed again when it closes: not a request of its own.
        result = self._transcribe(tail, self.config.hotwords, record=False)
        if result is None:
            return []
        return [StreamResult("draft", result.text, u.open_start / SAMPLE_RATE, u.received / SAMPLE_RATE, result)]

    def _transcribe(self, samples: np.ndarray, hotwords: str | list[str] | None, *, record: bool = True,
                    urgent: bool = False) -> Transcription | None:
        # A sentence someone is waiting to read is urgent: file jobs give way to it (asr.batching).
        self._decoded += samples.size
        try:
            return self.engine.transcribe(samples, sample_rate=SAMPLE_RATE, hotwords=hotwords, name="stream",
                                          record=record, urgent=urgent)
        except InputError as exc:  # a blip shorter than the minimum length: nothing to say
            logger.debug("stream segment skipped: %s", exc)
            return None

    def _trim(self) -> None:
        # Keep only what a later segment can still need: the open segment, else a short look-back.
        u = self._u
        total = u.buffer_start + u.buffer.size
        keep_from = u.open_start if u.open_start is not None else total - int(LOOKBACK_S * SAMPLE_RATE)
        drop = min(max(keep_from - u.buffer_start, 0), u.buffer.size)
        if drop:
            u.buffer = u.buffer[drop:]
            u.buffer_start += drop
