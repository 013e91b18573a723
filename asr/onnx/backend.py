"""The engine's ONNX Runtime backend: the same pipeline as FunASR's `AutoModel`, with ONNX sessions inside.

FunASR's `AutoModel.generate()` is kept as it is (VAD segmentation, per-segment decoding, merging,
punctuation, sentence timestamps): only the neural networks underneath change.

- SeACo-Paraformer: `OnnxSeacoParaformer` replaces the PyTorch model. It reuses FunASR's frontend
  (WavFrontend), tokenizer, hotword list, timestamp and text post-processing, and runs the backbone and
  the hotword embedder exported by `python -m asr.onnx.export` (`model.onnx`, `model_eb.onnx`, or the
  `*_quant.onnx` int8 pair). It returns `token_probs` itself (the backbone's log-probabilities).
- FSMN-VAD: the PyTorch model keeps its state machine; its FSMN network runs `model.onnx` from its folder.
- CT-punctuation: the PyTorch model keeps its text splitting and caching; its network runs `model.onnx`
  from its folder when one was exported, else stays in PyTorch (FunASR's exporter needs two or more
  encoder blocks, so the one-block test model cannot be exported).

Why not the `funasr-onnx` package: it pins numpy<=1.26.4 and gradio's pandas 3 needs numpy>=2, and its
SeACo pipeline differs from FunASR's (hotword tokenisation, no VAD merge rules), so its text is not the
PyTorch text. ONNX Runtime is called directly instead.

Thread safety: ONNX Runtime sessions may be run from any thread; FunASR's Python state (caches, kwargs)
may not, which is why the engine still serialises model calls behind its lock.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..batching import PREDICTED_TOKENS
from ..errors import ModelLoadError
from . import onnx_runtime

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
ONNX_CLASS = "OnnxSeacoParaformer"


@dataclass(frozen=True)
class OnnxFiles:
    """The exported SeACo-Paraformer graphs one engine loads."""

    backbone: Path
    embedder: Path
    quantized: bool


@dataclass(frozen=True)
class OnnxOptions:
    files: OnnxFiles
    threads: int


def find_asr_onnx(folder: Path | None, *, quantize: bool) -> OnnxFiles | None:
    """The backbone + embedder pair in `folder` (int8 when `quantize`), or None when it is incomplete."""
    if folder is None or not Path(folder).is_dir():
        return None
    folder = Path(folder)
    if quantize:
        backbone = folder / "model_quant.onnx"
        # FunASR's exporter leaves the LSTM embedder unquantised anyway; accept either file.
        embedder = folder / "model_eb_quant.onnx"
        if not embedder.exists():
            embedder = folder / "model_eb.onnx"
    else:
        backbone, embedder = folder / "model.onnx", folder / "model_eb.onnx"
    if backbone.exists() and embedder.exists():
        return OnnxFiles(backbone, embedder, quantize)
    return None


def onnx_folder(asr_source: str, onnx_model_dir: Path | None) -> Path | None:
    """Where the ASR model's ONNX files are looked for: ONNX_MODEL_DIR, else the local model folder."""
    if onnx_model_dir is not None and str(onnx_model_dir):
        return Path(onnx_model_dir)
    path = Path(asr_source)
    return path if path.is_dir() else None


