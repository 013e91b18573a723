"""The GPU check's CPU run: every step of `python -m bench.gpu_check` through the same code, small sizes, with
DEVICE=cpu, so it is the CPU run on a GPU box too (there the service says the GPU goes unused); and the check asked
for a GPU torch cannot see. FAKE_CUDA=1 runs both as on a GPU box with a CUDA torch (tests/fake_cuda)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr.device import nvidia_gpus

ROOT = Path(__file__).resolve().parent.parent


def test_requirements_are_read_and_none_is_missing_here() -> None:
    from bench.gpu_check import missing_requirements, requirement_pins

    pins = requirement_pins()
    assert pins["funasr"] and pins["gradio"] and "torch" not in pins
    assert missing_requirements() == []  # this venv is the installed service


@pytest.mark.server
def test_gpu_check_cpu_run(tiny_models, tmp_path: Path) -> None:
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "bench.gpu_check",
        "--size",
        "small",
        "--results-dir",
        str(results),
        "--models-dir",
        str(tiny_models.asr.parent),
        "--device",
        "cpu",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    run = json.loads(next(results.glob("gpu-check-*.json")).read_text(encoding="utf-8"))
    steps = {s["name"]: s for s in run["steps"]}
    assert [s["name"] for s in run["steps"]] == [
        "install",
        "device",
        "models",
        "inputs",
        "engine",
        "batching",
        "service (scenario A) + GPU alert",
    ]
    assert all(s["ok"] for s in run["steps"]) and run["size"] == "small"
    assert steps["device"]["data"]["device"] == "cpu" and steps["install"]["data"]["installed"] == []

    engine = steps["engine"]["data"]
    assert engine["device"] == "cpu" and engine["auto_batch_max_requests"] == 1 and engine["load_s"] > 0
    assert [r["input"] for r in engine["rtf"]] == ["10 s", "20 s", "30 s"]
    assert all(0 < r["rtf"] < 5 for r in engine["rtf"])
    assert [round(r["duration_s"]) for r in engine["rtf"]] == [10, 20, 30]

    batching = steps["batching"]["data"]
    assert [b["clients"] for b in batching] == [2, 3]
    for b in batching:
        assert b["off"]["same_text"] and b["on"]["same_text"]
        assert b["off"]["jobs_per_call"] == 1 and b["on"]["jobs_per_call"] > 1  # the segments did share calls

    service = steps["service (scenario A) + GPU alert"]["data"]
    assert service["health"]["device"] == "cpu"
    if nvidia_gpus():  # a GPU box: the check ran on the CPU because it was told to, and the service says so
        assert "DEVICE=cpu; set DEVICE=auto" in service["health"]["gpu_warning"]
    else:
        assert service["health"]["gpu_warning"] is None
    assert service["summary"]["requests"] == 2  # 2 clients x 1 (the probe sent alone before is not counted)
    assert service["summary"]["failed"] == 0 and service["summary"]["rejected"] == 0
    assert "reference (RTX 3060)" in service["markdown"] and "11.2" in service["markdown"]
    alert = service["alert"]
    # The alert reads the GPU through NVML where there is one, else its own simulated reading.
    assert "ALERT GPU 0" in alert["alert"] and alert["reading"].startswith("NVML" if nvidia_gpus() else "simulated")

    markdown = next(results.glob("gpu-check-*.md")).read_text(encoding="utf-8")
    assert "| batching |" in markdown and "Engine: load" in markdown and "GPU alert at" in markdown
    assert "RTF" in done.stdout and "within the 8-minute budget" in done.stdout


def test_gpu_check_with_a_gpu_asked_for_and_none_there_stops_at_once(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--device", "cuda", "--skip-install", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU for torch, on a GPU box too
    )
    assert done.returncode == 1 and "DEVICE=cuda" in done.stdout, done.stdout[-3000:]
    assert "CPU-only build" in done.stdout or "finds no usable GPU" in done.stdout, done.stdout[-3000:]
