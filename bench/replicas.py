"""Throughput through nginx with 1 and with 2 replicas, measured in one run.

    python -m bench.replicas                         # tiny models on CPU, 120 requests, 4 at a time
    python -m bench.replicas --requests 80 --concurrency 8 --model-dir models/full-seaco --punc-model-dir models/full-punc

Starts two replicas with `run.sh --replicas 2 start` and two nginx instances from `run.sh nginx-config --standalone`:
one sends only to replica 0, the other to both. The same requests (POST /v1/audio/transcriptions with the clips in
tests/data/utterances, round robin) go through the first, then through the second, against the same warm
processes, in alternating rounds (the median round is reported: the cores may be shared). Prints a Markdown table and writes bench/results/replicas-<time>.json and .md.
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
CLIPS = sorted((ROOT / "tests" / "data" / "utterances").glob("*.wav"))


def free_port(pair: bool = False) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def run_sh(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(ROOT / "run.sh"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise SystemExit(f"run.sh {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def start_nginx(nginx: str, folder: Path, upstreams: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    run_sh(
        "nginx-config", "--standalone", str(folder), "--listen", f"127.0.0.1:{port}", "--upstreams", upstreams, env=env
    )
    proc = subprocess.Popen(
        [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", f"daemon off; pid {folder}/nginx.pid;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"nginx in {folder} did not come up (see {folder}/error.log)")


def measure(url: str, requests: int, concurrency: int) -> dict[str, float]:
    """`requests` transcriptions, `concurrency` at a time; wall time, requests/s, audio s per s, latencies."""
    clips = [(p.name, p.read_bytes(), sf.info(p).duration) for p in CLIPS]
    todo = list(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    audio = [0.0]
    failed = [0]

    def worker() -> None:
        with httpx.Client(timeout=300) as client:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                name, data, duration = clips[i % len(clips)]
                started = time.perf_counter()
                r = client.post(url + "/v1/audio/transcriptions", files={"file": (name, data, "audio/wav")})
                took = time.perf_counter() - started
                with lock:
                    if r.status_code == 200:
                        latencies.append(took)
                        audio[0] += duration
                    else:
                        failed[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "requests": requests,
        "failed": failed[0],
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2),
        "audio_s_per_s": round(audio[0] / wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--ncpu", default="1", help="NCPU per replica (torch threads; default 1)")
    parser.add_argument("--model-dir", default="models/tiny-seaco")
    parser.add_argument("--vad-model-dir", default="models/fsmn-vad")
    parser.add_argument("--punc-model-dir", default="models/tiny-punc")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not nginx:
        raise SystemExit("nginx is not installed (apt-get install nginx)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    port = free_port(pair=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "WATCHDOG_", "API_KEYS"))}
    env.update(
        ENV_FILE=str(tmp / "no.env"),
        LOG_DIR=str(tmp / "logs"),
        TEMP_DIR=str(tmp / "uploads"),
        OUTPUT_DIR=str(tmp / "outputs"),
        JOBS_DIR=str(tmp / "jobs"),
        HOST="127.0.0.1",
        PORT=str(port),
        REPLICAS="2",
        DEVICE="cpu",
        NCPU=args.ncpu,
        MODEL_DIR=args.model_dir,
        VAD_MODEL_DIR=args.vad_model_dir,
        PUNC_MODEL_DIR=args.punc_model_dir,
        START_TIMEOUT="600",
        QUEUE_MAX_SIZE="100",
    )
    procs: list[subprocess.Popen] = []
    results: dict[str, dict] = {}
    backend = "?"
    try:
        print(run_sh("start", env=env, timeout=700).strip())
        one, url1 = start_nginx(nginx, tmp / "nginx-1", f"127.0.0.1:{port}", env)
        two, url2 = start_nginx(nginx, tmp / "nginx-2", f"127.0.0.1:{port},127.0.0.1:{port + 1}", env)
        procs += [one, two]
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
        backend = f"{health.get('backend')} on {health.get('device')}"
        measure(url2, 2 * args.concurrency, args.concurrency)  # warm both replicas up
        # Alternate 1, 2, 1, 2, ... so a change in the machine's load (shared cores) hits both alike; the round
        # with the median requests/s is reported for each.
        rounds: dict[str, list[dict[str, float]]] = {"1 replica": [], "2 replicas": []}
        for i in range(args.rounds):
            for name, url in (("1 replica", url1), ("2 replicas", url2)):
                rounds[name].append(measure(url, args.requests, args.concurrency))
                print(f"round {i + 1}: {name}: {rounds[name][-1]}", flush=True)
        for name, runs in rounds.items():
            results[name] = sorted(runs, key=lambda r: r["requests_per_s"])[len(runs) // 2]
            results[name]["rounds_requests_per_s"] = [r["requests_per_s"] for r in runs]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
        subprocess.run([str(ROOT / "run.sh"), "stop"], cwd=ROOT, env=env, capture_output=True, timeout=120)

    speedup = results["2 replicas"]["requests_per_s"] / results["1 replica"]["requests_per_s"]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    meta = {
        "when": stamp,
        "cpu_cores": os.cpu_count(),
        "machine": platform.machine(),
        "model_dir": args.model_dir,
        "backend": backend,
        "rounds": args.rounds,
        "ncpu_per_replica": args.ncpu,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "clips": [p.name for p in CLIPS],
        "speedup": round(speedup, 2),
    }
    lines = [
        f"Throughput through nginx, {args.requests} POST /v1/audio/transcriptions ({len(CLIPS)} clips, "
        f"round robin), {args.concurrency} at a time; {os.cpu_count()} CPU cores, NCPU={args.ncpu} per replica, "
        f"model {args.model_dir} ({backend}); median of {args.rounds} alternating rounds.",
        "",
        "| replicas | requests/s | audio s per s | p50 latency | p95 latency | failed | requests/s per round |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['requests_per_s']} | {r['audio_s_per_s']} | {r['latency_p50_s']} s | "
            f"{r['latency_p95_s']} s | {r['failed']} | {', '.join(map(str, r['rounds_requests_per_s']))} |"
        )
    lines += ["", f"2 replicas / 1 replica: {speedup:.2f}x"]
    text = "\n".join(lines)
    print("\n" + text)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"replicas-{stamp}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    (out / f"replicas-{stamp}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
