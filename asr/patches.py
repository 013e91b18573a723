"""Every change the engine makes to FunASR's objects, in one place.

FunASR is used as it is shipped; where it falls short for a service, the engine wraps one of its methods on the
loaded objects (never its source, never the installed package's files). A request's call goes through them from
the outside in, in this order:

    AutoModel.inference          time-ordered segments  (asr.segments)   once the VAD has cut a file, decode its
                                                                          segments in time order and report each
      model.inference            cross-request batcher  (asr.batching)   segments of requests that arrive together
                                                                          share one model call; a job's progress and
                                                                          cancel point; urgent live sentences first
        model.inference          confidence hook        (here)           keep each emitted token's posterior, which
                                                                          FunASR computes and drops        [torch]
          model.encode           zeroed padding         (asr.batching)   a padded segment in a batch decodes as it
          model.calc_predictor_timestamp  per segment                     does alone (exact batching)      [torch]
    the VAD and punctuation      stop points            (asr.progress)   a cancelled job stops inside the steps
                                                                          where a long file spends seconds with no
                                                                          model call (VAD chunks, punctuation)
    funasr.utils.fbank           piecewise filterbank   (asr.features)   a long file's features are computed in
                                                                          pieces, so they never hold the interpreter
                                                                          for seconds (process-wide, applied once)
    the ONNX model               ONNX Runtime backend   (asr.onnx)       SeACo's backbone, the VAD encoder and the
                                                                          punctuation forward on ONNX Runtime; the
                                                                          same AutoModel around them       [onnx]

SenseVoice-Small (`patch_sensevoice_model`) goes through the same VAD-path patches (time-ordered segments, the
cross-request batcher, stop points), plus a confidence hook of its own (the CTC head's posteriors) and, outermost,
the capture of each segment's result (`asr.sensevoice`): its tags become the sentence's language, emotion and
events. FunASR decodes a SenseVoice batch from per-item lengths only, so batching needs no exactness patch.

The streaming Paraformer (partials) gets one patch of its own (`patch_streaming_model`):

    StreamSinusoidalPositionEncoder.forward  positions of this step only   FunASR builds the encoding of every
                                                                          position since the stream began at each
                                                                          step, to keep the last few: a chunk cost
                                                                          14 ms at minute 5 and 51 ms at minute 20
                                                                          (tiny model); now the same at hour 2

On the ONNX backend the graph itself returns the token posteriors and zeroes the padding (asr.onnx.export), so
the two torch-only patches are not needed there. Each patch leaves the text what FunASR would produce alone; the
tests check that against bare FunASR (tests/test_engine.py, tests/test_batching.py, tests/test_meetings.py).
"""

from __future__ import annotations

from typing import Any

from .batching import PREDICTED_TOKENS, CrossRequestBatcher, make_batches_exact
from .features import install_piecewise_fbank
from .progress import install_checkpoints
from .segments import install_segment_reporting


def patch_funasr() -> None:
    """The process-wide patch (idempotent): FunASR's kaldi-native-fbank path fed in pieces."""
    install_piecewise_fbank()


def patch_model(automodel: Any, batcher: CrossRequestBatcher, *, backend: str | None) -> None:
    """Apply the per-model patches to a freshly built AutoModel (torch or ONNX), innermost first."""
    if backend != "onnx":
        install_confidence_hook(automodel.model)
        make_batches_exact(automodel.model)
    batcher.install(automodel.model)
    install_segment_reporting(automodel)
    install_stop_points(automodel)


def patch_sensevoice_model(automodel: Any, batcher: CrossRequestBatcher) -> None:
    """The per-model patches for SenseVoice-Small (`asr.sensevoice`), innermost first: its confidence hook, the
    cross-request batcher, time-ordered segments, the stop points, and outermost the per-segment capture that
    reads each VAD segment's result (tags, word times) as FunASR's VAD path gets it back."""
    from .sensevoice import install_capture, strip_tags
    from .sensevoice import install_confidence_hook as install_sensevoice_confidence_hook

    install_sensevoice_confidence_hook(automodel.model)
    batcher.install(automodel.model)
    install_segment_reporting(automodel, written=strip_tags)  # a stream never shows the tags
    install_stop_points(automodel)
    install_capture(automodel)


