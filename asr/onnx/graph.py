"""Rewrites of an exported SeACo-Paraformer graph for ONNX Runtime on CPU (run by `asr.onnx.export`).

    optimize_for_ort(path)   # in place: model.onnx, or model_quant.onnx after quantizing

1. ONNX Runtime's own EXTENDED-level optimisation, saved offline (LayerNorm and MatMul+scale fusion,
   constant folding); EXTENDED is hardware-independent, ALL (NCHWc layouts) is left to load time.
2. The CIF predictor's Loops: their per-frame lists are built with SequenceInsert, which ONNX Runtime
   copies on every insert (O(T^2) in the segment length), and each iteration slices the whole of alphas
   and hidden (a full copy per frame). The lists become the Loop's scan outputs and the copies go.
3. SANM attention (FusedMatMul(q, k^T) * scale + mask -> Softmax -> MatMul(v) -> Transpose -> Reshape)
   becomes one com.microsoft.MultiHeadAttention with a key padding mask (FunASR's -10000 fill).

Each rewrite fires only where its pattern matches; everything else is left as it is. The outputs are
bit-for-bit those of the exported graph (checked on the tiny and full-size models, padded batches and
hotwords included; `tests/test_onnx_backend.py` holds the ONNX text to the PyTorch text). The rewritten
files use ONNX Runtime's contrib ops, so only ONNX Runtime can load them, as the engine does.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import onnx_runtime


# ----------------------------------------------------------------------------------------------- helpers
def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _const(name, graphs):
    for g in graphs:
        for i in g.initializer:
            if i.name == name:
                return numpy_helper.to_array(i)
        for n in g.node:
            if n.op_type == "Constant" and n.output[0] == name and n.attribute[0].name == "value":
                return numpy_helper.to_array(n.attribute[0].t)
    return None


def _subgraph_inputs(node, defined=frozenset()):
    """Outer-scope names a node's subgraphs (Loop/If bodies, nested) read."""
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            g = a.g
            inner = (
                defined
                | {o for x in g.node for o in x.output}
                | {i.name for i in g.input}
                | {i.name for i in g.initializer}
            )
            for x in g.node:
                out += [i for i in x.input if i and i not in inner]
                out += [i for i in _subgraph_inputs(x, inner) if i not in inner]
    return out


def _cleanup(model):
    """Drop dead nodes and unused initialisers, and sort the main graph topologically."""
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    live, stack = set(), [o.name for o in g.output]
    while stack:
        n = prod.get(stack.pop())
        if n is None or id(n) in live:
            continue
        live.add(id(n))
        stack += [i for i in n.input if i] + _subgraph_inputs(n)
    nodes = [n for n in g.node if id(n) in live]
    avail = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    ordered, pending = [], nodes
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in list(n.input) + _subgraph_inputs(n)):
                ordered.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"unresolved inputs: {[n.name for n in rest[:5]]}")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)
    used = {i for n in ordered for i in list(n.input) + _subgraph_inputs(n)}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


