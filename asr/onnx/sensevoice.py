"""SenseVoice-Small on ONNX Runtime: its encoder, where nearly all of its time goes, as an ONNX graph.

    python -m asr.onnx.sensevoice --model-dir models/full-sensevoice    # writes encoder.onnx into the folder

Everything else stays FunASR's: `SenseVoiceSmall.inference` builds the language, event/emotion and text-style
queries, calls `model.encoder`, then the CTC head, the greedy decode, the tokenizer and the forced alignment for
word times. Only `model.encoder` is swapped for `OnnxEncoder`, a module that runs the exported graph, so the
tokens are the PyTorch model's up to float rounding (tests/test_sensevoice.py compares the texts). The engine
uses it when ENGINE_BACKEND picks ONNX (`onnx`, or `auto` on a CPU) and the folder has `encoder.onnx`;
otherwise SenseVoice runs on PyTorch, whatever SeACo runs on.

Exported with the legacy exporter (`dynamo=False`), which takes `dynamic_axes` (see `asr.onnx.export`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"


def encoder_file(model_dir: str | Path) -> Path | None:
    """The folder's exported encoder, or None (a hub id, or not exported)."""
    path = Path(model_dir) / ENCODER_FILE
    return path if path.is_file() else None


def export_encoder(model_dir: Path, out: Path | None = None, opset: int = 17) -> Path:
    """Export the folder's `SenseVoiceEncoderSmall` to `out` (default: `encoder.onnx` in the folder)."""
    import torch
    from funasr import AutoModel

    automodel = AutoModel(model=str(model_dir), device="cpu", disable_update=True, disable_pbar=True, disable_log=True)
    encoder = automodel.model.encoder.eval()
    input_size = automodel.model.embed.embedding_dim

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, xs_pad: Any, ilens: Any) -> Any:
            # The encoder scales its input in place; a copy keeps the graph's input untouched.
            return self.encoder(xs_pad.clone(), ilens)

    path = out or model_dir / ENCODER_FILE
    dummy = (torch.randn(2, 40, input_size), torch.tensor([40, 25], dtype=torch.int32))
    with torch.no_grad():
        torch.onnx.export(
            Encoder(),
            dummy,
            str(path),
            do_constant_folding=True,
            opset_version=opset,
            input_names=["xs_pad", "ilens"],
            output_names=["encoder_out", "encoder_out_lens"],
            dynamic_axes={
                "xs_pad": {0: "batch", 1: "frames"},
                "ilens": {0: "batch"},
                "encoder_out": {0: "batch", 1: "frames"},
                "encoder_out_lens": {0: "batch"},
            },
            dynamo=False,
        )
    logger.info("exported %s", path)
    return path


def onnx_encoder(path: Path, threads: int) -> Any:
    """A torch module that runs the exported encoder in ONNX Runtime (`threads` intra-op threads)."""
    import numpy as np
    import torch

    from .backend import _session

    session = _session(path, threads)

    class OnnxEncoder(torch.nn.Module):
        """Stands in for `SenseVoiceEncoderSmall`: (xs_pad, ilens) -> (encoder_out, encoder_out_lens)."""

        def forward(self, xs_pad: Any, ilens: Any) -> Any:
            out, lens = session.run(
                None,
                {
                    "xs_pad": xs_pad.detach().cpu().numpy().astype(np.float32),
                    "ilens": ilens.detach().cpu().numpy().astype(np.int32),
                },
            )
            return torch.from_numpy(out), torch.from_numpy(lens.astype(np.int64))

    return OnnxEncoder()


def use_onnx_encoder(model: Any, path: Path, threads: int) -> None:
    """Swap the SenseVoiceSmall instance's encoder for the exported one (before any patch wraps it)."""
    model.encoder = onnx_encoder(path, threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a SenseVoice-Small folder")
    parser.add_argument("--out", type=Path, help=f"where to write the graph (default: <model-dir>/{ENCODER_FILE})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(export_encoder(args.model_dir, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
