"""The streaming Paraformer (ParaformerStreaming) as two ONNX graphs whose caches are explicit inputs and outputs.

`encoder_chunk.onnx`: one chunk of features through the SANM chunk encoder and the CIF predictor's convolution.
    in:  speech [B, T, F]  (already scaled, position-encoded and preceded by the overlap frames, as
                            `SANMEncoderChunkOpt.forward_chunk` builds it before its first layer)
         k_cache_i, v_cache_i [B, H, C, d_k]  per layer: the look-back keys and values (C may be 0)
    out: enc [B, T, D], alphas [B, T], k_i, v_i [B, H, T, d_k] (this chunk's keys and values)
`decoder_chunk.onnx`: the tokens the predictor fired in this chunk, through the SANM decoder.
    in:  enc [B, T, D], embeds [B, N, D],
         fsmn_i [B, D, K-1]  per layer: the FSMN memory's last K-1 inputs,
         k_cache_i, v_cache_i [B, H, C, d_k]  per layer: the cross-attention's look-back (C may be 0)
    out: ids [B, N] (argmax of the log-softmax), window_i [B, D, K-1+N] (the FSMN inputs of this step, cache
         included), k_i, v_i [B, H, T, d_k]

Why these graphs and not FunASR's export of the same model: FunASR's decoder export keeps only the FSMN caches,
not the cross-attention look-back that PyTorch's `forward_chunk` uses (decoder_chunk_look_back), and its encoder
export has no attention caches at all, so its tokens are not PyTorch's streaming tokens. Here each layer is the
model's own submodules (`forward_qkv`, `forward_fsmn`, `forward_attention`, norms, feed-forward), arranged exactly
as `forward_chunk` arranges them, with every slice that depends on the stream's chunk settings (look-back
lengths, the look-ahead frames left out of the encoder's cache) done by the runtime (`asr.onnx.online`), so one
export serves every chunk_size and look-back a client asks for. Batch and length axes are dynamic.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENCODER = "encoder_chunk"
DECODER = "decoder_chunk"


def online_file_names(quantize: bool) -> list[str]:
    suffix = "_quant" if quantize else ""
    return [f"{ENCODER}{suffix}.onnx", f"{DECODER}{suffix}.onnx"]


def _modules() -> tuple[type, type]:
    import torch

    class EncoderChunk(torch.nn.Module):
        """`SANMEncoderChunkOpt.forward_chunk` after its input layer, plus `CifPredictorV2`'s alphas."""

        def __init__(self, model: Any):
            super().__init__()
            self.encoder = model.encoder
            self.predictor = model.predictor
            self.layers = torch.nn.ModuleList([*model.encoder.encoders0, *model.encoder.encoders])

        def forward(self, speech: Any, *caches: Any) -> tuple:
            x = speech
            keys_values = []
            for i, layer in enumerate(self.layers):
                x, k_h, v_h = _encoder_layer(layer, x, caches[2 * i], caches[2 * i + 1])
                keys_values += [k_h, v_h]
            if self.encoder.normalize_before:
                x = self.encoder.after_norm(x)
            return (x, _alphas(self.predictor, x), *keys_values)

    class DecoderChunk(torch.nn.Module):
        """`ParaformerSANMDecoder.forward_chunk`, then log-softmax and argmax as `generate_chunk` does."""

        def __init__(self, model: Any):
            super().__init__()
            self.decoder = model.decoder

        def forward(self, enc: Any, embeds: Any, *caches: Any) -> tuple:
            decoder = self.decoder
            n = len(decoder.decoders)
            fsmn, keys, values = caches[:n], caches[n : 2 * n], caches[2 * n :]
            x = embeds
            windows, new_keys, new_values = [], [], []
            for i, layer in enumerate(decoder.decoders):
                x, window, k_h, v_h = _decoder_layer(layer, x, enc, fsmn[i], keys[i], values[i])
                windows.append(window)
                new_keys.append(k_h)
                new_values.append(v_h)
            for layer in decoder.decoders3:  # feed-forward only: no cache
                x = layer.forward_chunk(x, enc)[0]
            if decoder.normalize_before:
                x = decoder.after_norm(x)
            x = decoder.output_layer(x)
            ids = torch.log_softmax(x, dim=-1).argmax(dim=-1)
            return (ids, *windows, *new_keys, *new_values)

    return EncoderChunk, DecoderChunk


