"""Per-row activation quantization for a dynamically quantized graph: `quantize_rows(path)`, in place.

ONNX Runtime's dynamic quantization (`quantize_dynamic`) puts a `DynamicQuantizeLinear` before each int8 MatMul:
one scale and zero point over the whole activation tensor. When the chunks of several streams run as one call,
that tensor holds all of them, so each stream's int8 numbers depend on the others in its batch. This rewrite gives
every row (the last axis: one frame or token of one stream) its own scale, so a row's quantized values depend on
that row alone; the integer MatMul is exact and the rest is elementwise, so a stream's int8 outputs are the same
alone or batched, bit for bit.

Each row is quantized symmetrically, scale = max|x| / 127, and stored as uint8 around a fixed zero point of 128
(ONNX Runtime's integer MatMul kernels take one zero point per call, and a fixed one serves every row; int8 rows
beside int8 weights would need no zero point, but that kernel runs 10x slower here than uint8 x int8). Per row:

    s = max(|x|) / 127                               Abs, ReduceMax over the last axis (keepdims)
    q = saturate(round(x / s) + 128)                 QuantizeLinear, one block per row (opset 21)
    y = MatMulIntegerToFloat(q, w; zero points 128 and w's, scales 1 and w's) * s

which replaces DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale_a * scale_w). A ReLU's output is
never below 0, so its rows need no sign: s = max(x) / 255 and q = saturate(round(x / s)) with a zero point of 0,
all 256 steps. On the full-size streaming model the encoder's output is closer to fp32's than with one scale per
call (relative error 0.0166 against 0.0184, bench.online_onnx). The graph is converted to opset 21 first (blocked
QuantizeLinear); the conversion leaves its outputs as they were. The extra ops cost 6-9 % of an int8 chunk alone
on the full-size streaming model, and batching wins it back from two streams a call (docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Written into the graph's metadata, so the runtime can tell a rewritten export from an older one.
METADATA_KEY = "activation_quantization"
METADATA_VALUE = "per_row"

#: The opset the rewritten graph declares: QuantizeLinear's blocks (one scale per row) came in opset 21.
OPSET = 21

#: A row of zeros gets the smallest normal float as its scale (and quantizes to the zero point) instead of 0/0.
_SMALLEST_SCALE = np.float32(np.finfo(np.float32).tiny)


def is_per_row(model_meta: dict[str, str]) -> bool:
    """Whether a graph's custom metadata says its activations are quantized per row."""
    return model_meta.get(METADATA_KEY) == METADATA_VALUE


