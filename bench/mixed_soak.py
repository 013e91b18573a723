"""Everything at once for `--minutes`, against a running service, with what grows watched.

    python -m bench.mixed_soak --url http://127.0.0.1:7860 --server-pid "$(cat logs/app.pid)" --minutes 10

The mix: 2 API clients sending odd and broken files (tests/data/bad, every format of tests/data/formats, the
utterances) to /v1/audio/transcriptions back to back, a UI client (gradio_client, /transcribe), 2pass streams
of FunASR's protocol at real-time pace one after another, and a job of three files every 20 s (submitted,
then polled until it ends). The server's RSS, open files and threads are sampled every 2 s; growth compares
the mean of the first and the last tenth of the samples after a warm-up (the first 20 %).
Targets: 0 server errors, RSS growth under 1 %, open files constant (the same after warm-up as at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import UserClient  # noqa: E402
from bench.streams import build_audio, one_stream  # noqa: E402

DATA = ROOT / "tests" / "data"
WARMUP = 0.2


def odd_files() -> list[Path]:
    return (
        sorted((DATA / "bad").iterdir())
        + sorted((DATA / "formats").iterdir())
        + sorted((DATA / "utterances").glob("*.wav"))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    end = time.monotonic() + args.minutes * 60
    counts: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def count(kind: str, status: int | str) -> None:
        with lock:
            counts[f"{kind} {status}"] += 1
            if isinstance(status, int) and status >= 500 or status == "error":
                errors.append(f"{kind} {status}")

    def api_client(offset: int) -> None:
        files = odd_files()
        with httpx.Client(timeout=300) as http:
            for i in itertools.count(offset):
                if time.monotonic() >= end:
                    return
                path = files[i % len(files)]
                answer = http.post(f"{base}/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())})
                count("api", answer.status_code)

    def ui_client() -> None:
        client = UserClient(base, time.monotonic(), "ui")
        utterances = sorted((DATA / "utterances").glob("*.wav"))
        try:
            for i in itertools.count():
                if time.monotonic() >= end:
                    return
                outcome = client.single(utterances[i % len(utterances)])
                count("ui", outcome.status)
        finally:
            client.close()

    def streams() -> None:
        audio = build_audio(DATA / "utterances" / "funasr_asr_example.wav", 12)
        url = base.replace("http://", "ws://")
        for i in itertools.count():
            if time.monotonic() >= end:
                return
            results: dict[str, list] = {"partial": [], "final": [], "errors": [], "audio_s": [0.0]}
            try:
                asyncio.run(one_stream(url, audio, i, results))
                count("stream", "error" if results["errors"] else "ok")
            except Exception as exc:  # noqa: BLE001 (counted as a failure)
                count("stream", "error")
                errors.append(repr(exc))

    def jobs() -> None:
        utterances = sorted((DATA / "utterances").glob("*.wav"))
        with httpx.Client(timeout=120) as http:
            for i in itertools.count():
                started = time.monotonic()
                if started >= end:
                    return
                picked = [utterances[(3 * i + k) % len(utterances)] for k in range(3)]
                answer = http.post(f"{base}/v1/jobs", files=[("file", (p.name, p.read_bytes())) for p in picked])
                if answer.status_code != 202:
                    count("job", answer.status_code)
                else:
                    job_id = answer.json()["id"]
                    while (state := http.get(f"{base}/v1/jobs/{job_id}").json()["status"]) in ("queued", "running"):
                        time.sleep(1)
                    count("job", state)
                    if state != "done":
                        errors.append(f"job {job_id} {state}")
                time.sleep(max(0.0, 20 - (time.monotonic() - started)))

    process = psutil.Process(args.server_pid)
    samples: list[tuple[float, float, int, int]] = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=api_client, args=(k * 7,)) for k in range(2)]
    threads += [threading.Thread(target=fn) for fn in (ui_client, streams, jobs)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        samples.append(
            (time.monotonic() - t0, process.memory_info().rss / 2**20, process.num_fds(), process.num_threads())
        )
        time.sleep(2)
    after = [s for s in samples if s[0] >= args.minutes * 60 * WARMUP]
    k = max(1, len(after) // 10)

    def growth(column: int) -> tuple[float, float]:
        first = sum(s[column] for s in after[:k]) / k
        last = sum(s[column] for s in after[-k:]) / k
        return first, last

    rss_first, rss_last = growth(1)
    fds_first, fds_last = growth(2)
    threads_first, threads_last = growth(3)
    rss_pct = 100 * (rss_last - rss_first) / rss_first
    print(f"{args.minutes:g} minutes: {dict(sorted(counts.items()))}")
    print(f"server errors: {len(errors)} {errors[:5]}")
    print(f"RSS after warm-up -> end: {rss_first:,.0f} -> {rss_last:,.0f} MB ({rss_pct:+.2f} %)")
    print(f"open files: {fds_first:.0f} -> {fds_last:.0f}; threads: {threads_first:.0f} -> {threads_last:.0f}")
    met = not errors and rss_pct < 1 and round(fds_last) <= round(fds_first)
    print(f"targets (0 server errors, RSS < 1 %, open files constant): {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