def resolve_backend(
    backend: str, device: str, asr_source: str, onnx_model_dir: Path | None, quantize: bool
) -> tuple[str, OnnxFiles | None]:
    """("torch" | "onnx", the ONNX files to load). `auto`: ONNX on CPU when the export is present.

    Raises ModelLoadError when `onnx` is asked for and the files are missing, saying how to make them.
    """
    if backend not in BACKENDS:
        raise ModelLoadError(f"ENGINE_BACKEND={backend} is not one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return "torch", None
    folder = onnx_folder(asr_source, onnx_model_dir)
    files = find_asr_onnx(folder, quantize=quantize)
    if backend == "onnx":
        if files is None:
            wanted = "model_quant.onnx" if quantize else "model.onnx and model_eb.onnx"
            where = folder or "ONNX_MODEL_DIR (the model is a hub id)"
            raise ModelLoadError(
                f"ENGINE_BACKEND=onnx but {wanted} not found in {where}: run `python -m asr.onnx.export --model-dir "
                f"<model folder>{' --quantize' if quantize else ''}` (docs/engine.md: ONNX backend), or set ENGINE_BACKEND=auto"  # noqa: E501
            )
        return "onnx", files
    if device.startswith("cpu") and files is not None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            logger.warning("ONNX files found in %s but onnxruntime is not installed: using PyTorch", folder)
            return "torch", None
        return "onnx", files
    return "torch", None


# ------------------------------------------------------------------------------------------ the ASR model
def _session(path: Path, threads: int) -> Any:
    ort = onnx_runtime()

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # ORT warns about unused initialisers of FunASR's graphs on every load
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _register_onnx_model() -> None:
    """Register `OnnxSeacoParaformer` with FunASR's model table so `AutoModel.build_model` can build it."""
    import torch
    from funasr.models.seaco_paraformer.model import SeacoParaformer
    from funasr.register import tables
    from funasr.utils import postprocess_utils
    from funasr.utils.load_utils import extract_fbank, load_audio_text_image_video
    from funasr.utils.timestamp_tools import ts_prediction_lfr6_standard

    if ONNX_CLASS in tables.model_classes:
        return

    class OnnxSeacoParaformer(torch.nn.Module):
        """`SeacoParaformer.inference` with the network in ONNX Runtime (greedy decoding, as PyTorch does)."""

        # FunASR's own hotword parsing (seg_dict, <s> entry): identical hotword ids on both backends.
        generate_hotwords_list = SeacoParaformer.generate_hotwords_list

        def __init__(self, **kwargs: Any):
            super().__init__()
            # AutoModel.inference reads the device of the first parameter after each call.
            self._device_marker = torch.nn.Parameter(torch.zeros(0), requires_grad=False)
            # Paraformer's defaults (config.yaml may set them; the published model does not).
            self.sos = 1 if kwargs.get("sos") is None else int(kwargs["sos"])
            self.eos = 2 if kwargs.get("eos") is None else int(kwargs["eos"])
            self.blank_id = 0 if kwargs.get("blank_id") is None else int(kwargs["blank_id"])
            self.backbone: Any = None
            self.embedder: Any = None
            self.options: OnnxOptions | None = None
            self._no_hotword_bias: np.ndarray | None = None
            self._embed_length: int | None = None

        def open_sessions(self, options: OnnxOptions) -> None:
            self.options = options
            self.backbone = _session(options.files.backbone, options.threads)
            self.embedder = _session(options.files.embedder, options.threads)
            outputs = [o.name for o in self.backbone.get_outputs()]
            # Only asr.onnx.export's graphs carry the unbiased decoder output; a stock FunASR export
            # falls back to biasing with <s> alone when a request has no hotwords (close, not exact).
            self.has_decoder_logits = "decoder_logits" in outputs
            if not self.has_decoder_logits:
                logger.warning(
                    "%s has no decoder_logits output (not exported by asr.onnx.export): requests without "
                    "hotwords may differ slightly from PyTorch",
                    options.files.backbone,
                )
            length = self.embedder.get_inputs()[0].shape[1]
            self._embed_length = length if isinstance(length, int) else None
            self._no_hotword_bias = self._bias_embed([[self.sos]])

        def _bias_embed(self, hotwords: list[list[int]]) -> np.ndarray:
            """[N, D]: the embedder's LSTM output at each hotword's last token (as PyTorch's pack/pad does)."""
            lengths = [max(len(h), 1) for h in hotwords]
            width = max(lengths)
            if self._embed_length is not None:  # a stock FunASR export has a fixed hotword length
                if width > self._embed_length:
                    raise ValueError(
                        f"a hotword has {width} tokens; this ONNX embedder takes at most "
                        f"{self._embed_length} (re-export with asr.onnx.export)"
                    )
                width = self._embed_length
            pad = np.zeros((len(hotwords), width), dtype=np.int32)
            for i, ids in enumerate(hotwords):
                pad[i, : len(ids)] = ids
            hidden = self.embedder.run(None, {"hotword": pad})[0]  # [length, N, D], batch second
            return np.stack([hidden[n - 1, i] for i, n in enumerate(lengths)]).astype(np.float32)

        def inference(
            self,
            data_in: Any,
            data_lengths: Any = None,
            key: list | None = None,
            tokenizer: Any = None,
            frontend: Any = None,
            **kwargs: Any,
        ) -> tuple:
            meta_data: dict[str, Any] = {}
            started = time.perf_counter()
            samples = load_audio_text_image_video(data_in, fs=frontend.fs, audio_fs=kwargs.get("fs", 16000))
            speech, speech_lengths = extract_fbank(
                samples, data_type=kwargs.get("data_type", "sound"), frontend=frontend
            )
            meta_data["extract_feat"] = f"{time.perf_counter() - started:0.3f}"
            meta_data["batch_data_time"] = speech_lengths.sum().item() * frontend.frame_shift * frontend.lfr_n / 1000

            hotwords = self.generate_hotwords_list(kwargs.get("hotword", None), tokenizer=tokenizer, frontend=frontend)
            bias = self._no_hotword_bias if hotwords is None else self._bias_embed(hotwords)
            feats = speech.numpy().astype(np.float32, copy=False)
            lengths = speech_lengths.numpy().astype(np.int32).reshape(-1)
            batch = feats.shape[0]
            outputs = self.backbone.run(
                None, {"speech": feats, "speech_lengths": lengths, "bias_embed": np.repeat(bias[None], batch, axis=0)}
            )
            logits, token_num, us_alphas, us_peaks = outputs[:4]
            if hotwords is None and self.has_decoder_logits:
                logits = outputs[4]  # PyTorch skips hotword biasing entirely without hotwords
            if int(token_num.max()) < 1:
                return ([],)  # as SeacoParaformer.inference: no token predicted

            dropped = {self.eos, self.sos, self.blank_id}
            results = []
            for i in range(batch):
                scores = logits[i, : int(token_num[i])]
                ids = scores.argmax(axis=-1)
                best = np.exp(scores.max(axis=-1))
                token_int = [int(t) for t in ids if int(t) not in dropped]
                token_probs = [float(p) for p, t in zip(best, ids, strict=False) if int(t) not in dropped]
                token = tokenizer.ids2tokens(token_int)
                frames = int(lengths[i]) * 3  # the predictor's timestamp head is upsampled 3x
                _, timestamp = ts_prediction_lfr6_standard(
                    torch.from_numpy(np.array(us_alphas[i][:frames])),
                    torch.from_numpy(np.array(us_peaks[i][:frames])),
                    copy.copy(token),
                    vad_offset=kwargs.get("begin_time", 0),
                )
                text, timestamp, _ = postprocess_utils.sentence_postprocess(token, timestamp)
                results.append(
                    {
                        "key": key[i],
                        "text": text,
                        "timestamp": timestamp,
                        "token_probs": token_probs,
                        PREDICTED_TOKENS: int(token_num[i]),
                    }
                )
            return results, meta_data

    tables.model_classes[ONNX_CLASS] = OnnxSeacoParaformer


# ------------------------------------------------------------------------------------------ VAD and punctuation
def _onnx_vad_encoder(path: Path, threads: int) -> Any:
    """A module that stands in for FSMN-VAD's network, with its streaming caches in FunASR's cache dict."""
    import torch

    session = _session(path, threads)
    cache_inputs = [i for i in session.get_inputs() if i.name.startswith("in_cache")]
    out_dim = session.get_outputs()[0].shape[-1]

    class OnnxFsmn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # The VAD model has no other parameters left, and AutoModel.inference reads their device.
            self._device_marker = torch.nn.Parameter(torch.zeros(0), requires_grad=False)

        def forward(self, feats: Any, cache: dict | None = None) -> Any:
            cache = {} if cache is None else cache
            if feats.shape[1] == 0:
                return torch.zeros(feats.shape[0], 0, out_dim)
            feed = {"speech": feats.numpy().astype(np.float32, copy=False)}
            for i, spec in enumerate(cache_inputs):
                # Same keys as FunASR's FSMN (cache_layer_<i>), zeros on the first chunk.
                state = cache.get(f"cache_layer_{i}")
                feed[spec.name] = np.zeros(spec.shape, dtype=np.float32) if state is None else state
            outputs = session.run(None, feed)
            for i in range(len(cache_inputs)):
                cache[f"cache_layer_{i}"] = outputs[i + 1]
            return torch.from_numpy(outputs[0])

    return OnnxFsmn()


def _onnx_punc_forward(path: Path, threads: int) -> Any:
    import torch

    session = _session(path, threads)
    names = {i.name for i in session.get_inputs()}

    def punc_forward(text: Any, text_lengths: Any, **kwargs: Any) -> tuple:
        feed = {"inputs": text.numpy().astype(np.int32), "text_lengths": text_lengths.numpy().astype(np.int32)}
        logits = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
        return torch.from_numpy(logits), None

    return punc_forward


# ------------------------------------------------------------------------------------------ AutoModel
def _automodel_class() -> type:
    from funasr import AutoModel
    from funasr.download.download_model_from_hub import download_model

    class OnnxAutoModel(AutoModel):
        """AutoModel whose ASR model is `OnnxSeacoParaformer`: generate() and its VAD/punc logic are FunASR's."""

        def __init__(self, *, onnx: OnnxOptions, **kwargs: Any):
            self._onnx = onnx
            self._asr_built = False
            super().__init__(**kwargs)

        def build_model(self, **kwargs: Any) -> tuple:  # shadows AutoModel's staticmethod for the ASR model only
            if self._asr_built:
                return AutoModel.build_model(**kwargs)
            self._asr_built = True
            if "model_conf" not in kwargs:
                kwargs = download_model(**kwargs)  # reads config.yaml/configuration.json (tokens, am.mvn, seg_dict)
            if kwargs["model"] != "SeacoParaformer":
                raise ModelLoadError(
                    f"'{kwargs.get('model_path')}' is a {kwargs['model']}, not a SeACo-Paraformer model"
                )
            kwargs["model"] = ONNX_CLASS
            kwargs["init_param"] = None  # no PyTorch weights: the network lives in the ONNX files
            model, kwargs = AutoModel.build_model(**kwargs)
            model.open_sessions(self._onnx)
            return model, kwargs

    return OnnxAutoModel


def build_onnx_automodel(
    *, asr: str, vad: str | None, punc: str | None, files: OnnxFiles, threads: int, **kwargs: Any
) -> Any:
    """An AutoModel-compatible object: `generate(input=samples, hotword=..., ...)` as FunASR's, on ONNX Runtime."""
    _register_onnx_model()
    options = OnnxOptions(files=files, threads=threads)
    args: dict[str, Any] = dict(model=asr, device="cpu", **kwargs)
    if vad:
        args["vad_model"] = vad
    if punc:
        args["punc_model"] = punc
    model = _automodel_class()(onnx=options, **args)
    model.onnx_parts = {"asr": str(files.backbone)}
    if model.vad_model is not None:
        vad_onnx = Path(model.vad_kwargs.get("model_path", vad or "")) / "model.onnx"
        if vad_onnx.exists():
            model.vad_model.encoder = _onnx_vad_encoder(vad_onnx, threads)
            model.onnx_parts["vad"] = str(vad_onnx)
        else:
            logger.info("no %s: VAD runs in PyTorch", vad_onnx)
    if model.punc_model is not None:
        punc_onnx = Path(model.punc_kwargs.get("model_path", punc or "")) / "model.onnx"
        if punc_onnx.exists():
            model.punc_model.punc_forward = _onnx_punc_forward(punc_onnx, threads)
            model.onnx_parts["punc"] = str(punc_onnx)
        else:
            logger.info(
                "no %s (python -m asr.onnx.export --model-dir %s): punctuation runs in PyTorch",
                punc_onnx,
                model.punc_kwargs.get("model_path", punc),
            )
    logger.info(
        "ONNX Runtime backend: %s, %d threads (%s)",
        "int8" if files.quantized else "fp32",
        threads,
        ", ".join(f"{k}={v}" for k, v in model.onnx_parts.items()),
    )
    return model


def default_threads(ncpu: int) -> int:
    """ONNX Runtime intra-op threads: NCPU when set, else the machine's cores."""
    return ncpu or os.cpu_count() or 1