def quantize_rows(path: Path) -> int:
    """Rewrite `path` (a `quantize_dynamic` output) in place; returns how many quantizers became per-row.

    Raises ValueError, leaving the file as it was, when a quantizer is not followed by the pattern described above.
    """
    from onnx import version_converter

    model = onnx.load(str(path))
    if any(p.key == METADATA_KEY for p in model.metadata_props):
        return 0
    if _opset(model) < OPSET:
        model = version_converter.convert_version(model, OPSET)
    model.ir_version = max(model.ir_version, 10)  # opset 21's IR
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = _Constants(graph)
    # A node (by its first output: unique in a graph) -> what goes in its place ([] = dropped).
    replaced: dict[str, list[onnx.NodeProto]] = {}
    quantizers = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    for dql in quantizers:
        matmuls = consumers.get(dql.output[0], [])
        if not matmuls or any(m.op_type != "MatMulInteger" or m.input[1] not in initializers for m in matmuls):
            raise ValueError(
                f"{path.name}: {dql.name} feeds something other than a MatMulInteger with constant weights"
            )
        readers = consumers.get(dql.output[1], []) + consumers.get(dql.output[2], [])
        if any(u.op_type not in ("MatMulInteger", "Mul") for u in readers):
            raise ValueError(f"{path.name}: {dql.name}'s scale or zero point is read outside its MatMuls")
        row_scale = f"{dql.output[1]}_row"
        source = producer.get(dql.input[0])
        unsigned = source is not None and source.op_type == "Relu"
        replaced[dql.output[0]] = _row_quantizer(dql, row_scale, initializers[matmuls[0].input[1]], unsigned, constants)
        for matmul in matmuls:
            cast, scale_mul, scales = _scaling_of(matmul, dql, producer, consumers, path)
            w_scale = next(i for i in scales.input if i != dql.output[1])
            p = f"{matmul.name}/row"
            zero_point = (
                constants.scalar("zero_point_0", np.uint8(0))
                if unsigned
                else constants.scalar("zero_point_128", np.uint8(128))
            )
            replaced[matmul.output[0]] = [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [
                        dql.output[0],
                        matmul.input[1],
                        constants.scalar("one", np.float32(1)),
                        w_scale,
                        zero_point,
                        matmul.input[3] if len(matmul.input) > 3 else "",
                    ],
                    [f"{p}/unscaled"],
                    domain="com.microsoft",
                    name=f"{p}/MatMulIntegerToFloat",
                ),
                helper.make_node("Mul", [f"{p}/unscaled", row_scale], [scale_mul.output[0]], name=f"{p}/MulRowScale"),
            ]
            replaced[cast.output[0]] = replaced[scale_mul.output[0]] = replaced[scales.output[0]] = []
    nodes = [new for node in graph.node for new in replaced.get(node.output[0], [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # shape hints from before the rewrite; ONNX Runtime infers them again
    graph.initializer.extend(constants.new)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, METADATA_VALUE
    onnx.save(model, str(path))
    return len(quantizers)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _scaling_of(matmul, dql, producer, consumers, path):
    """MatMulInteger -> Cast -> Mul(., Mul(scale_a, scale_w)): the nodes quantize_dynamic writes after a MatMul."""
    casts = consumers.get(matmul.output[0], [])
    if len(casts) == 1 and casts[0].op_type == "Cast":
        muls = consumers.get(casts[0].output[0], [])
        if len(muls) == 1 and muls[0].op_type == "Mul":
            other = next((i for i in muls[0].input if i != casts[0].output[0]), "")
            scales = producer.get(other)
            if scales is not None and scales.op_type == "Mul" and dql.output[1] in scales.input:
                if len(consumers.get(scales.output[0], [])) == 1:
                    return casts[0], muls[0], scales
    raise ValueError(f"{path.name}: {matmul.name} is not followed by quantize_dynamic's Cast and scale Mul")


class _Constants:
    """Initializers added by the rewrite, each once."""

    def __init__(self, graph: onnx.GraphProto):
        self.new: list[onnx.TensorProto] = []
        self._taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}

    def scalar(self, stem: str, value: np.generic | np.ndarray) -> str:
        name = f"row_quant_{stem}"
        if name not in self._taken:
            self._taken.add(name)
            self.new.append(numpy_helper.from_array(np.array(value), name))
        return name


def _row_quantizer(dql, row_scale, weight, unsigned: bool, c: _Constants) -> list[onnx.NodeProto]:
    """x -> (q, one scale per row [..., 1]), in place of DynamicQuantizeLinear (whose q output name it keeps).

    `unsigned`: x is a ReLU's output, never below 0, so its rows take all 256 steps from 0 (zero point 0)."""
    x, quantized = dql.input[0], dql.output[0]
    width = int(weight.dims[0])  # the rows' length K: the weight is [K, N]
    p = f"{dql.name or quantized}/row"
    if unsigned:
        largest = [
            helper.make_node(
                "ReduceMax", [x, c.scalar("last_axis", np.array([-1]))], [f"{p}/max"], keepdims=1, name=f"{p}/ReduceMax"
            )
        ]
        steps = c.scalar("unsigned_steps", np.float32(255))
    else:
        largest = [
            helper.make_node("Abs", [x], [f"{p}/abs"], name=f"{p}/Abs"),
            helper.make_node(
                "ReduceMax",
                [f"{p}/abs", c.scalar("last_axis", np.array([-1]))],
                [f"{p}/max"],
                keepdims=1,
                name=f"{p}/ReduceMax",
            ),
        ]
        steps = c.scalar("steps", np.float32(127))
    scale = [
        helper.make_node("Div", [f"{p}/max", steps], [f"{p}/scale"], name=f"{p}/Div"),
        helper.make_node(
            "Max", [f"{p}/scale", c.scalar("smallest_scale", _SMALLEST_SCALE)], [row_scale], name=f"{p}/MaxScale"
        ),
    ]
    if unsigned:  # no zero point: uint8 from 0
        return (
            largest
            + scale
            + [
                helper.make_node(
                    "QuantizeLinear", [x, row_scale], [quantized], axis=-1, block_size=width, name=f"{p}/QuantizeLinear"
                )
            ]
        )
    return (
        largest
        + scale
        + [
            # QuantizeLinear's blocks take a zero point shaped like the scales: 128 for each row.
            helper.make_node("Shape", [row_scale], [f"{p}/rows"], name=f"{p}/Shape"),
            helper.make_node(
                "ConstantOfShape",
                [f"{p}/rows"],
                [f"{p}/zero_points"],
                value=numpy_helper.from_array(np.array([128], dtype=np.uint8)),
                name=f"{p}/ZeroPoints",
            ),
            helper.make_node(
                "QuantizeLinear",
                [x, row_scale, f"{p}/zero_points"],
                [quantized],
                axis=-1,
                block_size=width,
                name=f"{p}/QuantizeLinear",
            ),
        ]
    )
