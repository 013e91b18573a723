"""The baseline of the load benchmarks: the same files through a bare `funasr.AutoModel.generate` loop.

    python -m bench.baseline --model-dir models/full-seaco --vad-model-dir models/fsmn-vad \
        --punc-model-dir models/full-punc --out baseline.json FILE [FILE ...]

Run by `bench.load` in a separate process before the server starts, so the two never share the CPU. The
model is built with the same arguments as the service's engine (asr/engine.py `_build_automodel`) and called
as the engine calls it (`batch_size_s`, `sentence_timestamp`), one file after another. Each file is decoded
with the service's decoder first (timed apart: `decode_s`); `generate_s` is the model call alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

logger = logging.getLogger(__name__)


def run(
    model_dir: Path,
    vad_dir: Path,
    punc_dir: Path | None,
    device: str,
    files: list[Path],
    repeat: int,
    batch_size_s: int,
) -> dict[str, Any]:
    from funasr import AutoModel

    from asr.audio import load_audio
    from asr.device import resolve_device

    kwargs: dict[str, Any] = dict(
        model=str(model_dir),
        vad_model=str(vad_dir),
        device=resolve_device(device),
        disable_update=True,
        disable_pbar=True,
        disable_log=True,
        ncpu=int(os.environ.get("NCPU") or 0) or os.cpu_count() or 1,
    )
    if punc_dir:
        kwargs["punc_model"] = str(punc_dir)
    started = time.perf_counter()
    model = AutoModel(**kwargs)
    load_s = time.perf_counter() - started
    decoded = {}
    for path in files:
        t0 = time.perf_counter()
        audio = load_audio(path)
        decoded[path] = (audio, time.perf_counter() - t0)
    warm = decoded[files[0]][0].samples[: 10 * 16000]
    model.generate(input=warm, batch_size_s=batch_size_s, sentence_timestamp=True)
    rows: dict[str, dict[str, float]] = {}
    for path in files:
        audio, decode_s = decoded[path]
        times = []
        for _ in range(repeat if audio.duration <= 150 else 1):
            t0 = time.perf_counter()
            model.generate(input=audio.samples, batch_size_s=batch_size_s, sentence_timestamp=True)
            times.append(time.perf_counter() - t0)
        rows[str(path)] = {
            "duration_s": audio.duration,
            "decode_s": decode_s,
            "generate_s": min(times),
            "generate_runs_s": times,
        }
        logger.info("baseline %s: %.1f s audio, generate %.2f s", path.name, audio.duration, min(times))
    return {
        "load_s": load_s,
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "device": kwargs["device"],
        "ncpu": kwargs["ncpu"],
        "repeat": repeat,
        "files": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--vad-model-dir", required=True)
    parser.add_argument("--punc-model-dir", default="")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs per file up to 150 s long (longer ones: 1), the fastest kept (default 2)",
    )
    parser.add_argument("--batch-size-s", type=int, default=300, help="FunASR batch_size_s (the service's default)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("funasr", "modelscope", "jieba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    files = list(dict.fromkeys(Path(f) for f in args.files))
    report = run(
        Path(args.model_dir),
        Path(args.vad_model_dir),
        Path(args.punc_model_dir) if args.punc_model_dir else None,
        args.device,
        files,
        args.repeat,
        args.batch_size_s,
    )
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
