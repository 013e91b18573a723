"""One online stream of two hours, faster than real time: does a chunk cost the same at the end as at the start?

    python -m bench.long_stream --audio ../shared/audio/long/long_10min.wav                 # 2 h, full-size, int8
    python -m bench.long_stream --audio ../shared/audio/long/long_10min.wav --hours 0.5 --fp32

The streaming Paraformer (`asr.stream_models.OnlineModel`, one copy on one thread, as each of a CPU server's copies
runs) decodes the file looped to `--hours`, 600 ms at a time with one cache that is never reset: an online stream
whose speaker never stops, the case where a position or a cache that grows with the stream would show. Chunks go
in back to back (no real-time pacing). Printed per `--block-min` minutes of audio: the process's CPU seconds per
audio second, and the last block against the first (target: at most 1.1x). Writes
bench/results/long_stream-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 9600  # 600 ms at 16 kHz: chunk_size (5, 10, 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.long_stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, required=True, help="a 16 kHz mono WAV file, looped")
    parser.add_argument("--online-model-dir", type=Path, default=ROOT / "models" / "full-online")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--block-min", type=float, default=10.0, help="minutes of audio per measured block")
    parser.add_argument("--fp32", action="store_true", help="the fp32 model (default: int8, ONLINE_QUANTIZE's default)")
    args = parser.parse_args(argv)

    import numpy as np
    import soundfile as sf

    from asr.stream_models import OnlineModel

    audio, rate = sf.read(args.audio, dtype="float32")
    if rate != 16000 or audio.ndim != 1:
        parser.error(f"{args.audio} is {rate} Hz with shape {audio.shape}: a 16 kHz mono file is needed")
    model = OnlineModel(str(args.online_model_dir), ncpu=1, quantize=not args.fp32, workers=1)
    total_chunks = int(args.hours * 3600 * 16000) // CHUNK
    block_chunks = int(args.block_min * 60 * 16000) // CHUNK
    cache: dict = {}
    blocks: list[dict] = []
    cpu0, wall0, chars, steps = time.process_time(), time.perf_counter(), 0, []
    for index in range(total_chunks):
        start = index * CHUNK % (audio.size - CHUNK)
        began = time.perf_counter()
        chars += len(
            model.step(
                audio[start : start + CHUNK],
                cache,
                is_final=False,
                chunk_size=(5, 10, 5),
                encoder_look_back=4,
                decoder_look_back=1,
            )
        )
        steps.append(time.perf_counter() - began)
        if (index + 1) % block_chunks == 0:
            cpu, wall = time.process_time(), time.perf_counter()
            audio_s = block_chunks * CHUNK / 16000
            block = {
                "minute": round((index + 1) * CHUNK / 16000 / 60, 1),
                "cpu_per_audio_s": round((cpu - cpu0) / audio_s, 4),
                "wall_per_audio_s": round((wall - wall0) / audio_s, 4),
                # The median step is what a chunk costs when nothing else on the machine gets in the way.
                "median_step_ms": round(float(np.median(steps)) * 1000, 2),
                "encoder_start_idx": int(cache["encoder"]["start_idx"]),
                "chars": chars,
            }
            blocks.append(block)
            print(json.dumps(block), flush=True)
            cpu0, wall0, chars, steps = cpu, wall, 0, []
    ratio = blocks[-1]["cpu_per_audio_s"] / blocks[0]["cpu_per_audio_s"]
    step_ratio = blocks[-1]["median_step_ms"] / blocks[0]["median_step_ms"]
    verdict = "met" if ratio <= 1.1 else "NOT met"
    print(
        f"last block / first block: CPU {ratio:.3f} (target <= 1.1: {verdict}), median step {step_ratio:.3f}; "
        f"{model.precision}, one thread"
    )
    out = ROOT / "bench" / "results" / f"long_stream-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "audio": str(args.audio),
                "model": str(args.online_model_dir),
                "precision": model.precision,
                "hours": args.hours,
                "blocks": blocks,
                "ratio_last_first": round(ratio, 4),
                "median_step_ratio_last_first": round(step_ratio, 4),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0 if np.isfinite(ratio) else 1


if __name__ == "__main__":
    sys.exit(main())
