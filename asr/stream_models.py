"""The models a live stream shares, loaded once per process: the streaming FSMN-VAD and the streaming Paraformer
(online partials), with the conversion of browser chunks to 16 kHz mono. Sessions (`asr.streaming`) hold only
their caches; these objects take one call at a time per copy, so any number of sessions can share them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .audio import SAMPLE_RATE
from .device import planned_device
from .engine import Engine
from .errors import ModelLoadError
from .patches import patch_streaming_model

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
        self._model = AutoModel(
            model=model,
            device=device,
            disable_update=True,
            disable_pbar=True,
            disable_log=True,
            ncpu=ncpu or os.cpu_count() or 1,
        )
        # Cut long monologues so the open segment, re-decoded on every chunk, stays short.
        self._model.model.vad_opts.max_single_segment_time = int(max_segment_s * 1000)
        self._lock = threading.Lock()
        self.max_segment_s = max_segment_s

    def step(self, samples: np.ndarray, cache: dict[str, Any], *, is_final: bool = False) -> list[list[int]]:
        """Feed 16 kHz samples; returns FunASR's streaming events in ms from the stream start:
        `[start, -1]` speech began, `[-1, end]` it ended, `[start, end]` a whole segment."""
        with self._lock:
            results = self._model.generate(
                input=samples, cache=cache, is_final=is_final, chunk_size=VAD_CHUNK_MS, disable_pbar=True
            )
        return [list(map(int, seg)) for seg in (results[0].get("value") or [])] if results else []


_vads: dict[tuple[str, str], StreamingVad] = {}
_vads_lock = threading.Lock()


def get_streaming_vad(engine: Engine, max_segment_s: float = 15.0) -> StreamingVad:
    """The process's streaming VAD for the engine's VAD model, loaded on first use."""
    spec = engine.spec or engine.resolve_spec()
    # With ENABLE_VAD=false the engine has no VAD, but 2pass still needs one: VAD_MODEL_DIR, else VAD_MODEL.
    model = spec.vad or str(engine.config.vad_model_dir or engine.config.vad_model)
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


#: Samples per streaming-model frame unit: chunk_size[1] = 10 means 10 x 60 ms = 600 ms.
SAMPLES_PER_CHUNK_UNIT = 960


class StreamingModel(Protocol):
    """What a stream needs of the streaming Paraformer, on either backend: `OnlineModel` (PyTorch) or
    `asr.onnx.online.OnnxOnlineModel` (ONNX Runtime). A stream's state lives in its `cache` dict, so every call
    may run on any copy or batch."""

    backend: str  # "torch" | "onnx"
    precision: str  # "fp32" | "int8"
    load_seconds: float

    def step(
        self,
        samples: np.ndarray,
        cache: dict[str, Any],
        *,
        is_final: bool,
        chunk_size: tuple[int, int, int],
        encoder_look_back: int,
        decoder_look_back: int,
    ) -> str: ...

    def modules(self) -> list[Any]:
        """The PyTorch modules it runs (none on ONNX Runtime), for inspection."""
        ...


class OnlineModel:
    """The streaming Paraformer in PyTorch, loaded once per process as `workers` copies that decode side by side.

    A 600 ms chunk is small work (20 frames): a second intra-op thread buys it little (on 2 cores, one chunk
    took 0.068 s with two threads against 0.080 s with one, for 1.65x the CPU time). So on CPU each copy runs
    in its own worker thread with one intra-op thread, and concurrent streams' chunks run in parallel, one per
    core, instead of queueing for one model that uses the cores badly. A copy takes one call at a time:
    FunASR's `AutoModel.generate` merges each call's options into the model's shared kwargs.
    """

    backend = "torch"

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
        self._executor = ThreadPoolExecutor(
            self.workers, thread_name_prefix="online-model", initializer=_set_torch_threads, initargs=(threads,)
        )
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "streaming model loaded in %.1f s from %s (%s, %d worker(s) x %d thread(s))",
            self.load_seconds,
            source,
            self.precision,
            self.workers,
            threads,
        )

    @staticmethod
    def _load(source: str, device: str, threads: int, quantize: bool) -> Any:
        from funasr import AutoModel

        try:
            # dither 0: WavFrontendOnline adds training noise to the features unless the config says otherwise.
            model = AutoModel(
                model=source,
                device=device,
                disable_update=True,
                disable_pbar=True,
                disable_log=True,
                ncpu=threads,
                frontend_conf={"dither": 0.0},
            )
        except Exception as exc:
            raise ModelLoadError(
                f"could not load the streaming model from {source}: set ONLINE_MODEL_DIR to a "
                f"local paraformer-zh-streaming folder ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})"
            ) from exc
        kind = type(model.model).__name__
        if kind != "ParaformerStreaming":
            raise ModelLoadError(f"'{source}' is a {kind}, not a streaming Paraformer (ONLINE_MODEL_DIR)")
        patch_streaming_model(model.model)  # a chunk costs the same at hour 2 as at second 1 (asr/patches.py)
        if quantize:
            import torch

            # A chunk's cost is the linear layers' weights, which int8 halves (docs/benchmarks.md: Real-time
            # streams). In place: no second copy of the weights.
            with warnings.catch_warnings():  # torch 2.13 says its quantized tensors will move to torchao one day
                warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
                torch.ao.quantization.quantize_dynamic(model.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        return model

    def step(
        self,
        samples: np.ndarray,
        cache: dict[str, Any],
        *,
        is_final: bool,
        chunk_size: tuple[int, int, int],
        encoder_look_back: int,
        decoder_look_back: int,
    ) -> str:
        """Decode the next samples of a stream (its state lives in `cache`, so any copy can take any step);
        returns the new text."""
        return self._executor.submit(
            self._step, samples, cache, is_final, list(chunk_size), encoder_look_back, decoder_look_back
        ).result()

    def _step(
        self,
        samples: np.ndarray,
        cache: dict[str, Any],
        is_final: bool,
        chunk_size: list[int],
        encoder_look_back: int,
        decoder_look_back: int,
    ) -> str:
        model = self._copies.get()
        try:
            results = model.generate(
                input=samples,
                cache=cache,
                is_final=is_final,
                chunk_size=chunk_size,
                encoder_chunk_look_back=encoder_look_back,
                decoder_chunk_look_back=decoder_look_back,
                disable_pbar=True,
            )
        finally:
            self._copies.put(model)
        return str(results[0].get("text", "")) if results else ""

    def modules(self) -> list[Any]:
        """Each copy's PyTorch model (for inspection)."""
        return [model.model for model in self._models]


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


