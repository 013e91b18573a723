"""The ONNX tool-chain: exporting SeACo-Paraformer (`python -m asr.onnx.export`), rewriting the graphs for ONNX
Runtime (`graph`), and the backend the engine runs them with (`backend`). The engine imports `backend` only
when ENGINE_BACKEND picks ONNX."""
