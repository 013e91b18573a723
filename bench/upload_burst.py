"""/health while uploads pour in: N clients post the same large file to the API at once, while a separate
process polls /health and times every answer.

    python -m bench.upload_burst                          # 30 clients, a 3-min WAV (5.8 MB), tiny model
    python -m bench.upload_burst --route ui               # the same through the UI's upload (gradio_client)
    python -m bench.upload_burst --model-dir models/full-seaco --backend onnx

The poller runs in its own process so that the benchmark's own upload threads do not slow the measurement.
The server runs with asyncio's debug mode on (`--loop-debug`, default on), which logs every event-loop step
over `--slow-ms`: those lines say what held the loop. Writes bench/results/upload-burst-<stamp>.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.engine import save  # noqa: E402
from bench.harness import Server, free_port, resolve_models, server_env, stop_app, wait_healthy  # noqa: E402

logger = logging.getLogger(__name__)

ROUTE = "/v1/audio/transcriptions"


def build_file(folder: Path, seconds: int) -> Path:
    """`seconds` of the test utterances, 16 kHz 16-bit mono WAV (3 min = 5.76 MB)."""
    clips = [sf.read(p, dtype="float32")[0] for p in sorted((ROOT / "tests/data/utterances").glob("*.wav"))]
    audio = np.concatenate([np.concatenate([c, np.zeros(6400, np.float32)]) for c in clips])
    audio = np.tile(audio, seconds * 16000 // audio.size + 1)[: seconds * 16000]
    path = folder / f"speech_{seconds}s.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


def poll_health(url: str, interval: float, ready: Any, stop: Any, out: Any) -> None:
    """In a child process: GET /health every `interval` s on one keep-alive connection; (t, ms, status) rows."""
    rows = []
    with httpx.Client(timeout=10.0) as client:
        client.get(url + "/health")
        ready.set()
        while not stop.is_set():
            started = time.time()
            try:
                status = client.get(url + "/health").status_code
            except httpx.HTTPError:
                status = 0
            rows.append((started, (time.time() - started) * 1000, status))
            time.sleep(max(0.0, interval - (time.time() - started)))
    out.put(rows)


def post_api(url: str, path: Path, gate: threading.Barrier) -> tuple[float, float, int]:
    data = path.read_bytes()
    with httpx.Client(timeout=600.0) as client:
        gate.wait()
        started = time.time()
        try:
            status = client.post(url + ROUTE, files={"file": (path.name, data, "audio/wav")}).status_code
        except httpx.HTTPError:
            status = 0
    return started, time.time() - started, status


def post_ui(url: str, path: Path, gate: threading.Barrier) -> tuple[float, float, int]:
    from gradio_client import Client, handle_file
    from gradio_client.utils import QueueError

    client = Client(url, verbose=False)
    gate.wait()
    started = time.time()
    try:
        client.predict(handle_file(str(path)), "", 1, api_name="/transcribe")
        status = 200
    except QueueError:
        status = 503
    except Exception:  # noqa: BLE001 - counted, the log says why
        logger.exception("UI request failed")
        status = 0
    return started, time.time() - started, status


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def slow_steps(log: str) -> list[dict[str, Any]]:
    """asyncio debug mode's 'Executing <...> took N seconds' lines: what held the event loop, longest first."""
    found = []
    for match in re.finditer(r"Executing (<.*?>) took ([0-9.]+) seconds", log):
        what = re.sub(r" at 0x[0-9a-f]+| created at .*", "", match.group(1))
        found.append({"ms": float(match.group(2)) * 1000, "step": what[:200]})
    return sorted(found, key=lambda s: -s["ms"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = resolve_models(args.model_dir, args.vad_model_dir, args.punc_model_dir, tiny=not args.model_dir)
    work = Path(tempfile.mkdtemp(prefix="upload-burst-"))
    path = build_file(work, args.seconds)
    extra = {"QUEUE_MAX_SIZE": str(args.queue_max_size), "LOG_LEVEL": "INFO"}
    if args.loop_debug:
        extra.update(PYTHONASYNCIODEBUG="1", ASYNCIO_SLOW_MS=str(args.slow_ms))
    env = server_env(models, work, "cpu", args.backend, **extra)
    port = free_port()
    log = work / "server.log"
    # The app under asyncio debug mode, with our slow-step threshold (asyncio sets 100 ms in the loop's
    # __init__, so the attribute is made a class property that keeps ours).
    launcher = (
        "import asyncio.base_events as b, os, runpy, sys\n"
        "ms = float(os.environ.get('ASYNCIO_SLOW_MS', '100')) / 1000\n"
        "b.BaseEventLoop.slow_callback_duration = property(lambda self: ms, lambda self, value: None)\n"
        "sys.argv = ['app.py'] + sys.argv[1:]\n"
        "runpy.run_path('app.py', run_name='__main__')\n"
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", work / "uploads", work / "outputs", lambda: proc.pid, proc, log)
    try:
        wait_healthy(server.url, 300, alive=lambda: proc.poll() is None)
        ctx = multiprocessing.get_context("spawn")
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        poller = ctx.Process(target=poll_health, args=(server.url, args.poll_ms / 1000, ready, stop, out), daemon=True)
        poller.start()
        ready.wait(60)
        time.sleep(args.idle_s)  # the idle baseline
        gate = threading.Barrier(args.clients)
        post = post_api if args.route == "api" else post_ui
        results: list[tuple[float, float, int]] = []
        lock = threading.Lock()

        def client() -> None:
            outcome = post(server.url, path, gate)
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        deadline = time.time() + (args.window_s or 1e9)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.time()))
        time.sleep(0.0 if args.window_s else 1.0)
        stop.set()
        rows = out.get(timeout=60)
        poller.join(timeout=10)
        log_text = log.read_text(errors="replace")
    finally:
        stop_app(server)
    for thread in threads:  # with --window-s, the unfinished ones end when the server stops
        thread.join(timeout=30)
    burst_start = min(r[0] for r in results)
    uploads_end = (
        burst_start + max(r[1] for r in results if r[2] == 503) if any(r[2] == 503 for r in results) else burst_start
    )
    burst_end = max(r[0] + r[1] for r in results) if not args.window_s else burst_start + args.window_s
    idle = [ms for t, ms, _ in rows if t < burst_start]
    during = [ms for t, ms, _ in rows if burst_start <= t <= burst_end]
    first_10s = [ms for t, ms, _ in rows if burst_start <= t <= burst_start + 10]
    codes: dict[str, int] = {}
    for _, _, status in results:
        codes[str(status)] = codes.get(str(status), 0) + 1
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "route": args.route,
        "clients": args.clients,
        "file_mb": round(path.stat().st_size / 1e6, 2),
        "model": models.label,
        "backend": args.backend,
        "queue_max_size": args.queue_max_size,
        "cpus": os.cpu_count(),
        "load_avg_before": os.getloadavg(),
        "responses": codes,
        "refusals_answered_within_s": round(uploads_end - burst_start, 3),
        "burst_s": round(burst_end - burst_start, 1),
        "window_s": args.window_s,
        "health_idle_ms": stats(idle),
        "health_burst_ms": stats(during),
        "health_first_10s_ms": stats(first_10s),
        "health_failures": sum(1 for _, _, s in rows if s != 200 and s != 503),
        "slow_loop_steps": slow_steps(log_text)[:15],
        "slow_loop_steps_total": len(slow_steps(log_text)),
    }