_online_models: dict[tuple[str, str], StreamingModel] = {}
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
        raise ModelLoadError(
            f"ONLINE_MODEL_DIR={s.online_model_dir} is not a FunASR model folder (config.yaml and model.pt are needed)"
        )
    return str(s.online_model_dir)


ONLINE_BACKENDS = ("auto", "torch", "onnx")


def resolve_online_backend(setting: str, device: str, source: str, quantize: bool) -> tuple[str, Any]:
    """("torch" | "onnx", the ONNX files to load) for ONLINE_BACKEND, as ENGINE_BACKEND decides for the offline
    model: `auto` takes ONNX Runtime on CPU when the model folder holds the export (int8 with ONLINE_QUANTIZE).

    Raises ModelLoadError when `onnx` is asked for and the files are missing, saying how to make them.
    """
    if setting not in ONLINE_BACKENDS:
        raise ModelLoadError(f"ONLINE_BACKEND={setting} is not one of {', '.join(ONLINE_BACKENDS)}")
    if setting == "torch":
        return "torch", None
    from .onnx.online import find_online_onnx

    folder = Path(source) if Path(source).is_dir() else None
    files = find_online_onnx(folder, quantize=quantize)
    if setting == "onnx":
        if files is None:
            raise ModelLoadError(
                f"ONLINE_BACKEND=onnx but the streaming model's {'int8 ' if quantize else ''}ONNX export is not in "
                f"{folder or 'a local folder (ONLINE_MODEL is a hub id: set ONLINE_MODEL_DIR)'}: run `python -m "
                f"asr.onnx.export --model-dir <ONLINE_MODEL_DIR>{' --quantize' if quantize else ''}`, or set "
                "ONLINE_BACKEND=auto"
            )
        return "onnx", files
    if device.startswith("cpu") and files is not None:
        return "onnx", files
    return "torch", None


def planned_online_backend(engine: Engine) -> str:
    """The backend the streaming model will load on ("torch" or "onnx"), from the settings and the files alone
    (nothing is loaded; a setting that cannot load says "torch", and the load reports the error)."""
    device = engine.spec.device if engine.spec else planned_device(engine.config.device)
    try:
        source = online_model_source(engine)
        return resolve_online_backend(engine.config.online_backend, device, source, engine.config.online_quantize)[0]
    except ModelLoadError:
        return "torch"


def get_online_model(engine: Engine) -> StreamingModel:
    """The process's streaming Paraformer (`OnlineModel`, or `asr.onnx.online.OnnxOnlineModel` when ONLINE_BACKEND
    picks ONNX Runtime), loaded once (at startup by `preload`, else by the first stream)."""
    source = online_model_source(engine)
    device = engine.spec.device if engine.spec else planned_device(engine.config.device)
    key = (source, device)
    global _online_error
    with _online_lock:
        if key not in _online_models:
            try:
                s = engine.config
                workers = online_workers(s.online_workers, device, s.ncpu)
                backend, files = resolve_online_backend(s.online_backend, device, source, s.online_quantize)
                if backend == "onnx":
                    from .onnx.online import OnnxOnlineModel

                    _online_models[key] = OnnxOnlineModel(source, files, s.ncpu, workers, s.online_max_batch)
                else:
                    _online_models[key] = OnlineModel(source, device, s.ncpu, s.online_quantize, workers)
            except ModelLoadError as exc:
                _online_error = str(exc)
                raise
            _online_error = None
        return _online_models[key]


def online_model_state() -> str:
    """ "ready (onnx, int8)", "ready (torch, fp32)"... once a streaming model is loaded, "error: ..." after a failed
    load, else "not_loaded"."""
    if _online_models:
        model = next(iter(_online_models.values()))
        return f"ready ({model.backend}, {model.precision})"
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