def _encoder_layer(layer: Any, x: Any, k_cache: Any, v_cache: Any) -> tuple:
    """`EncoderLayerSANM.forward_chunk` with `MultiHeadedAttentionSANM.forward_chunk` inside, the cache as tensors."""
    import torch

    attn = layer.self_attn
    residual = x
    if layer.normalize_before:
        x = layer.norm1(x)
    q_h, k_h, v_h, v = attn.forward_qkv(x)
    fsmn_memory = attn.forward_fsmn(v, None)
    keys = torch.cat((k_cache, k_h), dim=2)
    values = torch.cat((v_cache, v_h), dim=2)
    scores = torch.matmul(q_h * attn.d_k ** (-0.5), keys.transpose(-2, -1))
    out = attn.forward_attention(values, scores, None) + fsmn_memory
    x = residual + out if layer.in_size == layer.size else out
    if not layer.normalize_before:
        x = layer.norm1(x)
    residual = x
    if layer.normalize_before:
        x = layer.norm2(x)
    x = residual + layer.feed_forward(x)
    if not layer.normalize_before:
        x = layer.norm2(x)
    return x, k_h, v_h


def _decoder_layer(layer: Any, x: Any, memory: Any, fsmn_state: Any, k_cache: Any, v_cache: Any) -> tuple:
    """`DecoderLayerSANM.forward_chunk`: the FSMN over the cached inputs and this step's, the cross-attention over
    the look-back and this chunk's encoder frames."""
    import torch

    residual = x
    tgt = layer.norm1(x) if layer.normalize_before else x
    tgt = layer.feed_forward(tgt)
    x = tgt
    if layer.normalize_before:
        tgt = layer.norm2(tgt)
    # MultiHeadedAttentionSANMDecoder with a cache: the FSMN sees the last K-1 inputs before this step's; with no
    # right padding (checked at export), the first step's zero padding is the zero state.
    window = torch.cat((fsmn_state, tgt.transpose(1, 2)), dim=2)
    memory_out = layer.self_attn.fsmn_block(window).transpose(1, 2) + tgt
    x = residual + memory_out
    residual = x
    if layer.normalize_before:
        x = layer.norm3(x)
    src = layer.src_attn
    q_h, k_h, v_h = src.forward_qkv(x, memory)
    keys = torch.cat((k_cache, k_h), dim=2)
    values = torch.cat((v_cache, v_h), dim=2)
    scores = torch.matmul(q_h * src.d_k ** (-0.5), keys.transpose(-2, -1))
    x = residual + src.forward_attention(values, scores, None)
    return x, window, k_h, v_h


def _alphas(predictor: Any, hidden: Any) -> Any:
    """`CifPredictorV2.forward_chunk` up to the alphas (the integrate-and-fire loop runs in the runtime)."""
    import torch

    output = torch.relu(predictor.cif_conv1d(predictor.pad(hidden.transpose(1, 2)))).transpose(1, 2)
    alphas = torch.sigmoid(predictor.cif_output(output))
    alphas = torch.nn.functional.relu(alphas * predictor.smooth_factor - predictor.noise_threshold)
    return alphas.squeeze(-1)


def check_exportable(model: Any) -> None:
    """The model shapes these graphs reproduce exactly; anything else is refused rather than exported wrong."""
    encoder, decoder = model.encoder, model.decoder
    kinds = (type(encoder).__name__, type(decoder).__name__, type(model.predictor).__name__)
    if kinds != ("SANMEncoderChunkOpt", "ParaformerSANMDecoder", "CifPredictorV2"):
        raise ValueError(f"unsupported streaming Paraformer parts {kinds}")
    if type(encoder.embed).__name__ != "StreamSinusoidalPositionEncoder":
        raise ValueError("the streaming encoder's input layer is not pe_online")
    if decoder.decoders2 is not None and len(decoder.decoders2):
        raise ValueError("decoders2 (num_blocks > att_layer_num) is not supported")
    for layer in decoder.decoders:
        pad = layer.self_attn.pad_fn.padding
        if pad[1] != 0 or pad[0] != layer.self_attn.kernel_size - 1:
            raise ValueError(f"decoder FSMN padding {pad}: only left padding (sanm_shfit = (kernel-1)/2) is exported")


