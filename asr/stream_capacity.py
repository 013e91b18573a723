"""How many live streams a machine carries by default (MAX_STREAMS=auto), from the measured cost of one.

The figure is a 2pass stream at real-time pace with partials answered within 1 s at the 95th percentile, full-size
models (SeACo finals, the 220 M streaming Paraformer for partials, FSMN-VAD): docs/benchmarks.md, "Real-time
streams", measures it with `bench.streams` on 2 cores. A CPU machine carries that many per core; a stream beyond
it still works, but every stream's partials fall behind, so the service refuses it (1013) instead.
"""

from __future__ import annotations

import os

#: 2pass streams per CPU core at partial p95 <= 1 s with PyTorch partials (2 cores: 2 streams 0.27 s, 4 streams
#: 2.19 s).
STREAMS_PER_CORE = 1
#: The same with the streaming model on ONNX Runtime int8 (ONLINE_BACKEND picks it where exported; 2 shared cores:
#: 4 streams 0.28-0.37 s in three runs, 6 streams 0.98 s at best, the edge).
ONNX_STREAMS_PER_CORE = 2
#: On a GPU a stream's chunks are small work; not measured here (no GPU on the project's machines), so the
#: former fixed default stays until a GPU run gives a figure (docs/gpu.md).
GPU_STREAMS = 8


def streams_per_core(online_backend: str = "torch") -> int:
    """The measured per-core figure for the streaming model's backend ("torch" or "onnx")."""
    return ONNX_STREAMS_PER_CORE if online_backend == "onnx" else STREAMS_PER_CORE


def default_max_streams(device: str, ncpu: int = 0, online_backend: str = "torch") -> int:
    """The stream limit when MAX_STREAMS is `auto`: the backend's streams per core on CPU (NCPU, else the
    machine's cores), GPU_STREAMS on a GPU."""
    if not device.startswith("cpu"):
        return GPU_STREAMS
    return max(1, streams_per_core(online_backend) * (ncpu or os.cpu_count() or 1))
