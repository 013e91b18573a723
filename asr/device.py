"""Which device the models really run on: the DEVICE setting checked against what this torch build can use.

`DEVICE=auto` (the default) takes the first CUDA GPU torch can use, else the CPU. When it falls back to the
CPU although an NVIDIA GPU is present (a CPU-only torch build, a driver too old for torch's CUDA), it says so
once in the log, and `device_report()` carries the same warning for /health, the system info and the metrics.

`DEVICE=cuda` or `cuda:N` is a request for that GPU: when torch cannot use it, loading fails with the reason
and what to do (`DeviceError`). Running on the CPU instead would look healthy while being many times slower,
with the GPU's defaults (batching, concurrency) on top; who wants the CPU fallback sets `DEVICE=auto`.

The ONNX backend runs on the CPU only (ONNX Runtime's CPU provider), so `ENGINE_BACKEND=onnx` resolves to
the CPU, and asking for both it and a GPU is a load error.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import ModelLoadError

logger = logging.getLogger(__name__)

_VALID = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")
#: Where to read what a GPU user runs.
GPU_DOCS = "docs/gpu.md"


class DeviceError(ModelLoadError):
    """DEVICE names a device this machine (or this torch build) cannot use; the message says why and what to do."""

    code = "device_unavailable"


@dataclass(frozen=True)
class CudaState:
    """What this process's torch can do with CUDA; read once per process (it does not change while running)."""

    torch_version: str
    cuda_build: str | None  # torch.version.cuda: None for a CPU-only build
    available: bool
    device_count: int
    names: tuple[str, ...]  # torch's name for cuda:0, cuda:1, ...
    problem: str | None  # why CUDA is unusable, in torch's own words where it gives them; None when usable


