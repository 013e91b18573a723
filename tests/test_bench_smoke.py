"""Smoke test of the load benchmarks: scenario A and the queue overflow with the tiny model and tiny numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.server
def test_bench_load_a_and_overflow_smoke(tiny_models, tmp_path: Path) -> None:
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        "A",
        "overflow",
        "--tiny",
        "--quick",
        "--device",
        "auto",
        "--requests",
        "A=2,overflow=2",
        "--concurrency",
        "A=2",
        "--interval",
        "A=0",
        "--probe-runs",
        "1",
        "--queue-max-size",
        "2",
        "--model-concurrency",
        "1",
        "--sample-interval",
        "0.5",
        "--no-baseline",
        "--results-dir",
        str(results),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    a = json.loads(next(results.glob("A-*.json")).read_text(encoding="utf-8"))
    assert a["summary"]["requests"] == 2 and a["summary"]["failed"] == 0 and a["summary"]["rejected"] == 0
    assert a["run"]["device"] in ("cpu", "cuda:0"), "the device the server runs on, not DEVICE=auto"
    assert a["summary"]["latency"]["mean"] > 0 and a["summary"]["rss_end_mb"] > 100
    assert a["samples"] and all("rss_mb" in s for s in a["samples"])

    overflow = json.loads(next(results.glob("overflow-*.json")).read_text(encoding="utf-8"))
    statuses = [o["status"] for o in overflow["outcomes"] if o["kind"] == "overflow"]
    assert statuses.count("rejected") == 2 and statuses.count("ok") == 2, statuses  # queue max 2, 2 beyond it
    assert all(t["met"] for t in overflow["targets"]), overflow["targets"]

    report = next(results.glob("A-overflow-*.md")).read_text(encoding="utf-8")
    assert "### A:" in report and "### Overflow" in report and "reference (RTX 3060)" in report
    assert "| failed / rejected (503) | 0 / 0 |" in report
    assert list(results.glob("A-*.png")) and list(results.glob("overflow-*.png"))


def test_bench_batching_smoke(tiny_models, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "bench.batching",
        "--model-dir",
        str(tiny_models.asr),
        "--clients",
        "3",
        "--rounds",
        "1",
        "--inputs",
        "utterances",
        "--results-dir",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(next(tmp_path.glob("batching-*.json")).read_text(encoding="utf-8"))
    assert result["off"]["same_text"] and result["on"]["same_text"]
    assert result["off"]["jobs_per_call"] == 1 and result["on"]["jobs_per_call"] > 1
    assert "Batching gain" in next(tmp_path.glob("batching-*.md")).read_text(encoding="utf-8")
