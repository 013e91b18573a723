"""Export a FunASR model folder to ONNX for the engine's ONNX Runtime backend.

    python -m asr.onnx.export --model-dir models/tiny-seaco               # model.onnx + model_eb.onnx
    python -m asr.onnx.export --model-dir models/full-seaco --quantize    # also model_quant.onnx + model_eb_quant.onnx
    python -m asr.onnx.export --model-dir models/full-punc                # the punctuation model: model.onnx
    python -m asr.onnx.export --model-dir models/full-online --quantize   # the streaming Paraformer (partials):
                                                                          # encoder_chunk.onnx + decoder_chunk.onnx
                                                                          # (+ *_quant.onnx int8, per-row
                                                                          # activations: asr.onnx.row_quantization)

The files go into the model folder (or --output-dir; point ONNX_MODEL_DIR at it for the ASR model). The model
type comes from the folder's config.yaml: SeACo-Paraformer, CT-punctuation, FSMN-VAD or the streaming Paraformer
(ParaformerStreaming: its chunk encoder and decoder with their caches as inputs and outputs, `asr.onnx.online_export`;
the service runs them with `asr.onnx.online` when ONLINE_BACKEND picks ONNX).

Why not `AutoModel.export()`: FunASR's exporter calls `torch.onnx.export` with `dynamic_axes`, which the
default (dynamo) exporter of torch 2.x rejects, so this uses the legacy exporter (`dynamo=False`). And
for SeACo-Paraformer the backbone graph is FunASR's own export wrapper with three corrections so that
ONNX gives the same text as the PyTorch model:
- the "no bias" class id is the model's `NO_BIAS` (FunASR's exporter hard-codes 8377, the real
  vocabulary's value; the test models have other vocabularies);
- hotwords are filtered like PyTorch does (all of them up to 50; above that the 50 best plus `<s>`);
- the hotword embedder takes hotwords of any length (FunASR's fixes it at 10 tokens);
- a fifth output, `decoder_logits`, is the decoder's distribution before hotword biasing: PyTorch
  skips the bias decoder entirely when a request has no hotwords, and the runtime uses this output then;
- a segment whose predictor gives no token is decoded as one token and reported with `token_num` 0
  (FunASR's graph fails on a batch without any token, where PyTorch returns no result).
Then the backbone graphs (fp32 and int8) are rewritten for ONNX Runtime (`asr.onnx.graph`: CIF loops
without quadratic copies, fused attention; same outputs bit for bit).
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
import types
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: PyTorch's SeACo decoding keeps all hotwords up to this many; above it, the best ones plus `<s>`.
HOTWORD_FILTER = 50
OPSET = 14


def model_type(model_dir: Path) -> str:
    """The FunASR model class named in the folder's config.yaml (e.g. "SeacoParaformer")."""
    import yaml

    config = model_dir / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"{model_dir} has no config.yaml: not a FunASR model folder")
    return str(yaml.safe_load(config.read_text(encoding="utf-8"))["model"])


def onnx_file_names(kind: str, quantize: bool) -> list[str]:
    """The files `export_model` writes for a model type (FunASR's names, which funasr-onnx also reads)."""
    suffix = "_quant" if quantize else ""
    if kind == "SeacoParaformer":
        return [f"model{suffix}.onnx", f"model_eb{suffix}.onnx"]
    if kind == "ParaformerStreaming":
        from .online_export import online_file_names

        return online_file_names(quantize)
    return [f"model{suffix}.onnx"]


