"""Real-time streams over FunASR's WebSocket protocol: latency and CPU cost against a running service.

    python -m bench.streams --url ws://127.0.0.1:7860 --streams 1 2 4 8 --seconds 600 --pid $(cat logs/app.pid)
    python -m bench.streams --streams 4 --seconds 120 --uploads tests/data/utterances/funasr_long.wav

For each count N, N concurrent 2pass streams send 16-bit PCM in 60 ms frames at real-time pace (each frame on an
absolute schedule, so a slow server does not slow the sender down). The audio is `--audio` with 2 s pauses, looped
to `--seconds`; stream i of N starts i/N of the way into that loop, so the streams are N speakers who do not
pause at the same moments (streams in lockstep would end their sentences together, and every final would land at
once). Measured at the client:

- partial latency: from sending the frame that completes a 600 ms chunk to receiving its `2pass-online` answer
  (answers say how far into the audio they go: `end_ms`);
- final latency: from sending the frame that holds a sentence's end (as the VAD cut it) to receiving its
  `2pass-offline` answer; this includes the VAD's end-of-speech wait (the silence it needs to close a sentence);
- with `--pid` (the server's process): CPU seconds per second of audio streamed, per minute of the run, to show
  the cost per chunk stays flat as the streams grow long.

With `--uploads FILE`, one client posts FILE to /v1/audio/transcriptions in a loop during the streams and once
alone before them: its throughput with streams / alone is the share file jobs keep.
Results go to bench/results/streams-<time>.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import websockets

from bench.harness import project_path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FRAME_MS = 60
CHUNK_MS = 600


def build_audio(path: Path, seconds: float, start_fraction: float = 0.0) -> bytes:
    """`seconds` of the clip and a 2 s pause, looped, starting `start_fraction` of the way into the loop."""
    clip, rate = sf.read(path, dtype="int16")
    if rate != 16000 or clip.ndim != 1:
        raise SystemExit(f"{path}: use a 16 kHz mono WAV")
    one = np.concatenate([clip, np.zeros(32000, dtype=np.int16)])
    frame = 16 * FRAME_MS
    start = int(one.size * start_fraction) // frame * frame
    total = int(seconds * 16000)
    return np.tile(one, (start + total) // one.size + 1)[start : start + total].tobytes()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


async def one_stream(url: str, audio: bytes, index: int, results: dict[str, list]) -> None:
    frame = 16 * FRAME_MS * 2  # bytes per frame
    sent_at: list[float] = []  # send time of each frame
    async with websockets.connect(url, subprotocols=["binary"], max_size=None, ping_interval=None) as ws:
        await ws.send(
            json.dumps(
                {
                    "mode": "2pass",
                    "wav_name": f"bench{index}",
                    "wav_format": "pcm",
                    "audio_fs": 16000,
                    "chunk_size": [5, 10, 5],
                    "chunk_interval": 10,
                    "is_speaking": True,
                    "hotwords": "",
                }
            )
        )

        def frame_time(end_ms: int) -> float | None:
            i = max(0, -(-end_ms // FRAME_MS) - 1)  # the frame that holds the sample at end_ms
            return sent_at[i] if i < len(sent_at) else None

        async def receive() -> None:
            async for message in ws:
                now = time.perf_counter()
                answer = json.loads(message)
                if "error" in answer:
                    results["errors"].append(answer["error"])
                    return
                sent = frame_time(int(answer.get("end_ms", 0)))
                if answer["mode"] == "2pass-online" and sent is not None:
                    results["partial"].append(now - sent)
                elif (
                    answer["mode"] == "2pass-offline"
                    and answer["text"]
                    and sent is not None
                    and not answer.get("is_end")
                ):
                    results["final"].append(now - sent)
                if answer.get("is_end"):
                    return

        receiver = asyncio.create_task(receive())
        start = time.perf_counter() + 0.01 * index  # spread the streams' frames a little
        for i in range(0, len(audio), frame):
            delay = start + len(sent_at) * FRAME_MS / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(audio[i : i + frame])
            sent_at.append(time.perf_counter())
            results["audio_s"][0] += len(audio[i : i + frame]) / 32000
        await ws.send(json.dumps({"is_speaking": False}))
        await receiver


def cpu_sampler(pid: int | None, results: dict[str, list], stop: threading.Event, window_s: float) -> None:
    if pid is None:
        return
    import psutil

    process = psutil.Process(pid)
    last_cpu = sum(process.cpu_times()[:2])
    last_audio = results["audio_s"][0]
    while not stop.wait(window_s):
        cpu = sum(process.cpu_times()[:2])
        audio = results["audio_s"][0]
        if audio > last_audio:
            results["cpu_per_audio_s"].append((cpu - last_cpu) / (audio - last_audio))
        last_cpu, last_audio = cpu, audio


def uploads_loop(base: str, path: Path, stop: threading.Event, done: list[float]) -> None:
    data = path.read_bytes()
    with httpx.Client(timeout=900) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = client.post(base + "/v1/audio/transcriptions", files={"file": (path.name, data)})
            if response.status_code == 200:
                done.append(time.perf_counter() - started)


def run_count(args: argparse.Namespace, n: int) -> dict[str, Any]:
    results: dict[str, list] = {"partial": [], "final": [], "errors": [], "audio_s": [0.0], "cpu_per_audio_s": []}
    stop = threading.Event()
    sampler = threading.Thread(target=cpu_sampler, args=(args.pid, results, stop, args.cpu_window), daemon=True)
    sampler.start()
    uploads: list[float] = []
    uploader = None
    if args.uploads:
        uploader = threading.Thread(
            target=uploads_loop, args=(http_base(args.url), args.uploads, stop, uploads), daemon=True
        )
        uploader.start()
    started = time.perf_counter()

    async def all_streams() -> None:
        audios = [build_audio(args.audio, args.seconds, i / n) for i in range(n)]
        await asyncio.gather(*[one_stream(args.url, audios[i], i, results) for i in range(n)])

    asyncio.run(all_streams())
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    if uploader:
        uploader.join()
    return {
        "streams": n,
        "wall_s": round(wall, 1),
        "audio_s": round(results["audio_s"][0], 1),
        "partials": len(results["partial"]),
        "finals": len(results["final"]),
        "errors": results["errors"][:5],
        "partial_p50_s": percentile(results["partial"], 50),
        "partial_p95_s": percentile(results["partial"], 95),
        "final_p50_s": percentile(results["final"], 50),
        "final_p95_s": percentile(results["final"], 95),
        "cpu_per_audio_s_by_window": [round(x, 3) for x in results["cpu_per_audio_s"]],
        "uploads_done": len(uploads),
        "upload_mean_s": statistics.mean(uploads) if uploads else None,
    }


def http_base(url: str) -> str:
    return url.replace("ws://", "http://").replace("wss://", "https://").rstrip("/")


def alone_uploads(args: argparse.Namespace) -> float | None:
    if not args.uploads:
        return None
    data = args.uploads.read_bytes()
    times = []
    with httpx.Client(timeout=900) as client:
        for _ in range(2):
            started = time.perf_counter()
            client.post(
                http_base(args.url) + "/v1/audio/transcriptions", files={"file": (args.uploads.name, data)}
            ).raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.mean(times)


def wait_ready(base: str, timeout_s: float = 600) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(base + "/health", timeout=5).json().get("status") == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise SystemExit(f"{base}/health never said ok")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:7860", help="the service's WebSocket address")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8], help="concurrent stream counts")
    parser.add_argument("--seconds", type=float, default=600.0, help="audio per stream (default 600: 10 minutes)")
    parser.add_argument(
        "--audio",
        type=Path,
        default=ROOT / "tests" / "data" / "utterances" / "funasr_long.wav",
        help="16 kHz mono WAV, looped with 2 s pauses",
    )
    parser.add_argument("--pid", type=int, help="the server's process id, to measure its CPU per audio second")
    parser.add_argument("--cpu-window", type=float, default=60.0, help="seconds per CPU sample (default 60)")
    parser.add_argument("--uploads", type=Path, help="a file to upload in a loop during the streams")
    parser.add_argument("--label", default="", help="a note stored with the results (models, machine)")
    args = parser.parse_args(argv)

    wait_ready(http_base(args.url))
    # One short stream first: the streaming model loads on the first stream, which is not what is measured.
    asyncio.run(
        one_stream(
            args.url, build_audio(args.audio, 3.0), 0, {"partial": [], "final": [], "errors": [], "audio_s": [0.0]}
        )
    )
    alone = alone_uploads(args)
    runs = [run_count(args, n) for n in args.streams]
    for run in runs:
        if alone and run["upload_mean_s"]:
            run["upload_share_vs_alone"] = round(alone / run["upload_mean_s"], 3)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": args.label,
        "url": args.url,
        "seconds": args.seconds,
        "audio": project_path(args.audio),
        "upload_alone_s": alone,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"streams-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(
        "| streams | audio s | partial p50 / p95 (s) | final p50 / p95 (s) | CPU s per audio s, by window | "
        "uploads vs alone |"
    )
    print("|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run['streams']} | {run['audio_s']} | {fmt(run['partial_p50_s'])} / {fmt(run['partial_p95_s'])} | "
            f"{fmt(run['final_p50_s'])} / {fmt(run['final_p95_s'])} | "
            f"{', '.join(map(str, run['cpu_per_audio_s_by_window'])) or '-'} | "
            f"{run.get('upload_share_vs_alone', '-')} |"
        )
    print(f"results: {out}")
    return 0 if not any(run["errors"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
