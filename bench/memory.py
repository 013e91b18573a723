"""Where the service's memory goes: RSS of the server after loading and after N long requests, beside the
engine alone doing the same work in a process of its own, with glibc's MALLOC_ARENA_MAX on or off.

    python -m bench.memory                                   # tiny model, torch: server and engine alone
    python -m bench.memory --backend onnx --arena-max 1      # ONNX fp32 (exported on the fly), one malloc arena
    python -m bench.memory --no-heap-trim                    # before the engine handed idle memory back
    python -m bench.memory --model-dir models/full-seaco --punc-model-dir models/full-punc --onnx-dir DIR

Requests go through the API, `--concurrency` at a time, each the same `--seconds` WAV (3 min by default). The
engine-alone run loads `asr.Engine` with the same settings and transcribes the same file with the same number
of threads, so the difference is what the service adds (HTTP, uploads, Gradio, the worker threads' arenas).
Writes bench/results/memory-<stamp>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.engine import save  # noqa: E402
from bench.harness import (
    ModelFolders,
    Server,
    free_port,
    resolve_models,
    server_env,
    stop_app,  # noqa: E402
    wait_healthy,
)
from bench.upload_burst import build_file  # noqa: E402

logger = logging.getLogger(__name__)

MB = 2**20


def rss_mb(pid: int) -> dict[str, float]:
    """RSS and USS (memory only this process holds) in MiB."""
    info = psutil.Process(pid).memory_full_info()
    return {"rss": round(info.rss / MB, 1), "uss": round(info.uss / MB, 1)}


def onnx_export(models: ModelFolders, out: Path) -> Path:
    """The ASR model exported (fp32) into `out`, unless it is already there."""
    if not (out / "model.onnx").exists():
        from asr.onnx.export import export_model

        export_model(models.asr, output_dir=out, quantize=False)
    return out


def settings_env(args: argparse.Namespace, models: ModelFolders, work: Path) -> dict[str, str]:
    extra = {"QUEUE_MAX_SIZE": "50", "NCPU": str(args.ncpu)}
    if args.backend == "onnx":
        extra["ONNX_MODEL_DIR"] = str(args.onnx_dir)
    if args.arena_max:
        extra["MALLOC_ARENA_MAX"] = str(args.arena_max)
    if not args.heap_trim:
        extra["HEAP_TRIM"] = "false"
    return server_env(models, work, "cpu", args.backend, **extra)


def run_server(args: argparse.Namespace, models: ModelFolders, work: Path, audio: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    env = settings_env(args, models, work)
    port = free_port()
    log = work / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", work / "uploads", work / "outputs", lambda: proc.pid, proc, log)
    try:
        wait_healthy(server.url, 600, alive=lambda: proc.poll() is None)
        time.sleep(2)
        loaded = rss_mb(proc.pid)
        data = audio.read_bytes()

        def one(_: int) -> tuple[int, float]:
            started = time.monotonic()
            response = httpx.post(
                server.url + "/v1/audio/transcriptions", timeout=900, files={"file": (audio.name, data, "audio/wav")}
            )
            return response.status_code, time.monotonic() - started

        started = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            outcomes = list(pool.map(one, range(args.requests)))
        wall = time.monotonic() - started
        after = rss_mb(proc.pid)
        time.sleep(5)
        settled = rss_mb(proc.pid)
        backend = httpx.get(server.url + "/health").json().get("backend")
    finally:
        stop_app(server)
    ok = sum(1 for status, _ in outcomes if status == 200)
    return {
        "loaded": loaded,
        "after": after,
        "after_5s_idle": settled,
        "ok": ok,
        "wall_s": round(wall, 1),
        "mean_latency_s": round(sum(t for _, t in outcomes) / len(outcomes), 2),
        "backend": backend,
    }


ENGINE_ALONE = """
import json, os, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, os.getcwd())
import psutil
from asr.engine import Engine
from config.settings import Settings
engine = Engine(Settings().engine_config())
engine.load()
me = psutil.Process()
def mb():
    info = me.memory_full_info()
    return {"rss": round(info.rss / 2**20, 1), "uss": round(info.uss / 2**20, 1)}
loaded = mb()
path, requests, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
started = time.monotonic()
with ThreadPoolExecutor(concurrency) as pool:
    list(pool.map(lambda _: engine.transcribe(path), range(requests)))
wall = time.monotonic() - started
print(json.dumps({"loaded": loaded, "after": mb(), "backend": engine.backend, "wall_s": round(wall, 1),
                  "peak_rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def run_engine_alone(args: argparse.Namespace, models: ModelFolders, work: Path, audio: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    env = settings_env(args, models, work)
    result = subprocess.run(
        [sys.executable, "-c", ENGINE_ALONE, str(audio), str(args.requests), str(args.concurrency)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(result: dict[str, Any]) -> str:
    s, e = result["server"], result.get("engine_alone")
    lines = [
        f"# Memory, {result['date']}",
        "",
        f"{result['model']}, backend {result['backend']}, MALLOC_ARENA_MAX {result['arena_max'] or 'unset'}, "
        f"heap trim {'on' if result.get('heap_trim', True) else 'off'}, "
        f"{result['requests']} requests of a {result['seconds']} s WAV, {result['concurrency']} at a time, "
        f"NCPU {result['ncpu']}; load average {result['load_avg']}.",
        "",
        "| process | RSS loaded MiB | RSS after MiB | USS after MiB | after 5 s idle MiB | wall s |",
        "|---|---|---|---|---|---|",
        f"| server | {s['loaded']['rss']} | {s['after']['rss']} | {s['after']['uss']} | "
        f"{s['after_5s_idle']['rss']} | {s['wall_s']} |",
    ]
    if e:
        lines.append(
            f"| engine alone | {e['loaded']['rss']} | {e['after']['rss']} | {e['after']['uss']} | | {e['wall_s']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RSS of the server and of the engine alone after long requests.")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--arena-max", type=int, default=0, help="MALLOC_ARENA_MAX for both processes (0: unset)")
    parser.add_argument(
        "--no-heap-trim",
        dest="heap_trim",
        action="store_false",
        help="HEAP_TRIM=false for both processes: the engine as it was before the idle trim",
    )
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=180, help="length of the WAV each request sends (180)")
    parser.add_argument("--ncpu", type=int, default=0, help="NCPU for both processes (0: all cores)")
    parser.add_argument("--no-engine-alone", dest="engine_alone", action="store_false")
    parser.add_argument("--model-dir")
    parser.add_argument("--vad-model-dir")
    parser.add_argument("--punc-model-dir")
    parser.add_argument("--onnx-dir", type=Path, help="exported ASR files (default: exported into a temp folder)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    models = resolve_models(args.model_dir, args.vad_model_dir, args.punc_model_dir, tiny=not args.model_dir)
    work = Path(tempfile.mkdtemp(prefix="memory-"))
    if args.backend == "onnx":
        args.onnx_dir = onnx_export(models, args.onnx_dir or work / "onnx")
    audio = build_file(work, args.seconds)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": models.label,
        "backend": args.backend,
        "arena_max": args.arena_max,
        "heap_trim": args.heap_trim,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "ncpu": args.ncpu,
    }
    result["server"] = run_server(args, models, work / "server", audio)
    if args.engine_alone:
        result["engine_alone"] = run_engine_alone(args, models, work / "engine", audio)
    result["load_avg"] = [round(x, 1) for x in os.getloadavg()]
    save(f"memory-{datetime.now().strftime('%Y%m%d-%H%M%S')}", result, markdown(result), Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