def _seaco_backbone_forward(self: Any, speech: Any, speech_lengths: Any, bias_embed: Any) -> tuple:
    """FunASR's SeACo export forward, made to match `SeacoParaformer.inference` (see the module docstring).

    Bound to the backbone that `SeacoParaformer.export()` builds (its encoder, predictor and decoders
    are already FunASR's export variants).
    """
    import torch

    enc, enc_len = self.encoder(speech=speech, speech_lengths=speech_lengths)
    mask = self.make_pad_mask(enc_len)[:, None, :]
    # Zero the padding frames, as asr.batching.make_batches_exact does in PyTorch: the predictor's
    # convolution reads one frame past a segment's end, and alone that frame is zero.
    enc = enc * mask.transpose(1, 2).to(enc.dtype)
    pre_acoustic_embeds, pre_token_length = _predict_at_least_one_token(self.predictor, enc, mask)
    # The predictor already floors the token count; PyTorch rounds that floored value.
    pre_token_length = pre_token_length.floor().type(torch.int32)
    # A segment without tokens is decoded as one token (its result is dropped: `token_num` says 0), so the
    # graph never meets an empty batch; the other segments' lengths, and so their outputs, are unchanged.
    decode_length = torch.clamp(pre_token_length, min=1)

    decoder_out, decoder_hidden, _ = self.decoder(
        enc, enc_len, pre_acoustic_embeds, decode_length, return_hidden=True, return_both=True
    )
    decoder_pred = torch.log_softmax(decoder_out, dim=-1)

    # Hotword filter without data-dependent control flow. PyTorch keeps every hotword when there are
    # at most 50, else the 50 with the highest ASF scores plus the last entry (<s>). Ranking all of
    # them and keeping the first min(N, 51) of [ranked[:50], <s>, ranked[50:]] gives the same set in
    # both cases (attention does not depend on the order of its memory).
    batch_ones = torch.ones_like(pre_token_length)
    n_words = torch.ones_like(bias_embed[0, :, 0]).sum(dim=0, keepdim=True).to(torch.int64)
    scores = self.seaco_decoder.forward_asf6(
        bias_embed, batch_ones * n_words.to(torch.int32), decoder_hidden, decode_length
    )
    scores = scores[0].sum(0).sum(0)
    ranked = torch.argsort(scores, descending=True)
    order = torch.cat([ranked[:HOTWORD_FILTER], n_words - 1, ranked[HOTWORD_FILTER:]], dim=0)
    n_kept = torch.clamp(n_words, max=HOTWORD_FILTER + 1)
    kept = torch.index_select(order, 0, torch.arange(n_kept[0]))  # arange of a tensor stays dynamic in the graph
    contextual_info = torch.index_select(bias_embed, 1, kept)
    contextual_length = batch_ones * n_kept.to(torch.int32)

    cif_attended, _ = self.seaco_decoder(contextual_info, contextual_length, pre_acoustic_embeds, decode_length)
    dec_attended, _ = self.seaco_decoder(contextual_info, contextual_length, decoder_hidden, decode_length)
    dha_pred = torch.log_softmax(self.hotword_output_layer(cif_attended + dec_attended), dim=-1)
    # Where the bias decoder predicts "no bias" keep the decoder's distribution, else take its own.
    dha_mask = (dha_pred.max(-1)[-1] == self.NO_BIAS).int().unsqueeze(-1)
    logits = decoder_pred * dha_mask + dha_pred * (1 - dha_mask)

    us_alphas, us_cif_peak = self.predictor.get_upsample_timestmap(enc, mask, decode_length)
    return logits, pre_token_length, us_alphas, us_cif_peak, decoder_pred


def _predict_at_least_one_token(predictor: Any, hidden: Any, mask: Any) -> tuple:
    """FunASR's CifPredictorV3Export.forward, except that a segment whose weights sum below one token fires once.

    FunASR's exported CIF cannot build an empty sequence: a batch in which no segment reaches one token
    (a cough cut as its own segment) fails inside ONNX Runtime (a Reshape in the CIF loop), where PyTorch
    returns no result. The missing weight is added at the segment's last column only for such segments, so
    every other segment integrates exactly the same weights (x + 0.0) and fires exactly as before. Returns
    (acoustic embeddings, the token count before that correction).
    """
    import torch
    from funasr.models.bicif_paraformer.cif_predictor import cif_export

    context = hidden.transpose(1, 2)
    output = torch.relu(predictor.cif_conv1d(predictor.pad(context))).transpose(1, 2)
    alphas = torch.sigmoid(predictor.cif_output(output))
    alphas = torch.nn.functional.relu(alphas * predictor.smooth_factor - predictor.noise_threshold)
    mask = mask.transpose(-1, -2).float()
    alphas = (alphas * mask).squeeze(-1)
    hidden, alphas, token_num = predictor.tail_process_fn(hidden, alphas, mask=mask.squeeze(-1))
    silent = (token_num < 1).to(alphas.dtype)  # token_num is already floored
    last_column = torch.nn.functional.one_hot(
        torch.full_like(token_num, alphas.shape[1] - 1).long(), alphas.shape[1]
    ).to(alphas.dtype)
    alphas = alphas + last_column * (silent * predictor.threshold)[:, None]
    acoustic_embeds, _ = cif_export(hidden, alphas, predictor.threshold)
    return acoustic_embeds, token_num


