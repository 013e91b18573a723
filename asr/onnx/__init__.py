"""The ONNX tool-chain: exporting SeACo-Paraformer and the streaming Paraformer (`python -m asr.onnx.export`,
`online_export`), rewriting the graphs for ONNX Runtime (`graph`), the backend the engine runs them with
(`backend`), and the streaming model's runtime (`online`, with `online_batching` for concurrent streams). The
engine imports `backend` only when ENGINE_BACKEND picks ONNX, the streams `online` only when ONLINE_BACKEND does."""

from __future__ import annotations

import os
from types import ModuleType

# ONNX Runtime writes a device id and queues usage events under `~/.cache/Microsoft/DeveloperTools/` as soon as
# it is imported, for upload whenever the machine is online; meeting recordings are served here on-premises, so
# it must not. Only this variable, set before the import, stops the files; `disable_telemetry_events()` then
# keeps a later import elsewhere quiet too.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"


def onnx_runtime() -> ModuleType:
    """`onnxruntime`, imported on first use, with its telemetry off."""
    import onnxruntime

    onnxruntime.disable_telemetry_events()
    return onnxruntime