def export_online(model: Any, out: Path, opset: int) -> list[Path]:
    """Write encoder_chunk.onnx and decoder_chunk.onnx for a loaded ParaformerStreaming (eval mode)."""
    import torch

    check_exportable(model)
    encoder_chunk, decoder_chunk = _modules()
    encoder = encoder_chunk(model).eval()
    decoder = decoder_chunk(model).eval()
    feats = model.encoder.encoders0[0].in_size
    size = model.encoder.output_size()
    batch, frames, cached = 2, 20, 15  # distinct sizes, so the tracer cannot confuse the axes

    def kv_shape(attn: Any, length: int) -> tuple[int, ...]:
        return (batch, attn.h, length, attn.d_k)

    enc_layers = list(encoder.layers)
    enc_inputs = [torch.randn(batch, frames, feats)]
    enc_names, enc_out_names = ["speech"], ["enc", "alphas"]
    enc_axes: dict[str, dict[int, str]] = {"speech": {0: "batch", 1: "frames"}, "enc": {0: "batch", 1: "frames"}}
    enc_axes["alphas"] = {0: "batch", 1: "frames"}
    for i, layer in enumerate(enc_layers):
        for kind in ("k", "v"):
            enc_inputs.append(torch.randn(kv_shape(layer.self_attn, cached)))
            enc_names.append(f"{kind}_cache_{i}")
            enc_out_names.append(f"{kind}_{i}")
            enc_axes[f"{kind}_cache_{i}"] = {0: "batch", 2: "cached"}
            enc_axes[f"{kind}_{i}"] = {0: "batch", 2: "frames"}

    dec_layers = list(model.decoder.decoders)
    tokens = 3
    dec_inputs = [torch.randn(batch, frames, size), torch.randn(batch, tokens, size)]
    dec_names, dec_out_names = ["enc", "embeds"], ["ids"]
    dec_axes = {"enc": {0: "batch", 1: "frames"}, "embeds": {0: "batch", 1: "tokens"}, "ids": {0: "batch", 1: "tokens"}}
    for i, layer in enumerate(dec_layers):
        dec_inputs.append(torch.randn(batch, size, layer.self_attn.kernel_size - 1))
        dec_names.append(f"fsmn_{i}")
        dec_out_names.append(f"window_{i}")
        dec_axes[f"fsmn_{i}"] = {0: "batch"}
        dec_axes[f"window_{i}"] = {0: "batch", 2: "window"}
    for kind in ("k", "v"):
        for i, layer in enumerate(dec_layers):
            dec_inputs.append(torch.randn(kv_shape(layer.src_attn, cached)))
            dec_names.append(f"{kind}_cache_{i}")
            dec_out_names.append(f"{kind}_{i}")
            dec_axes[f"{kind}_cache_{i}"] = {0: "batch", 2: "cached"}
            dec_axes[f"{kind}_{i}"] = {0: "batch", 2: "frames"}

    written = []
    for module, inputs, names, out_names, axes, name in (
        (encoder, enc_inputs, enc_names, enc_out_names, enc_axes, ENCODER),
        (decoder, dec_inputs, dec_names, dec_out_names, dec_axes, DECODER),
    ):
        path = out / f"{name}.onnx"
        logger.info("exporting the streaming Paraformer's %s to %s", name, path)
        with torch.no_grad():
            # dynamo=False: the legacy (TorchScript) exporter is the one that accepts dynamic_axes.
            torch.onnx.export(
                module,
                tuple(inputs),
                str(path),
                do_constant_folding=True,
                opset_version=opset,
                input_names=names,
                output_names=out_names,
                dynamic_axes=axes,
                dynamo=False,
            )
        written.append(path)
    _write_metadata(written[0], model)
    return written


def _write_metadata(path: Path, model: Any) -> None:
    """The numbers the runtime's own steps need (scaling, CIF, token filter), from the loaded model, kept in the
    encoder graph (ONNX Runtime reads them back as custom metadata; quantizing keeps them)."""
    import onnx

    graph = onnx.load(str(path))
    meta = {
        "model": "ParaformerStreaming",
        "output_size": model.encoder.output_size(),
        "threshold": float(model.predictor.threshold),
        "tail_threshold": float(model.predictor.tail_threshold),
        "sos": int(model.sos),
        "eos": int(model.eos),
        "blank_id": int(model.blank_id),
    }
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(graph, str(path))
