"""Jobs against the direct API: throughput of the same files, and the submit latency of a big upload.

    python -m bench.jobs                                  # full-size random-weight model, 12 test utterances
    python -m bench.jobs --audio-dir /work/shared/audio --files 20
    python -m bench.jobs --tiny --upload-mb 100           # smoke run: the tiny model (overhead only)

One server (`python app.py`, JOB_WORKERS=1). Each round sends the files through `POST /v1/audio/transcriptions`
one at a time (one client, the next request after the previous answer), then as one job of all of them
(`POST /v1/jobs`, polled every 0.2 s until done), in A-B-B-A order over two rounds so both sides see the same
machine. Reported: wall time per side, the throughput ratio direct/job (target >= 0.95: a job is at least 95 %
as fast as calling the API yourself), and whether every job text equals the direct text. Then one upload of
`--upload-mb` MB (a WAV of the utterances repeated) is submitted as a job: the time until the 202 (the upload
stored, the job queued) is the submit latency; the job is cancelled straight after.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine import RESULTS  # noqa: E402
from bench.harness import resolve_models, start_app, stop_app  # noqa: E402

logger = logging.getLogger("bench.jobs")


def direct_round(url: str, files: list[Path]) -> tuple[float, list[str]]:
    texts = []
    started = time.perf_counter()
    for path in files:
        with open(path, "rb") as f:
            response = httpx.post(url + "/v1/audio/transcriptions", files={"file": (path.name, f)}, timeout=600)
        response.raise_for_status()
        texts.append(response.json()["text"])
    return time.perf_counter() - started, texts


def job_round(url: str, files: list[Path]) -> tuple[float, list[str]]:
    handles = [open(p, "rb") for p in files]
    started = time.perf_counter()
    try:
        response = httpx.post(
            url + "/v1/jobs", files=[("file", (p.name, h)) for p, h in zip(files, handles, strict=True)], timeout=600
        )
    finally:
        for h in handles:
            h.close()
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.2)
    wall = time.perf_counter() - started
    texts = [
        httpx.get(f"{url}/v1/jobs/{job_id}/result", params={"file": i, "response_format": "json"}, timeout=60).json()[
            "text"
        ]
        for i in range(len(files))
    ]
    return wall, texts


def submit_latency(url: str, work: Path, files: list[Path], megabytes: float) -> dict[str, Any]:
    clips = [sf.read(p, dtype="int16")[0] for p in files]
    one_pass = np.concatenate(clips)
    repeats = int(np.ceil(megabytes * 1e6 / (one_pass.nbytes or 1)))
    path = work / "big.wav"
    sf.write(path, np.tile(one_pass, repeats)[: int(megabytes * 1e6 / 2)], 16000, subtype="PCM_16")
    size = path.stat().st_size
    with open(path, "rb") as f:
        started = time.perf_counter()
        response = httpx.post(url + "/v1/jobs", files={"file": (path.name, f)}, timeout=600)
        latency = time.perf_counter() - started
    response.raise_for_status()
    httpx.delete(f"{url}/v1/jobs/{response.json()['id']}", timeout=30)
    return {"bytes": size, "audio_s": round(size / 32000, 1), "submit_s": round(latency, 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = resolve_models(args.model_dir, None, None, args.tiny)
    audio_dir = Path(args.audio_dir) if args.audio_dir else ROOT / "tests" / "data"
    files = sorted((audio_dir / "utterances").glob("*.wav"))[: args.files]
    if not files:
        raise SystemExit(f"no utterances/*.wav under {audio_dir}")
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    server = start_app(models, work, device="cpu", backend="torch", queue_max_size=20, model_concurrency=0)
    try:
        direct_round(server.url, files)  # warm-up, both paths
        job_round(server.url, files[:2])
        sides: dict[str, list[float]] = {"direct": [], "job": []}
        texts: dict[str, list[str]] = {}
        for side in ("direct", "job", "job", "direct")[: 4 if args.rounds > 1 else 2]:
            wall, got = (direct_round if side == "direct" else job_round)(server.url, files)
            sides[side].append(wall)
            texts.setdefault(side, got)
            logger.info("%s: %.2f s for %d files", side, wall, len(files))
        upload = submit_latency(server.url, work, files, args.upload_mb) if args.upload_mb else None
    finally:
        stop_app(server)
    direct, job = statistics.mean(sides["direct"]), statistics.mean(sides["job"])
    report = {
        "benchmark": "jobs",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": models.label,
        "files": len(files),
        "audio_dir": str(audio_dir),
        "direct_s": [round(x, 3) for x in sides["direct"]],
        "job_s": [round(x, 3) for x in sides["job"]],
        "throughput_ratio": round(direct / job, 3),
        "target_ratio": 0.95,
        "met": direct / job >= 0.95,
        "same_texts": texts["direct"] == texts["job"],
        "upload": upload,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"jobs-{datetime.now():%Y%m%d-%H%M%S}.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="a SeACo-Paraformer folder (default: the full-size random-weight one)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (measures the overhead only)")
    parser.add_argument(
        "--audio-dir", help="a folder with utterances/*.wav (default tests/data; the shared set works too)"
    )
    parser.add_argument("--files", type=int, default=12, help="how many utterances (default 12)")
    parser.add_argument("--rounds", type=int, default=2, help="1: direct then job; 2 (default): A-B-B-A")
    parser.add_argument("--upload-mb", type=float, default=100.0, help="size of the submit-latency upload; 0: skip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run(args)
    print(json.dumps(report, indent=2))
    return 0 if report["met"] and report["same_texts"] else 1


if __name__ == "__main__":
    sys.exit(main())
