"""What nvidia-smi lists against what this Python's torch can use, and the torch build for the driver.

    python -m ops.cuda check        # ./run.sh check-gpu: exit 0 the GPU is used or there is none, 1 it is not
    python -m ops.cuda --shell      # for ./run.sh install, before torch is there: the driver's facts, quoted

The `--shell` part needs nothing but the standard library (install runs it in a venv holding only pip); `check`
asks torch through asr/device.py, the probe the app itself uses, so the two never disagree.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

TORCH_VERSION = "2.13.0"
# The CUDA builds of torch TORCH_VERSION on download.pytorch.org (126 = CUDA 12.6): keep in step with it.
TORCH_CUDA_BUILDS = ("126", "128", "130")
TORCH_INDEX_BASE = "https://download.pytorch.org/whl"


@dataclass(frozen=True)
class NvidiaFacts:
    """What the NVIDIA driver says: its GPUs (index, name), the newest CUDA it runs ("12.8"), or why it fails."""

    gpus: list[tuple[int, str]] = field(default_factory=list)
    driver_cuda: str = ""
    error: str = ""  # nvidia-smi is there but fails (no driver loaded)

    @property
    def names(self) -> str:
        return ", ".join(name for _, name in self.gpus)


def nvidia_facts() -> NvidiaFacts:
    if not shutil.which("nvidia-smi"):
        return NvidiaFacts()
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return NvidiaFacts(error=str(exc))
    if listing.returncode != 0:
        out = (listing.stdout + listing.stderr).strip().splitlines()
        return NvidiaFacts(error=out[0] if out else f"exit status {listing.returncode}")
    gpus = []
    for line in listing.stdout.splitlines():
        match = re.match(r"^GPU (\d+): (.*?)(?: \(UUID: [^)]*\))?$", line)
        if match:
            gpus.append((int(match[1]), match[2]))
    if not gpus:
        return NvidiaFacts()
    try:
        banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        banner = ""
    match = re.search(r"CUDA Version: *([0-9]+\.[0-9]+)", banner)
    return NvidiaFacts(gpus, match[1] if match else "")


def torch_index_for_cuda(driver_cuda: str) -> str | None:
    """The index of the torch CUDA build for a driver that runs CUDA `driver_cuda` ("12.8"): the newest build it
    runs; within its major version the oldest build also runs on an older minor driver (CUDA minor version
    compatibility). None when the driver is older than every build, or its version is unreadable."""
    match = re.fullmatch(r"(\d+)\.(\d+)", driver_cuda)
    if not match:
        return None
    major, minor = int(match[1]), int(match[2])
    best = oldest_same = None
    for build in TORCH_CUDA_BUILDS:
        b_major, b_minor = int(build[:-1]), int(build[-1])
        if b_major == major:
            oldest_same = oldest_same or build
            if b_minor <= minor:
                best = build
        elif b_major < major:
            best = build
    best = best or oldest_same
    return f"{TORCH_INDEX_BASE}/cu{best}" if best else None


def too_old(driver_cuda: str) -> str:
    builds = ", ".join(f"cu{b}" for b in TORCH_CUDA_BUILDS)
    return f"the driver (CUDA {driver_cuda}) is older than every CUDA build of torch {TORCH_VERSION} ({builds})"


def check(facts: NvidiaFacts, venv: Path | None = None) -> tuple[list[str], int]:
    """./run.sh check-gpu's lines and exit status, for the torch of this Python (the one in `venv`)."""
    if facts.error:
        return [
            f"nvidia-smi is installed but fails: {facts.error}",
            "no GPU can be used until the NVIDIA driver works; the service runs on the CPU meanwhile (DEVICE=auto)",
        ], 1
    if not facts.gpus:
        return ["no NVIDIA GPU (nvidia-smi not found or lists none): the service runs on the CPU"], 0
    lines = [f"NVIDIA GPU: {facts.names}; the driver runs CUDA {facts.driver_cuda or '(unknown)'}"]
    if venv is not None and not os.access(venv / "bin" / "python", os.X_OK):
        return [*lines, f"no virtual environment at {venv}: run ./run.sh install"], 1
    try:
        from asr.device import cuda_state

        state = cuda_state()
    except ImportError as exc:
        if exc.name == "torch":
            return [*lines, f"torch is not installed in {venv or sys.prefix}: run ./run.sh install"], 1
        return [
            *lines,
            f"the service's requirements are not installed in {venv or sys.prefix} (no {exc.name}): "
            "run ./run.sh install",
        ], 1
    if state.available:
        return [
            *lines,
            f"torch {state.torch_version} (CUDA {state.cuda_build}) uses it: {state.device_count} "
            f"GPU(s): {', '.join(state.names)}",
        ], 0
    if state.cuda_build is None:
        lines.append(
            f"torch {state.torch_version} is a CPU-only build: it cannot use the GPU, and the service runs on the CPU"
        )
    else:
        lines.append(state.problem or f"torch {state.torch_version} (CUDA {state.cuda_build}) cannot use the GPU")
    index = torch_index_for_cuda(facts.driver_cuda)
    if index:
        lines.append(f"install the CUDA build for this driver: TORCH_INDEX_URL={index} ./run.sh install")
    elif facts.driver_cuda:
        lines.append(f"{too_old(facts.driver_cuda)}: upgrade the NVIDIA driver")
    else:
        lines.append(
            "pick the build for this driver (nvidia-smi shows its CUDA version): "
            f"TORCH_INDEX_URL={TORCH_INDEX_BASE}/cuNNN ./run.sh install"
        )
    return lines, 1


def shell_assignments(facts: NvidiaFacts) -> str:
    """For ./run.sh install: the driver's facts and the torch index for it (empty: none fits)."""
    index = torch_index_for_cuda(facts.driver_cuda)
    values = {
        "TORCH_VERSION": TORCH_VERSION,
        "TORCH_INDEX_BASE": TORCH_INDEX_BASE,
        "GPU_NAMES": facts.names,
        "DRIVER_CUDA": facts.driver_cuda,
        "SMI_ERROR": facts.error,
        "DRIVER_INDEX": index or "",
        "DRIVER_TOO_OLD": too_old(facts.driver_cuda) if facts.driver_cuda and not index else "",
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "command",
        nargs="?",
        choices=["check", "torch-version"],
        default="check",
        help="check: the GPU diagnosis; torch-version: the installed torch's version",
    )
    parser.add_argument("--shell", action="store_true", help="print the driver's facts as bash assignments")
    parser.add_argument("--venv", type=Path, help="the virtual environment checked (its python runs this)")
    args = parser.parse_args(argv)
    if args.shell:
        sys.stdout.write(shell_assignments(nvidia_facts()))
        return 0
    if args.command == "torch-version":
        try:
            import torch
        except ImportError:
            return 1
        print(torch.__version__)
        return 0
    lines, status = check(nvidia_facts(), args.venv)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
