"""Cross-request batching: throughput gain and latency cost, measured in one process, one run.

    python -m bench.batching                        # full-size model, torch, 5 concurrent requests of the 2-min WAV
    python -m bench.batching --backend onnx --clients 5 --rounds 2
    python -m bench.batching --inputs utterances    # the short clips of tests/data instead (one VAD segment each)

One engine is loaded; every round sends `--clients` concurrent requests with batching off
(BATCH_MAX_REQUESTS=1) and then on (= clients), in A-B-B-A order across rounds, so both sides see the same
machine. For each side: wall time of the round, audio seconds per second, mean request latency, how many
requests each model call carried, and whether every text equals the unbatched text of the same input.
The bare sequential time (the same inputs, one after another, batching off) is the baseline of the load
benchmark's "throughput vs sequential" ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import testmodels  # noqa: E402
from asr.audio import load_audio  # noqa: E402
from asr.engine import Engine, Transcription  # noqa: E402
from bench.engine import RESULTS, build_inputs  # noqa: E402
from config.settings import Settings  # noqa: E402


def concurrent_round(engine: Engine, audios: list, batch: int) -> dict[str, Any]:
    """All inputs at once from len(audios) threads, with the batcher set to `batch` requests per call."""
    assert engine.batcher is not None
    engine.batcher.max_requests = batch
    calls, jobs = engine.batcher.stats.calls, engine.batcher.stats.jobs
    started = time.perf_counter()

    def one(audio: Any) -> tuple[Transcription, float]:
        result = engine.transcribe(audio, record=False)
        return result, time.perf_counter() - started

    with ThreadPoolExecutor(len(audios)) as pool:
        answers = list(pool.map(one, audios))
    wall = time.perf_counter() - started
    stats = engine.batcher.stats
    return {
        "batch": batch,
        "wall_s": wall,
        "latencies_s": [t for _, t in answers],
        "texts": [r.text for r, _ in answers],
        "audio_s": sum(a.duration for a in audios),
        "model_calls": stats.calls - calls,
        "jobs": stats.jobs - jobs,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    model_dir, punc_dir = (Path(args.model_dir), None) if args.model_dir else testmodels.build_full()
    settings = Settings(
        _env_file=None,
        model_dir=model_dir,
        vad_model_dir=testmodels.fetch_vad(),
        punc_model_dir=punc_dir,
        enable_punc=punc_dir is not None,
        device="cpu",
        engine_backend=args.backend,
        batch_max_requests=1,
    )
    engine = Engine(settings.engine_config())
    engine.load()
    work = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    if args.inputs == "utterances":
        paths = sorted((Path(args.audio_dir) / "utterances").glob("*.wav"))
        paths = [paths[i % len(paths)] for i in range(args.clients)]
    else:
        paths = [build_inputs(Path(args.audio_dir), work, quick=True)["2 min"]] * args.clients
    audios = [load_audio(p) for p in paths]
    engine.transcribe(audios[0], record=False)  # warm-up
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": engine.backend,
        "model": str(model_dir),
        "inputs": [p.name for p in paths],
        **compare(engine, audios, args.rounds),
        "command": "python -m bench.batching " + " ".join(sys.argv[1:]),
    }


def compare(engine: Engine, audios: list, rounds: int = 1) -> dict[str, Any]:
    """len(audios) concurrent requests with batching off, then on, `rounds` times each (A-B-B-A), beside the
    same requests one after another. The engine is loaded and warm; its batcher limit is left as found."""
    assert engine.batcher is not None
    clients, configured = len(audios), engine.batcher.max_requests
    started = time.perf_counter()
    alone = [engine.transcribe(a, record=False).text for a in audios]
    sequential_s = time.perf_counter() - started

    results: list[dict[str, Any]] = []
    order = [1, clients, clients, 1] * rounds
    try:
        for batch in order[: 2 * rounds]:
            results.append(concurrent_round(engine, audios, batch))
            print(
                f"batch {batch}: {results[-1]['wall_s']:.1f} s, {results[-1]['jobs']} segment calls in "
                f"{results[-1]['model_calls']} model calls",
                flush=True,
            )
    finally:
        engine.batcher.max_requests = configured

    def side(batch: int) -> dict[str, Any]:
        runs = [r for r in results if r["batch"] == batch]
        best = min(runs, key=lambda r: r["wall_s"])
        return {
            "wall_s": best["wall_s"],
            "throughput": best["audio_s"] / best["wall_s"],
            "mean_latency_s": statistics.mean(best["latencies_s"]),
            "max_latency_s": max(best["latencies_s"]),
            "jobs_per_call": (best["jobs"] / best["model_calls"]) if best["model_calls"] else 1.0,
            "same_text": all(r["texts"] == alone for r in runs),
            "walls_s": [r["wall_s"] for r in runs],
        }

    off, on = side(1), side(clients)
    audio_s = sum(a.duration for a in audios)
    return {
        "clients": clients,
        "audio_s": audio_s,
        "sequential_s": sequential_s,
        "sequential_throughput": audio_s / sequential_s,
        "off": off,
        "on": on,
        "gain": on["throughput"] / off["throughput"],
        "latency_cost": on["mean_latency_s"] / off["mean_latency_s"],
        "on_vs_sequential": on["throughput"] / (audio_s / sequential_s),
    }


def to_markdown(r: dict[str, Any]) -> str:
    rows = [("batching off (1 request per call)", r["off"]), (f"batching on (up to {r['clients']})", r["on"])]
    lines = [
        f"{r['clients']} concurrent requests ({', '.join(sorted(set(r['inputs'])))}; {r['audio_s']:.0f} s of "
        f"audio per round), {r['backend']}, {r['date']}; command: `{r['command']}`",
        "",
        "| | round wall s | audio s / s | vs sequential | mean latency s | max latency s | requests per model "
        "call | text = unbatched |",
        "|---|---|---|---|---|---|---|---|",
        f"| sequential, one at a time | {r['sequential_s']:.1f} | {r['sequential_throughput']:.2f} | 1.00x | – | – "
        f"| 1 | – |",
    ]
    for name, s in rows:
        lines.append(
            f"| {name} | {s['wall_s']:.1f} | {s['throughput']:.2f} | "
            f"{s['throughput'] / r['sequential_throughput']:.2f}x | {s['mean_latency_s']:.1f} | "
            f"{s['max_latency_s']:.1f} | {s['jobs_per_call']:.2f} | {'yes' if s['same_text'] else 'NO'} |"
        )
    lines += [
        "",
        f"Batching gain (throughput on / off): **{r['gain']:.2f}x**; latency cost (mean latency on / off): "
        f"**{r['latency_cost']:.2f}x**.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"], help="engine backend (default torch)")
    parser.add_argument("--clients", type=int, default=5, help="concurrent requests per round (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side, in A-B-B-A order (default 2)")
    parser.add_argument(
        "--inputs",
        default="2min",
        choices=["2min", "utterances"],
        help="each client sends the 2-min WAV (default) or one of the short clips",
    )
    parser.add_argument(
        "--audio-dir",
        default=str(ROOT / "tests" / "data"),
        help="tests/data (default; the 2-min WAV is assembled from its clips) or ../shared/audio",
    )
    parser.add_argument("--model-dir", help="a SeACo-Paraformer folder (default: the full-size test model)")
    parser.add_argument("--results-dir", default=str(RESULTS), help="where the JSON and Markdown go")
    args = parser.parse_args(argv)
    report = run(args)
    markdown = to_markdown(report)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"batching-{stamp}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (results / f"batching-{stamp}.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
