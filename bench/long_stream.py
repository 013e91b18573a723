"""One online stream of two hours, faster than real time: does a chunk cost the same at the end as at the start?

    python -m bench.long_stream --audio ../shared/audio/long/long_10min.wav                 # 2 h, full-size, int8
    python -m bench.long_stream --audio ../shared/audio/long/long_10min.wav --backend onnx      # its int8 export
    python -m bench.long_stream --audio ../shared/audio/long/long_10min.wav --hours 0.5 --fp32

The streaming Paraformer (`asr.stream_models.OnlineModel` in PyTorch, or with `--backend onnx`
`asr.onnx.online.OnnxOnlineModel` on the folder's export; one copy on one thread, as each of a CPU server's copies
runs) decodes the file looped to `--hours`, 600 ms at a time with one cache that is never reset: an online stream
whose speaker never stops, the case where a position or a cache that grows with the stream would show. Chunks go
in back to back (no real-time pacing).

A busy machine changes what a chunk costs over an hour (other processes come and go), so a control stream runs
beside it: after every `--control-every` chunks of the long stream, one chunk of a stream that starts afresh at
each block. Both are timed with the process's CPU clock, chunk by chunk. Printed per `--block-min` minutes of the
long stream's audio: its CPU seconds per audio second, the control's, and their ratio; at the end the last block
against the first, raw and load-corrected (target: at most 1.1x). Writes bench/results/long_stream-<stamp>.json.
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
CHUNK_S = CHUNK / 16000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.long_stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, required=True, help="a 16 kHz mono WAV file, looped")
    parser.add_argument("--online-model-dir", type=Path, default=ROOT / "models" / "full-online")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--block-min", type=float, default=10.0, help="minutes of audio per measured block")
    parser.add_argument("--control-every", type=int, default=4, help="long-stream chunks per control chunk")
    parser.add_argument("--fp32", action="store_true", help="the fp32 model (default: int8, ONLINE_QUANTIZE's default)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    args = parser.parse_args(argv)

    import soundfile as sf

    from asr.stream_models import OnlineModel

    audio, rate = sf.read(args.audio, dtype="float32")
    if rate != 16000 or audio.ndim != 1:
        parser.error(f"{args.audio} is {rate} Hz with shape {audio.shape}: a 16 kHz mono file is needed")
    if args.backend == "onnx":
        from asr.onnx.online import OnnxOnlineModel, find_online_onnx

        files = find_online_onnx(args.online_model_dir, quantize=not args.fp32)
        if files is None:
            parser.error(
                f"no ONNX export in {args.online_model_dir}: python -m asr.onnx.export --model-dir ... [--quantize]"
            )
        model = OnnxOnlineModel(str(args.online_model_dir), files, ncpu=1, workers=1)
    else:
        model = OnlineModel(str(args.online_model_dir), ncpu=1, quantize=not args.fp32, workers=1)

    def step(cache: dict, index: int) -> float:
        """CPU seconds of one chunk (the model runs on its worker thread; this one waits)."""
        start = index * CHUNK % (audio.size - CHUNK)
        began = time.process_time()
        model.step(
            audio[start : start + CHUNK],
            cache,
            is_final=False,
            chunk_size=(5, 10, 5),
            encoder_look_back=4,
            decoder_look_back=1,
        )
        return time.process_time() - began

    total_chunks = int(args.hours * 3600 / CHUNK_S)
    block_chunks = int(args.block_min * 60 / CHUNK_S)
    long_cache: dict = {}
    blocks: list[dict] = []
    long_cpu, control_cpu, control_chunks, control_cache, wall0 = 0.0, 0.0, 0, {}, time.perf_counter()
    for index in range(total_chunks):
        long_cpu += step(long_cache, index)
        if index % args.control_every == 0:
            control_cpu += step(control_cache, control_chunks)
            control_chunks += 1
        if (index + 1) % block_chunks:
            continue
        long_rate = long_cpu / (block_chunks * CHUNK_S)
        control_rate = control_cpu / (control_chunks * CHUNK_S)
        block = {
            "minute": round((index + 1) * CHUNK_S / 60, 1),
            "cpu_per_audio_s": round(long_rate, 4),
            "control_cpu_per_audio_s": round(control_rate, 4),
            "long_vs_control": round(long_rate / control_rate, 4),
            "wall_s": round(time.perf_counter() - wall0, 1),
            "encoder_start_idx": int(
                long_cache["onnx"].start_idx if "onnx" in long_cache else long_cache["encoder"]["start_idx"]
            ),
        }
        blocks.append(block)
        print(json.dumps(block), flush=True)
        long_cpu, control_cpu, control_chunks, control_cache, wall0 = 0.0, 0.0, 0, {}, time.perf_counter()
    raw = blocks[-1]["cpu_per_audio_s"] / blocks[0]["cpu_per_audio_s"]
    corrected = blocks[-1]["long_vs_control"] / blocks[0]["long_vs_control"]
    print(
        f"last block / first block: CPU {raw:.3f} raw, {corrected:.3f} against the control stream "
        f"(target <= 1.1: {'met' if corrected <= 1.1 else 'NOT met'}); {args.backend} {model.precision}, one thread"
    )
    out = ROOT / "bench" / "results" / f"long_stream-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "audio": str(args.audio),
        "model": str(args.online_model_dir),
        "backend": args.backend,
        "precision": model.precision,
        "hours": args.hours,
        "blocks": blocks,
        "ratio_last_first": round(raw, 4),
        "ratio_last_first_against_control": round(corrected, 4),
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
