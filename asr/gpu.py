"""GPU facts through NVML (the `nvidia-ml-py` wheel, imported as `pynvml`), for the UI, metrics and ops alerts.

No GPU, no driver or no library is a normal answer (an empty list), never an exception: NVML raises
`NVMLError_LibraryNotFound` on machines without the NVIDIA driver, and other `NVMLError`s when a
device is lost or unsupported.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

_init_lock = threading.Lock()
_initialised = False


def _ensure_init(pynvml: Any) -> None:
    # nvmlInit is reference-counted and costs a few ms; do it once per process and keep it.
    global _initialised
    with _init_lock:
        if not _initialised:
            pynvml.nvmlInit()
            _initialised = True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_info() -> list[dict[str, Any]]:
    """One dict per NVIDIA GPU: index, name, memory_used_mb, memory_total_mb, utilization_pct, driver.

    Returns [] when there is no GPU or NVML is unavailable.
    """
    try:
        import pynvml
    except ImportError:
        return []
    try:
        _ensure_init(pynvml)
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: float | None = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:  # not supported on some (MIG, virtual) devices
                utilization = None
            gpus.append(
                {
                    "index": index,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "memory_used_mb": round(memory.used / 2**20, 1),
                    "memory_total_mb": round(memory.total / 2**20, 1),
                    "utilization_pct": utilization,
                    "driver": driver,
                }
            )
        return gpus
    except pynvml.NVMLError as exc:  # includes NVMLError_LibraryNotFound / DriverNotLoaded: "no GPU"
        logger.debug("NVML unavailable: %s", exc)
        return []
