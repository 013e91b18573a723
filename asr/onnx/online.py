"""The streaming Paraformer (online partials) on ONNX Runtime: `OnnxOnlineModel`, the same `step()` as
`asr.stream_models.OnlineModel`, over the graphs `python -m asr.onnx.export --model-dir <online model>` writes
(`asr.onnx.online_export`).

The chunk loop is `ParaformerStreaming.inference` / `generate_chunk`, step for step, so that fp32 gives
PyTorch's tokens chunk by chunk:
- features: FunASR's own `WavFrontendOnline` with the stream's frontend cache (the same frames);
- the encoder's input layer (scale by sqrt(output_size), the stream position encoding from the stream's frame
  index, the overlap frames of the previous chunk in front) in numpy/torch, the layers in `encoder_chunk.onnx`;
- the look-back caches trimmed here, as `forward_chunk` trims them (the encoder's without the look-ahead frames,
  the first chunk's untrimmed; the decoder's cross-attention to the last look_back x chunk frames);
- the CIF predictor's integrate-and-fire loop with its cache, in float32 as PyTorch runs it;
- the decoder (`decoder_chunk.onnx`) only when the predictor fired, its FSMN state the last K-1 inputs;
- token ids to text as FunASR does (blank, sos and eos dropped, `sentence_postprocess`).

A stream's state lives in the `cache` dict the session passes (key "onnx"); a step runs in the caller's thread.
One ONNX Runtime session per graph serves every stream (one copy of the weights, where the PyTorch backend keeps
one per worker), `workers` calls at a time with one intra-op thread each; chunks of other streams that queue
meanwhile go through one batched call (`asr.onnx.online_batching`, up to `max_batch` streams).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from . import onnx_runtime
from .online_batching import SharedSession
from .online_export import online_file_names
from .row_quantization import is_per_row

logger = logging.getLogger(__name__)

#: Samples per streaming-model frame unit: chunk_size[1] = 10 means 10 x 60 ms = 600 ms (as FunASR).
SAMPLES_PER_CHUNK_UNIT = 960


@dataclass(frozen=True)
class OnlineOnnxFiles:
    encoder: Path
    decoder: Path
    quantized: bool


def find_online_onnx(folder: Path | None, *, quantize: bool) -> OnlineOnnxFiles | None:
    """The encoder + decoder pair in `folder` (int8 when `quantize`), or None when either is missing."""
    if folder is None or not Path(folder).is_dir():
        return None
    encoder, decoder = (Path(folder) / name for name in online_file_names(quantize))
    if encoder.exists() and decoder.exists():
        return OnlineOnnxFiles(encoder, decoder, quantize)
    return None


@dataclass
class _Stream:
    """One stream's caches (ParaformerStreaming.init_cache's, as arrays)."""

    settings: tuple
    prev_samples: np.ndarray
    feats: np.ndarray  # [1, c0 + c2, F]: the overlap frames, scaled and position-encoded
    enc_keys: list[np.ndarray]
    enc_values: list[np.ndarray]
    dec_fsmn: list[np.ndarray]
    dec_keys: list[np.ndarray]
    dec_values: list[np.ndarray]
    cif_hidden: np.ndarray  # [D]
    cif_alpha: np.float32 = np.float32(0.0)
    start_idx: int = 0
    enc_cached: bool = False  # the encoder's first chunk keeps its keys untrimmed (forward_chunk's `cache is None`)
    frontend: dict = field(default_factory=dict)


def _session(path: Path, threads: int) -> Any:
    ort = onnx_runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxOnlineModel:
    """The streaming Paraformer in ONNX Runtime, `workers` streams' steps side by side (one thread each)."""

    backend = "onnx"

    def __init__(self, source: str, files: OnlineOnnxFiles, ncpu: int = 0, workers: int = 1, max_batch: int = 1):
        import torch
        import yaml
        from funasr.frontends.wav_frontend import WavFrontendOnline
        from funasr.models.transformer.embedding import StreamSinusoidalPositionEncoder

        started = time.perf_counter()
        self.source = source
        self.files = files
        self.precision = "int8" if files.quantized else "fp32"
        self.workers = max(1, workers)
        self.max_batch = max(1, max_batch)
        folder = Path(source)
        try:
            conf = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
            self._tokens: list[str] = json.loads((folder / "tokens.json").read_text(encoding="utf-8"))
            # dither 0: WavFrontendOnline adds training noise to the features unless told otherwise (as OnlineModel).
            frontend_conf = {**(conf.get("frontend_conf") or {}), "dither": 0.0}
            self._frontend = WavFrontendOnline(cmvn_file=str(folder / "am.mvn"), **frontend_conf)
            threads = 1 if self.workers > 1 else (ncpu or os.cpu_count() or 1)
            encoder = _session(files.encoder, threads)
            decoder = _session(files.decoder, threads)
        except Exception as exc:
            raise ModelLoadError(
                f"could not load the streaming model's ONNX export from {folder} ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}); re-export it with "
                f"`python -m asr.onnx.export --model-dir {folder}{' --quantize' if files.quantized else ''}`"
            ) from exc
        meta = encoder.get_modelmeta().custom_metadata_map
        if meta.get("model") != "ParaformerStreaming":
            raise ModelLoadError(f"{files.encoder} was not written by asr.onnx.export (no streaming metadata)")
        if files.quantized and self.max_batch > 1:
            per_row = is_per_row(meta) and is_per_row(decoder.get_modelmeta().custom_metadata_map)
            if not per_row:
                # An export from before per-row quantization: one activation scale per call would let the streams
                # of a batch change each other's partials, so its chunks run alone.
                logger.warning(
                    "%s quantizes activations per call, not per row: concurrent streams' chunks run alone "
                    "(ONLINE_MAX_BATCH=%d ignored); re-export with `python -m asr.onnx.export --model-dir %s "
                    "--quantize` to batch them",
                    files.encoder.name,
                    self.max_batch,
                    folder,
                )
                self.max_batch = 1
        self._size = int(meta["output_size"])
        self._scale = np.float32(self._size**0.5)
        self._threshold = np.float32(float(meta["threshold"]))
        self._tail_threshold = np.float32(float(meta["tail_threshold"]))
        self._dropped = {int(meta["sos"]), int(meta["eos"]), int(meta["blank_id"])}
        enc_inputs = encoder.get_inputs()
        self._feat_dim = int(enc_inputs[0].shape[2])
        self._enc_kv = [(int(i.shape[1]), int(i.shape[3])) for i in enc_inputs[1::2]]
        dec_inputs = {i.name: i for i in decoder.get_inputs()}
        layers = sum(1 for name in dec_inputs if name.startswith("fsmn_"))
        self._dec_fsmn = [int(dec_inputs[f"fsmn_{i}"].shape[2]) for i in range(layers)]
        self._dec_kv = [
            (int(dec_inputs[f"k_cache_{i}"].shape[1]), int(dec_inputs[f"k_cache_{i}"].shape[3])) for i in range(layers)
        ]
        self._dec_layers = layers
        self._encoder = SharedSession(encoder, slots=self.workers, max_batch=self.max_batch)
        # The decoder's rows differ in their token counts: padded at the end (the decoder is causal in its tokens).
        self._decoder = SharedSession(decoder, slots=self.workers, max_batch=self.max_batch, ragged={"embeds": 1})
        self._positions = StreamSinusoidalPositionEncoder()
        self._torch = torch
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "streaming model loaded in %.1f s from %s (ONNX Runtime, %s, %d call(s) at a time x %d thread(s), "
            "batches of up to %d streams)",
            self.load_seconds,
            folder,
            self.precision,
            self.workers,
            threads,
            self.max_batch,
        )

    # ------------------------------------------------------------------ the interface of OnlineModel
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
        """Decode the next samples of a stream (its state lives in `cache`); returns the new text."""
        settings = (tuple(chunk_size), encoder_look_back, decoder_look_back)
        return self._step(samples, cache, is_final, settings)

    def modules(self) -> list[Any]:
        return []

    def batch_stats(self) -> dict[str, float]:
        """Calls made to each graph and the mean number of streams per call."""
        return {
            f"{name}_{what}": value
            for name, shared in (("encoder", self._encoder), ("decoder", self._decoder))
            for what, value in (("calls", shared.calls), ("mean_batch", shared.rows / max(shared.calls, 1)))
        }

    # ------------------------------------------------------------------ ParaformerStreaming.inference
    def _step(self, samples: np.ndarray, cache: dict[str, Any], is_final: bool, settings: tuple) -> str:
        from funasr.utils.postprocess_utils import sentence_postprocess

        stream = cache.get("onnx")
        if stream is None or stream.settings != settings:
            stream = cache["onnx"] = self._new_stream(settings)
        chunk_size = settings[0]
        stride = chunk_size[1] * SAMPLES_PER_CHUNK_UNIT
        audio = np.concatenate([stream.prev_samples, np.asarray(samples, dtype=np.float32).reshape(-1)])
        n = audio.size // stride + int(is_final)
        m = audio.size % stride * (1 - int(is_final))
        tokens: list[str] = []
        for i in range(n):
            final = is_final and i == n - 1
            speech = self._encoder_input(stream, audio[i * stride : (i + 1) * stride], final)
            tokens += [self._tokens[t] for t in self._chunk(stream, speech, final)]
        stream.prev_samples = audio[-m:] if m > 0 else np.zeros(0, dtype=np.float32)
        if is_final:
            cache.pop("onnx", None)  # PyTorch re-initialises the cache after the final chunk
        return sentence_postprocess(tokens)[0] if tokens else ""

    def _new_stream(self, settings: tuple) -> _Stream:
        chunk_size = settings[0]
        return _Stream(
            settings=settings,
            prev_samples=np.zeros(0, dtype=np.float32),
            feats=np.zeros((1, chunk_size[0] + chunk_size[2], self._feat_dim), dtype=np.float32),
            enc_keys=[np.zeros((1, h, 0, d), dtype=np.float32) for h, d in self._enc_kv],
            enc_values=[np.zeros((1, h, 0, d), dtype=np.float32) for h, d in self._enc_kv],
            dec_fsmn=[np.zeros((1, self._size, k), dtype=np.float32) for k in self._dec_fsmn],
            dec_keys=[np.zeros((1, h, 0, d), dtype=np.float32) for h, d in self._dec_kv],
            dec_values=[np.zeros((1, h, 0, d), dtype=np.float32) for h, d in self._dec_kv],
            cif_hidden=np.zeros(self._size, dtype=np.float32),
        )

    def _encoder_input(self, stream: _Stream, piece: np.ndarray, final: bool) -> np.ndarray:
        """Features of one chunk through the encoder's input layer, with the overlap frames in front
        (`SANMEncoderChunkOpt.forward_chunk` up to its first layer)."""
        torch = self._torch
        c0, _, c2 = stream.settings[0]
        if final and piece.size < 960:
            # The tail: PyTorch encodes the overlap frames alone, scaled once more (its `xs_pad *=` runs in place
            # on the cached tensor it was handed).
            return stream.feats * self._scale
        from funasr.utils.load_utils import extract_fbank

        feats, _ = extract_fbank(
            [torch.from_numpy(np.ascontiguousarray(piece))],
            data_type="sound",
            frontend=self._frontend,
            cache=stream.frontend,
            is_final=final,
        )
        x = feats.numpy() if feats.ndim == 3 else np.zeros((1, 0, self._feat_dim), dtype=np.float32)
        x = x * self._scale
        frames = x.shape[1]
        positions = torch.arange(stream.start_idx + 1, stream.start_idx + frames + 1)[None, :]
        x = x + self._positions.encode(positions, x.shape[2], torch.float32).numpy()
        stream.start_idx += frames
        overlap = np.concatenate([stream.feats, x], axis=1)
        stream.feats = overlap[:, -(c0 + c2) :, :]
        return overlap

    def _chunk(self, stream: _Stream, speech: np.ndarray, final: bool) -> list[int]:
        """`ParaformerStreaming.generate_chunk` on one chunk's encoder input: the token ids it emits."""
        chunk_size, enc_look_back, dec_look_back = stream.settings
        feeds = {"speech": speech}
        for i in range(len(self._enc_kv)):
            feeds[f"k_cache_{i}"] = stream.enc_keys[i]
            feeds[f"v_cache_{i}"] = stream.enc_values[i]
        out = self._encoder.run(feeds)
        enc, alphas = out[0], out[1]
        self._keep_encoder_cache(stream, out[2::2], out[3::2], chunk_size, enc_look_back)
        embeds = self._cif(stream, enc[0], alphas[0], chunk_size, final)
        if not embeds.shape[0]:
            return []
        feeds = {"enc": enc, "embeds": embeds[None]}
        for i in range(self._dec_layers):
            feeds[f"fsmn_{i}"] = stream.dec_fsmn[i]
            feeds[f"k_cache_{i}"] = stream.dec_keys[i]
            feeds[f"v_cache_{i}"] = stream.dec_values[i]
        out = self._decoder.run(feeds)
        layers, tokens = self._dec_layers, embeds.shape[0]
        ids = out[0][0, :tokens]
        for i in range(layers):
            k = self._dec_fsmn[i]
            stream.dec_fsmn[i] = np.ascontiguousarray(out[1 + i][:, :, tokens : tokens + k])
        # MultiHeadedAttentionCrossAtt.forward_chunk: keys of the last look_back chunks (none unless look_back > 0).
        if dec_look_back > 0:
            keep = dec_look_back * chunk_size[1]
            for i in range(layers):
                k_h, v_h = out[1 + layers + i], out[1 + 2 * layers + i]
                stream.dec_keys[i] = np.concatenate([stream.dec_keys[i], k_h], axis=2)[:, :, -keep:]
                stream.dec_values[i] = np.concatenate([stream.dec_values[i], v_h], axis=2)[:, :, -keep:]
        return [int(t) for t in ids if int(t) not in self._dropped]

    @staticmethod
    def _keep_encoder_cache(stream: _Stream, keys: list, values: list, chunk_size: tuple, look_back: int) -> None:
        """MultiHeadedAttentionSANM.forward_chunk's cache: this chunk's keys without the look-ahead frames, appended;
        the last look_back chunks kept (all with -1; the first chunk's untrimmed; none when look_back is 0)."""
        if not (look_back > 0 or look_back == -1):
            return
        c2 = chunk_size[2]
        keep = look_back * chunk_size[1]
        for i, (k_h, v_h) in enumerate(zip(keys, values, strict=True)):
            k_stride, v_stride = k_h[:, :, :-c2], v_h[:, :, :-c2]  # c2 = 0 keeps nothing, as in PyTorch
            if not stream.enc_cached:
                stream.enc_keys[i], stream.enc_values[i] = (
                    np.ascontiguousarray(k_stride),
                    np.ascontiguousarray(v_stride),
                )
                continue
            k_new = np.concatenate([stream.enc_keys[i], k_stride], axis=2)
            v_new = np.concatenate([stream.enc_values[i], v_stride], axis=2)
            if look_back != -1:
                k_new, v_new = k_new[:, :, -keep:], v_new[:, :, -keep:]
            stream.enc_keys[i], stream.enc_values[i] = np.ascontiguousarray(k_new), np.ascontiguousarray(v_new)
        stream.enc_cached = True

    def _cif(self, stream: _Stream, hidden: np.ndarray, alphas: np.ndarray, chunk_size: tuple, final: bool) -> Any:
        """CifPredictorV2.forward_chunk's integrate-and-fire for one stream: the fired embeddings [N, D]."""
        alphas = alphas.copy()
        alphas[: chunk_size[0]] = 0.0
        if not final:
            alphas[sum(chunk_size[:2]) :] = 0.0
        hidden = np.concatenate([stream.cif_hidden[None], hidden], axis=0)
        alphas = np.concatenate([[stream.cif_alpha], alphas]).astype(np.float32)
        if final:
            hidden = np.concatenate([hidden, np.zeros((1, hidden.shape[1]), dtype=np.float32)], axis=0)
            alphas = np.concatenate([alphas, [self._tail_threshold]]).astype(np.float32)
        threshold = self._threshold
        integrate = np.float32(0.0)
        frames = np.zeros(hidden.shape[1], dtype=np.float32)
        fired = []
        for t in range(alphas.size):
            alpha = alphas[t]
            if alpha + integrate < threshold:
                integrate = integrate + alpha
                frames = frames + alpha * hidden[t]
            else:
                frames = frames + (threshold - integrate) * hidden[t]
                fired.append(frames)
                integrate = integrate + alpha
                integrate = integrate - threshold
                frames = integrate * hidden[t]
        stream.cif_alpha = integrate
        stream.cif_hidden = frames / integrate if integrate > 0.0 else frames
        if not fired:
            return np.zeros((0, hidden.shape[1]), dtype=np.float32)
        return np.stack(fired).astype(np.float32)