# ----------------------------------------------------------------------------------------------- CIF loops
def _loop_body_ranks(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for n in inferred.graph.node:
        if n.op_type == "Loop":
            b = n.attribute[0].g
            for v in list(b.value_info) + list(b.output):
                if v.type.tensor_type.HasField("shape"):
                    ranks[v.name] = len(v.type.tensor_type.shape.dim)
    return ranks


def rewrite_loops(model: onnx.ModelProto) -> collections.Counter:
    g = model.graph
    stats = collections.Counter()
    ranks = _loop_body_ranks(model)
    cons = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            cons[i].append(n)
    graph_outputs = {o.name for o in g.output}
    for loop in list(g.node):
        if loop.op_type != "Loop":
            continue
        body = loop.attribute[0].g
        bcons = collections.defaultdict(list)
        for n in body.node:
            for i in n.input:
                bcons[i].append(n)
        # Slice(x, starts=0, ends=INT_MAX, axes=0, steps=1) is a copy of x: read x directly.
        for n in list(body.node):
            if n.op_type != "Slice" or len(n.input) < 4:
                continue
            starts, ends, axes = (_const(x, [body, g]) for x in n.input[1:4])
            steps = _const(n.input[4], [body, g]) if len(n.input) > 4 and n.input[4] else np.array([1])
            if any(v is None for v in (starts, ends, axes, steps)) or n.output[0] in {o.name for o in body.output}:
                continue
            if (
                starts.ravel().tolist() == [0]
                and axes.ravel().tolist() == [0]
                and steps.ravel().tolist() == [1]
                and int(ends.ravel()[0]) >= 2**31 - 1
            ):
                for c in bcons[n.output[0]]:
                    for k, i in enumerate(c.input):
                        if i == n.output[0]:
                            c.input[k] = n.input[0]
                body.node.remove(n)
                stats["full Slice removed"] += 1
        # Loop-carried SequenceInsert lists, only stacked after the loop -> scan outputs.
        n_carried = len(loop.input) - 2
        carried_in, carried_out = list(body.input[2:]), list(body.output[1 : 1 + n_carried])
        scan_out = list(body.output[1 + n_carried :])
        init, final, scans = list(loop.input[2:]), list(loop.output[:n_carried]), list(loop.output[n_carried:])
        bprod = {o: n for n in body.node for o in n.output}
        keep, moved = [], []
        for k in range(n_carried):
            ins = bprod.get(carried_out[k].name)
            users = cons.get(final[k], [])
            ok = (
                ins is not None
                and ins.op_type == "SequenceInsert"
                and len(ins.input) == 2
                and ins.input[0] == carried_in[k].name
                and len(bcons[carried_in[k].name]) == 1
                and final[k] not in graph_outputs
                and len(users) == 1
                and users[0].op_type == "ConcatFromSequence"
                and _attr(users[0], "new_axis", 0) == 1
                and ins.input[1] in ranks
            )
            if not ok:
                keep.append(k)
                continue
            moved.append((ins, users[0]))
        if not moved:
            continue
        for ins, _ in moved:
            body.node.remove(ins)
        new_scan = [helper.make_tensor_value_info(ins.input[1], TensorProto.FLOAT, None) for ins, _ in moved]
        new_inputs = list(body.input[:2]) + [carried_in[k] for k in keep]
        new_outputs = [body.output[0]] + [carried_out[k] for k in keep] + scan_out + new_scan
        del body.input[:]
        body.input.extend(new_inputs)
        del body.output[:]
        body.output.extend(new_outputs)
        names = [f"{loop.name}_scan_{i}" for i in range(len(moved))]
        loop_inputs = list(loop.input[:2]) + [init[k] for k in keep]
        loop_outputs = [final[k] for k in keep] + scans + names
        del loop.input[:]
        loop.input.extend(loop_inputs)
        del loop.output[:]
        loop.output.extend(loop_outputs)
        for (ins, concat), name in zip(moved, names, strict=False):
            # scan output = [iterations, *x.shape]; ConcatFromSequence(new_axis=1, axis=a) = move axis 0 to a
            rank = ranks[ins.input[1]] + 1
            axis = _attr(concat, "axis")
            axis = axis + rank if axis < 0 else axis
            perm = list(range(1, rank))
            perm.insert(axis, 0)
            transpose = helper.make_node(
                "Transpose", [name], list(concat.output), name=concat.name + "_scan", perm=perm
            )
            g.node.insert(list(g.node).index(concat), transpose)
            g.node.remove(concat)
            stats["sequence -> scan output"] += 1
    _cleanup(model)
    return stats


# ----------------------------------------------------------------------------------------------- attention
def fuse_attention(model: onnx.ModelProto) -> int:
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    cons = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            cons[i].append(n)
    for o in g.output:
        cons[o.name].append(None)

    def one(name, op):
        n = prod.get(name)
        return n if n is not None and n.op_type == op else None

    def heads(reshape):
        shape = _const(reshape.input[1], [g])
        return int(shape[2]) if shape is not None and shape.size == 4 and shape[2] > 0 else None

    removed, added, masks, count = set(), [], {}, 0
    for sm in list(g.node):
        if sm.op_type != "Softmax" or _attr(sm, "axis", -1) not in (-1, 3):
            continue
        add = one(sm.input[0], "Add")
        if add is None:
            continue
        fm, mask = one(add.input[0], "FusedMatMul"), add.input[1]
        if fm is None:
            fm, mask = one(add.input[1], "FusedMatMul"), add.input[0]
        if fm is None or any(_attr(fm, k, 0) for k in ("transA", "transB", "transBatchA", "transBatchB")):
            continue
        qt, kt = one(fm.input[0], "Transpose"), one(fm.input[1], "Transpose")
        if (
            qt is None
            or kt is None
            or list(_attr(qt, "perm")) != [0, 2, 1, 3]
            or list(_attr(kt, "perm")) != [0, 2, 3, 1]
        ):
            continue
        qr, kr = one(qt.input[0], "Reshape"), one(kt.input[0], "Reshape")
        users = cons[sm.output[0]]
        if (
            qr is None
            or kr is None
            or len(users) != 1
            or users[0] is None
            or users[0].op_type != "MatMul"
            or users[0].input[0] != sm.output[0]
        ):
            continue
        pv = users[0]
        vt = one(pv.input[1], "Transpose")
        if vt is None or list(_attr(vt, "perm")) != [0, 2, 1, 3]:
            continue
        vr = one(vt.input[0], "Reshape")
        users = cons[pv.output[0]]
        if (
            vr is None
            or len(users) != 1
            or users[0] is None
            or users[0].op_type != "Transpose"
            or list(_attr(users[0], "perm")) != [0, 2, 1, 3]
        ):
            continue
        ot = users[0]
        users = cons[ot.output[0]]
        if len(users) != 1 or users[0] is None or users[0].op_type != "Reshape":
            continue
        out_reshape = users[0]
        if any(len(cons[t]) != 1 for t in (fm.output[0], add.output[0])):
            continue
        num_heads = heads(qr)
        if num_heads is None or heads(kr) != num_heads or heads(vr) != num_heads:
            continue
        # FunASR's masks are (1 - mask) * -10000 of shape [B, 1, 1, T]: 0 where attended.
        if mask not in masks:
            base = mask.strip("/").replace("/", "_") + "_key_padding"
            axes, zero = base + "_axes", base + "_zero"
            g.initializer.extend(
                [
                    numpy_helper.from_array(np.array([1, 2], dtype=np.int64), axes),
                    numpy_helper.from_array(np.array(0, dtype=np.float32), zero),
                ]
            )
            added += [
                helper.make_node("Squeeze", [mask, axes], [base + "_sq"], name=base + "_sq"),
                helper.make_node("Equal", [base + "_sq", zero], [base + "_eq"], name=base + "_eq"),
                helper.make_node("Cast", [base + "_eq"], [base], name=base, to=TensorProto.INT32),
            ]
            masks[mask] = base
        added.append(
            helper.make_node(
                "MultiHeadAttention",
                [qr.input[0], kr.input[0], vr.input[0], "", masks[mask]],
                [out_reshape.output[0]],
                name=fm.name.split("/MatMul")[0] + "/MultiHeadAttention",
                domain="com.microsoft",
                num_heads=num_heads,
                scale=float(_attr(fm, "alpha", 1.0)),
                mask_filter_value=-10000.0,
            )
        )
        removed.update(id(n) for n in (qt, kt, fm, add, sm, pv, vt, ot, out_reshape))
        count += 1
    if count:
        nodes = [n for n in g.node if id(n) not in removed] + added
        del g.node[:]
        g.node.extend(nodes)
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        _cleanup(model)
    return count


# ----------------------------------------------------------------------------------------------- entry point
def optimize_for_ort(path: Path, output: Path | None = None) -> dict:
    """Rewrite `path` (into `output`, default in place); returns what was rewritten."""
    ort = onnx_runtime()

    path = Path(path)
    output = Path(output) if output else path
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        staged = Path(tmp) / "extended.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(staged)
        options.log_severity_level = 3
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(staged))
    loops = rewrite_loops(model)
    attention = fuse_attention(model)
    onnx.save(model, str(output))
    return {"loops": dict(loops), "attention": attention}