def patch_streaming_model(model: Any) -> int:
    """Make each streaming position encoder compute only the positions of the step it is given (bit-identical:
    the encoding is elementwise in the position). Returns how many encoders were patched."""
    from funasr.models.transformer.embedding import StreamSinusoidalPositionEncoder

    patched = 0
    for module in model.modules():
        if isinstance(module, StreamSinusoidalPositionEncoder) and not getattr(module, "steps_only", False):
            module.forward = _positions_of_this_step(module)
            module.steps_only = True
            patched += 1
    return patched


def _positions_of_this_step(encoder: Any) -> Any:
    import torch

    def forward(x: Any, cache: dict | None = None) -> Any:
        _, timesteps, depth = x.size()
        start = 0
        if cache is not None:
            start = cache["start_idx"]
            cache["start_idx"] += timesteps
        positions = torch.arange(start + 1, start + timesteps + 1)[None, :]
        return x + encoder.encode(positions, depth, x.dtype).to(x.device)

    return forward


def install_stop_points(automodel: Any) -> None:
    """Checkpoints where a long file spends seconds with no model call (`asr.progress`), so a cancelled job
    stops there too: each of the VAD's 60-second chunks runs its filterbank, its scores and a frame-by-frame
    state machine, each a checkpoint (the frames every frame: a few ms per chunk in all); and the punctuation
    model's pieces. The VAD's chunks are FunASR's: smaller ones would change its dynamic silence thresholds."""
    vad = getattr(automodel, "vad_model", None)
    if vad is not None:
        frontend = (getattr(automodel, "vad_kwargs", None) or {}).get("frontend")
        if frontend is not None and hasattr(frontend, "forward"):
            install_checkpoints(frontend, "forward")
        for method in ("ComputeScores", "DetectCommonFrames", "GetFrameState", "forward"):
            if hasattr(vad, method):
                install_checkpoints(vad, method)
    if getattr(automodel, "punc_model", None) is not None and hasattr(automodel.punc_model, "punc_forward"):
        install_checkpoints(automodel.punc_model, "punc_forward")


def install_confidence_hook(model: Any) -> None:
    """Record, per result, the posterior of each emitted token (FunASR does not return them).

    Wraps the instance's decode step to keep its log-probabilities and the predicted lengths, and
    its `inference` to attach `token_probs` to each result; FunASR's VAD merge concatenates such
    list-valued keys across segments. Reads only: the text is what the model would emit anyway.
    """
    decode = model._seaco_decode_with_ASF
    inference = model.inference
    captured: list[tuple[Any, Any]] = []
    dropped = {model.blank_id, model.sos, model.eos}

    def decode_and_keep(encoder_out, encoder_out_lens, sematic_embeds, ys_pad_lens, *args, **kwargs):
        log_probs = decode(encoder_out, encoder_out_lens, sematic_embeds, ys_pad_lens, *args, **kwargs)
        captured.append((log_probs.detach(), ys_pad_lens.detach()))
        return log_probs

    def inference_with_probs(*args, **kwargs):
        captured.clear()
        output = inference(*args, **kwargs)
        results = output[0] if isinstance(output, tuple) else output
        if captured and results:
            log_probs, lengths = captured[-1]
            for i, result in enumerate(results):
                best, ids = log_probs[i, : int(lengths[i])].max(dim=-1)
                keep = [p for p, t in zip(best.exp().tolist(), ids.tolist(), strict=False) if t not in dropped]
                result["token_probs"] = keep
                result[PREDICTED_TOKENS] = int(lengths[i])
        captured.clear()
        return output

    model._seaco_decode_with_ASF = decode_and_keep
    model.inference = inference_with_probs