def markdown(result: dict[str, Any]) -> str:
    def row(name: str, s: dict[str, float]) -> str:
        if not s.get("n"):
            return f"| {name} | 0 | | | | |"
        return f"| {name} | {s['n']} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | {s['max']:.1f} |"

    lines = [
        f"# /health under an upload burst, {result['date']}",
        "",
        f"{result['clients']} clients post a {result['file_mb']} MB WAV through the {result['route']} at once; "
        f"{result['model']}, backend {result['backend']}, QUEUE_MAX_SIZE {result['queue_max_size']}. "
        f"Responses: {result['responses']}; the burst lasted {result['burst_s']} s.",
        "",
        "| /health | n | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
        row("idle", result["health_idle_ms"]),
        row("first 10 s of the burst", result["health_first_10s_ms"]),
        row(
            "whole burst" if not result["window_s"] else f"first {result['window_s']:.0f} s", result["health_burst_ms"]
        ),
        "",
        f"Event-loop steps over the threshold: {result['slow_loop_steps_total']}",
    ]
    for step in result["slow_loop_steps"][:8]:
        lines.append(f"- {step['ms']:.0f} ms: `{step['step']}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="/health latency while many clients upload a large file at once.")
    parser.add_argument("--clients", type=int, default=30, help="uploads sent at once (30)")
    parser.add_argument("--seconds", type=int, default=180, help="length of the WAV (180 s = 5.76 MB)")
    parser.add_argument("--route", choices=("api", "ui"), default="api", help="the API (default) or the UI upload")
    parser.add_argument("--queue-max-size", type=int, default=20, help="the server's QUEUE_MAX_SIZE (20)")
    parser.add_argument("--poll-ms", type=float, default=20, help="/health poll interval (20 ms)")
    parser.add_argument("--idle-s", type=float, default=2.0, help="idle polling before the burst (2 s)")
    parser.add_argument(
        "--window-s",
        type=float,
        default=0,
        help="stop after this many seconds of the burst (0: when every request is answered)",
    )
    parser.add_argument("--slow-ms", type=float, default=20, help="log event-loop steps longer than this (20 ms)")
    parser.add_argument(
        "--no-loop-debug",
        dest="loop_debug",
        action="store_false",
        help="run the server without asyncio debug mode (it costs a little itself)",
    )
    parser.add_argument("--model-dir", help="ASR model folder (default: the tiny test model)")
    parser.add_argument("--vad-model-dir")
    parser.add_argument("--punc-model-dir")
    parser.add_argument("--backend", default="torch", help="ENGINE_BACKEND for the server (torch)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for the JSON and Markdown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(args)
    save(f"upload-burst-{datetime.now().strftime('%Y%m%d-%H%M%S')}", result, markdown(result), Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