def _export_graph(module: Any, path: Path, opset: int) -> None:
    import torch

    dummy = module.export_dummy_inputs()
    dummy = (dummy,) if isinstance(dummy, torch.Tensor) else tuple(dummy)
    input_names = module.export_input_names()
    output_names = module.export_output_names()
    axes = {k: v for k, v in module.export_dynamic_axes().items() if k in set(input_names) | set(output_names)}
    with torch.no_grad():
        # dynamo=False: the legacy (TorchScript) exporter is the one that accepts dynamic_axes.
        torch.onnx.export(
            module,
            dummy,
            str(path),
            do_constant_folding=True,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
            dynamo=False,
        )


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has the VNNI int8 dot-product instructions (avx512_vnni or avx_vnni)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _quantize(path: Path, op_types: tuple[str, ...] = ("MatMul",)) -> Path:
    """int8 weights (per channel), with the exclusions FunASR's exporter uses (output and bias layers).

    Signed int8 weights let ONNX Runtime use VNNI (≈ 1.2x faster here than unsigned); without VNNI,
    signed weights can saturate in the AVX2 kernels, so unsigned ones are used there.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_name(path.stem + "_quant.onnx")
    nodes = [n.name for n in onnx.load(str(path)).graph.node]
    exclude = [n for n in nodes if "output" in n or "bias_encoder" in n or "bias_decoder" in n]
    weights = QuantType.QInt8 if cpu_has_vnni() else QuantType.QUInt8
    quantize_dynamic(
        model_input=str(path),
        model_output=str(target),
        op_types_to_quantize=list(op_types),
        per_channel=True,
        reduce_range=False,
        weight_type=weights,
        nodes_to_exclude=exclude,
    )
    return target


def export_model(
    model_dir: Path, *, output_dir: Path | None = None, quantize: bool = False, opset: int = OPSET
) -> list[Path]:
    """Export one FunASR model folder to ONNX; returns the files written (fp32, then int8 if asked)."""
    import torch
    from funasr import AutoModel

    model_dir = Path(model_dir)
    out = Path(output_dir) if output_dir else model_dir
    out.mkdir(parents=True, exist_ok=True)
    kind = model_type(model_dir)
    started = time.perf_counter()
    auto = AutoModel(model=str(model_dir), device="cpu", disable_update=True, disable_pbar=True, disable_log=True)
    kwargs = copy.deepcopy(auto.kwargs)
    kwargs.pop("model", None)
    kwargs.update(device="cpu", type="onnx")
    model = auto.model.eval()
    if kind == "CTTransformer" and len(getattr(model.encoder, "encoders", [])) == 0:
        # FunASR's SANMEncoderExport reads encoders[0]; a one-block encoder has only encoders0.
        raise ValueError(
            f"{model_dir}: FunASR's punctuation exporter needs 2 or more encoder blocks (this model has "
            f"1); the engine runs this punctuation model in PyTorch"
        )
    if kind == "ParaformerStreaming":
        from .online_export import export_online

        written = export_online(model, out, opset)
        if quantize:
            from .row_quantization import quantize_rows

            for path in list(written):
                logger.info("quantizing %s", path)
                quantized = _quantize(path)
                # One scale per row, not per call: concurrent streams batched into one call keep their own numbers.
                logger.info("%s: %d activation quantizers made per-row", quantized.name, quantize_rows(quantized))
                written.append(quantized)
        logger.info(
            "exported %s in %.1f s: %s", model_dir, time.perf_counter() - started, ", ".join(p.name for p in written)
        )
        return written
    with torch.no_grad():
        scripts = model.export(**kwargs)
    scripts = list(scripts) if isinstance(scripts, (list, tuple)) else [scripts]
    if kind == "SeacoParaformer":
        backbone = scripts[0]
        backbone.forward = types.MethodType(_seaco_backbone_forward, backbone)
        names = backbone.export_output_names()
        backbone.export_output_names = lambda: [*names, "decoder_logits"]
        axes = backbone.export_dynamic_axes()
        # FunASR's dummy hotword embedding is 512 wide (the real model's); use the model's own width.
        backbone.export_dummy_inputs = lambda: (
            torch.randn(2, 30, backbone.feats_dim),
            torch.tensor([15, 30], dtype=torch.int32),
            torch.randn(2, 3, backbone.inner_dim),
        )
        backbone.export_dynamic_axes = lambda: {**axes, "decoder_logits": {0: "batch_size", 1: "logits_length"}}
        # FunASR fixes the hotword length at 10 tokens; hotwords may be longer (MAX_HOTWORD_CHARS).
        embedder = scripts[1]
        embedder.export_dynamic_axes = lambda: {
            "hotword": {0: "num_hotwords", 1: "hotword_length"},
            "hw_embed": {0: "hotword_length", 1: "num_hotwords"},
        }
    written: list[Path] = []
    for script in scripts:
        script.eval()
        name = script.export_name if isinstance(script.export_name, str) else script.export_name()
        path = out / (name if name.endswith(".onnx") else name + ".onnx")
        logger.info("exporting %s to %s", kind, path)
        _export_graph(script, path, opset)
        written.append(path)
    if quantize:
        for path in list(written):
            logger.info("quantizing %s", path)
            # The backbone's LSTM is the timestamp head's (its int8 moves a few timestamps by a step); the hotword
            # embedder's LSTM stays fp32.
            backbone = kind == "SeacoParaformer" and path == written[0]
            written.append(_quantize(path, ("MatMul", "LSTM") if backbone else ("MatMul",)))
    if kind == "SeacoParaformer":
        from .graph import optimize_for_ort

        for path in (p for p in written if p.name in ("model.onnx", "model_quant.onnx")):
            logger.info("rewriting %s for ONNX Runtime: %s", path.name, optimize_for_ort(path))
    logger.info(
        "exported %s in %.1f s: %s", model_dir, time.perf_counter() - started, ", ".join(p.name for p in written)
    )
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a FunASR model folder (config.yaml, model.pt)")
    parser.add_argument("--output-dir", type=Path, help="where the .onnx files go (default: the model folder)")
    parser.add_argument("--quantize", action="store_true", help="also write int8 *_quant.onnx files")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET}, as FunASR)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        files = export_model(args.model_dir, output_dir=args.output_dir, quantize=args.quantize, opset=args.opset)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    print(*files, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
