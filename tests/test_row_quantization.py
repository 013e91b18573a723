"""asr.onnx.row_quantization on a small graph of its own: two linear layers quantized by ONNX Runtime's
`quantize_dynamic`, then rewritten to quantize each row on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from asr.onnx import onnx_runtime
from asr.onnx.row_quantization import is_per_row, quantize_rows

K, H, N = 48, 64, 40


@pytest.fixture(scope="module", params=["int8", "uint8"])
def graphs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32: y = relu(x @ w1 + b1) @ w2 (x: [batch, frames, K]); per_call: its quantize_dynamic output; per_row: that
    rewritten. Weights int8 (what the export writes on CPUs with VNNI) and uint8 (without)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = tmp_path_factory.mktemp("row-quant")
    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array(rng.standard_normal((K, H)).astype(np.float32) / 7, "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(H).astype(np.float32) / 10, "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((H, N)).astype(np.float32) / 8, "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="linear1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="linear2"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_layers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "frames", N])],
        initializer=[w1, b1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    paths = {"fp32": folder / "fp32.onnx", "per_call": folder / "per_call.onnx", "per_row": folder / "per_row.onnx"}
    onnx.save(model, str(paths["fp32"]))
    for name in ("per_call", "per_row"):
        quantize_dynamic(
            str(paths["fp32"]),
            str(paths[name]),
            per_channel=True,
            weight_type=QuantType.QInt8 if request.param == "int8" else QuantType.QUInt8,
            op_types_to_quantize=["MatMul"],
        )
    assert quantize_rows(paths["per_row"]) == 2
    return paths


def session(path: Path):
    ort = onnx_runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def rows(seed: int, batch: int, frames: int = 6) -> np.ndarray:
    """Rows of very different ranges (x 0.01 to x 100), as the frames of different streams can be."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, frames, K)).astype(np.float32)
    return x * (10.0 ** rng.uniform(-2, 2, size=(batch, frames, 1))).astype(np.float32)


def test_a_rows_output_is_the_same_alone_or_in_any_batch(graphs: dict[str, Path]) -> None:
    per_row = session(graphs["per_row"])
    x = rows(1, 5)
    together = per_row.run(None, {"x": x})[0]
    for i in range(5):
        alone = per_row.run(None, {"x": x[i : i + 1]})[0]
        assert np.array_equal(alone[0], together[i]), i
    # Also against the same stream's frames one at a time: each row depends on itself only.
    one_frame = per_row.run(None, {"x": x[2:3, 3:4]})[0]
    assert np.array_equal(one_frame[0, 0], together[2, 3])


def test_one_scale_per_call_lets_the_batch_change_a_row(graphs: dict[str, Path]) -> None:
    """Why the rewrite exists: ONNX Runtime's own dynamic quantization gives a row other numbers in a batch."""
    per_call = session(graphs["per_call"])
    x = rows(1, 5)
    together = per_call.run(None, {"x": x})[0]
    alone = per_call.run(None, {"x": x[:1]})[0]
    assert not np.array_equal(alone[0], together[0])


def test_the_rows_follow_the_documented_arithmetic(graphs: dict[str, Path], tmp_path: Path) -> None:
    """Both layers recomputed in numpy from the module's formulas, in integers and then floats, against the graph's
    own outputs. A row of any input: s = max|x| / 127, q = round(x / s) + 128, y = (q - 128) . (w - zw) * sw * s. A
    row of a ReLU's output (never below 0): s = max(h) / 255, q = round(h / s), y = q . (w - zw) * sw * s."""
    model = onnx.load(str(graphs["per_row"]))
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scaled = [n.output[0] for n in model.graph.node if n.op_type == "Mul" and "MulRowScale" in n.name]
    assert scaled == ["h0", "y"]
    cut = onnx.load(str(graphs["per_row"]))
    for name in ("h0", "h"):
        cut.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    path = tmp_path / "cut.onnx"
    onnx.save(cut, str(path))
    x = rows(3, 2)
    h0, h, y = session(path).run(["h0", "h", "y"], {"x": x})
    tiny = np.finfo(np.float32).tiny

    def linear(q: np.ndarray, zero: int, name: str, scale: np.ndarray) -> np.ndarray:
        w_q, w_scale, w_zero = (consts[f"{name}_{part}"] for part in ("quantized", "scale", "zero_point"))
        acc = (q.astype(np.int64) - zero) @ (w_q.astype(np.int64) - w_zero.astype(np.int64))
        return (acc.astype(np.float32) * w_scale.astype(np.float32)) * scale

    scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True) / np.float32(127), tiny)
    assert np.allclose(h0, linear(np.clip(np.rint(x / scale) + 128, 0, 255), 128, "w1", scale), rtol=1e-5, atol=1e-6)
    assert h.min() == 0.0
    scale = np.maximum(h.max(axis=-1, keepdims=True) / np.float32(255), tiny)
    assert np.allclose(y, linear(np.clip(np.rint(h / scale), 0, 255), 0, "w2", scale), rtol=1e-5, atol=1e-6)


def test_per_row_int8_stays_close_to_fp32(graphs: dict[str, Path]) -> None:
    x = rows(5, 4)
    exact = session(graphs["fp32"]).run(None, {"x": x})[0]
    for name in ("per_call", "per_row"):
        got = session(graphs[name]).run(None, {"x": x})[0]
        error = np.abs(got - exact).max(axis=-1) / (np.abs(exact).max(axis=-1) + 1e-12)
        if name == "per_row":
            assert float(np.median(error)) < 0.05, float(np.median(error))
        else:  # one scale for rows 10^4 apart: the small rows lose most of their bits
            per_call_error = float(np.median(error))
    assert float(np.median(error)) < per_call_error


def test_the_rewrite_marks_the_graph_and_runs_once(graphs: dict[str, Path]) -> None:
    meta = session(graphs["per_row"]).get_modelmeta().custom_metadata_map
    assert is_per_row(meta)
    assert not is_per_row(session(graphs["per_call"]).get_modelmeta().custom_metadata_map)
    assert quantize_rows(graphs["per_row"]) == 0  # already per-row: left as it is
    ops = [n.op_type for n in onnx.load(str(graphs["per_row"])).graph.node]
    assert "DynamicQuantizeLinear" not in ops and ops.count("MatMulIntegerToFloat") == 2


def test_a_graph_it_does_not_understand_is_left_as_it_was(graphs: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(str(graphs["per_call"]))
    # The first layer's quantized activations also read by something else: not quantize_dynamic's pattern.
    dql = next(n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear")
    model.graph.node.append(helper.make_node("Identity", [dql.output[0]], ["stray"]))
    model.graph.output.append(helper.make_tensor_value_info("stray", TensorProto.UINT8, None))
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="feeds something other"):
        quantize_rows(path)
    assert path.read_bytes() == before
