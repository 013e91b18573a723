"""FAKE_CUDA=1: this Python's torch and NVML report one NVIDIA H200 that torch can use, at the boundary the
service reads (torch.version.cuda, torch.cuda.is_available / device_count / get_device_name /
get_device_properties / init / max_memory_allocated; pynvml's device queries). Nothing runs on it: it lets a
machine without a GPU run the suite's device tests as a GPU box with a CUDA torch runs them.

tests/conftest.py installs it in the test process and puts this folder first on PYTHONPATH, so every Python the
tests start (a server, `python -m bench.gpu_check`) imports it as its `sitecustomize` and sees the same GPU.
As a real torch does, CUDA_VISIBLE_DEVICES="" hides the GPU from torch (NVML still lists it).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

NAME = "NVIDIA H200"
MEMORY = 143771 * 2**20
DRIVER = "570.86.15"
CUDA = "12.8"


def _visible() -> int:
    return 0 if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1") else 1


def _index(device: object = None) -> int:
    index = getattr(device, "index", device)
    index = 0 if index is None or isinstance(index, str) else int(index)
    if index >= _visible():
        raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
    return index


def _init() -> None:
    if not _visible():
        raise RuntimeError("No CUDA GPUs are available")


def _name(device: object = None) -> str:
    _index(device)
    return NAME


def _properties(device: object = None) -> SimpleNamespace:
    _index(device)
    return SimpleNamespace(name=NAME, total_memory=MEMORY, major=9, minor=0, multi_processor_count=132)


def _peak(device: object = None) -> int:
    _index(device)
    return 0


def install() -> None:
    import pynvml
    import torch

    torch.version.cuda = CUDA
    torch.cuda.is_available = lambda: bool(_visible())
    torch.cuda.device_count = _visible
    torch.cuda.init = _init
    torch.cuda.get_device_name = _name
    torch.cuda.get_device_properties = _properties
    torch.cuda.max_memory_allocated = _peak

    gpu = SimpleNamespace(index=0)

    def handle(index: int) -> SimpleNamespace:
        if index != 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu

    used = 512 * 2**20
    pynvml.nvmlInit = lambda *args: None
    pynvml.nvmlShutdown = lambda: None
    pynvml.nvmlSystemGetDriverVersion = lambda: DRIVER
    pynvml.nvmlDeviceGetCount = lambda: 1
    pynvml.nvmlDeviceGetHandleByIndex = handle
    pynvml.nvmlDeviceGetName = lambda h: NAME
    pynvml.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(total=MEMORY, used=used, free=MEMORY - used)
    pynvml.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=0, memory=0)


if os.environ.get("FAKE_CUDA") == "1":
    install()