@lru_cache(maxsize=1)
def cuda_state() -> CudaState:
    import torch

    version, build = torch.__version__, torch.version.cuda
    if build is None:
        return CudaState(version, None, False, 0, (), f"torch {version} is a CPU-only build (no CUDA)")
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
        names = tuple(torch.cuda.get_device_name(i) for i in range(count))
    except Exception as exc:  # a broken driver can raise from the queries themselves
        return CudaState(version, build, False, 0, (), f"torch {version} cannot use CUDA: {_first_line(exc)}")
    if available and count:
        return CudaState(version, build, True, count, names, None)
    try:  # is_available() swallows the reason; initialising CUDA states it (no driver, driver too old, ...)
        torch.cuda.init()
        reason = "no CUDA GPU is visible"
    except Exception as exc:
        reason = _first_line(exc)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        reason += f" (CUDA_VISIBLE_DEVICES={visible!r})"
    return CudaState(version, build, False, 0, (), f"torch {version} (CUDA {build}) finds no usable GPU: {reason}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300].rstrip(". ")


@lru_cache(maxsize=1)
def nvidia_gpus() -> tuple[str, ...]:
    """Names of the NVIDIA GPUs the driver (NVML) reports on this machine, whether or not torch can use them."""
    from .gpu import gpu_info

    return tuple(str(g["name"]) for g in gpu_info())


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _log_once(level: int, message: str) -> None:
    # Resolution runs at every status call before the model is loaded: say each thing once per process.
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    logger.log(level, message)


def resolve_device(requested: str, backend: str = "auto") -> str:
    """The device the models will run on: "cpu" or "cuda:N". Raises DeviceError when DEVICE cannot be honoured."""
    value = (requested or "auto").strip().lower()
    if not _VALID.match(value):
        raise DeviceError(f"DEVICE={requested!r} is not a device: use auto, cpu, cuda or cuda:N (e.g. cuda:1)")
    if backend == "onnx" and value.startswith("cuda"):
        raise DeviceError(
            f"DEVICE={requested} with ENGINE_BACKEND=onnx: the ONNX backend runs on the CPU only. "
            f"Set ENGINE_BACKEND=torch to use the GPU, or DEVICE=auto/cpu to run ONNX on the CPU"
        )
    if backend == "onnx" or value == "cpu" or (value == "auto" and not cuda_state().available):
        gpu_unused_warning(requested, "cpu", backend)  # logs it, once
        return "cpu"
    state = cuda_state()
    if value == "auto":
        _log_once(
            logging.INFO,
            f"DEVICE=auto: using cuda:0 ({state.names[0]}, torch {state.torch_version}, CUDA {state.cuda_build})",
        )
        return "cuda:0"
    index = int(value.partition(":")[2] or 0)
    if not state.available:
        if nvidia_gpus():
            raise DeviceError(
                f"DEVICE={requested}: {_gpu_list()} is present but {state.problem}. {fix_for(state)}; "
                f"or set DEVICE=auto to run on the CPU when there is no usable GPU"
            )
        raise DeviceError(
            f"DEVICE={requested}: no NVIDIA GPU was found (the NVIDIA driver reports none) and "
            f"{state.problem}. Without a GPU set DEVICE=auto or cpu; on a GPU machine install the "
            f"driver (nvidia-smi must list the GPU), then `./run.sh install` ({GPU_DOCS})"
        )
    if index >= state.device_count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise DeviceError(
            f"DEVICE={requested}: torch sees {state.device_count} GPU(s), cuda:0..cuda:"
            f"{state.device_count - 1}"
            + (f" (CUDA_VISIBLE_DEVICES={visible!r} renumbers them)" if visible is not None else "")
            + ". Pick one of those, or DEVICE=cuda for the first"
        )
    _log_once(
        logging.INFO,
        f"DEVICE={requested}: using cuda:{index} ({state.names[index]}, torch "
        f"{state.torch_version}, CUDA {state.cuda_build})",
    )
    return f"cuda:{index}"


def planned_device(requested: str, backend: str = "auto") -> str:
    """resolve_device() for status and defaults before a load: "cpu" where DEVICE cannot be honoured (the load
    will fail and say why)."""
    try:
        return resolve_device(requested, backend)
    except DeviceError:
        return "cpu"


def fix_for(state: CudaState) -> str:
    """What a person does about an unusable CUDA, in one sentence."""
    if state.cuda_build is None:
        return (
            f"Install torch's CUDA build: `./run.sh install` picks the one for this driver, "
            f"`./run.sh check-gpu` says which ({GPU_DOCS})"
        )
    return (
        f"Check the driver with nvidia-smi; if it is older than CUDA {state.cuda_build} needs, install the torch "
        f"build for this driver with `./run.sh install` (`./run.sh check-gpu` says which; {GPU_DOCS})"
    )


def _gpu_list() -> str:
    names = nvidia_gpus()
    listed = ", ".join(names)
    return f"an NVIDIA GPU ({listed})" if len(names) == 1 else f"{len(names)} NVIDIA GPUs ({listed})"


def gpu_unused_warning(requested: str, device: str | None, backend: str | None) -> str | None:
    """Why the GPU(s) this machine has are not used, or None (no GPU, the model runs on one, not loaded yet).

    A warning is also logged, once per process."""
    if device is None or not device.startswith("cpu") or not nvidia_gpus():
        return None
    if backend == "onnx":
        why = "ENGINE_BACKEND=onnx (ONNX Runtime runs on the CPU); set ENGINE_BACKEND=torch to use the GPU"
    else:
        state = cuda_state()
        unusable = f"{state.problem}. {fix_for(state)}" if state.problem else "torch does not use it"
        if (requested or "").strip().lower() == "cpu":
            why = "DEVICE=cpu; set DEVICE=auto to use it" + ("" if state.available else f" (after this: {unusable})")
        else:
            why = unusable
    warning = f"{_gpu_list()} is present but the model runs on the CPU: {why}"
    _log_once(logging.WARNING, warning)
    return warning


def device_report(requested: str, device: str | None, backend: str | None) -> dict[str, Any]:
    """What runs where, for /health, the system info and the metrics: one source, so they always agree."""
    name = None
    if device and device.startswith("cuda"):
        state = cuda_state()
        index = int(device.partition(":")[2] or 0)
        name = state.names[index] if index < len(state.names) else None
    state = cuda_state()
    return {
        "device": device,
        "requested": requested,
        "name": name,
        "torch": state.torch_version,
        "torch_cuda": state.cuda_build,
        "cuda_available": state.available,
        "nvidia_gpus": list(nvidia_gpus()),
        "warning": gpu_unused_warning(requested, device, backend),
    }
