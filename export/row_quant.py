"""Per-row activation scales for dynamic int8: a window's answer must not depend on its batch.

``quantize_dynamic`` quantizes each ``MatMul`` input with ``DynamicQuantizeLinear``: one
scale and zero point for the *whole* input tensor. A served batch is one tensor (the
dynamic batcher stacks the windows of different callers), so a quiet window batched with
loud ones is quantized on the loud ones' scale and its answer changes with its neighbours.

:func:`quantize_rows` rewrites each ``DynamicQuantizeLinear`` that feeds only
``MatMulInteger`` nodes into the same quantization computed per *row* of the GEMM's left
operand (one scale and zero point per vector along the last axis: per frame and channel
group of one window, never across windows)::

    lo = min(0, ReduceMin(x, -1))   hi = max(0, ReduceMax(x, -1))        [..., 1]
    s  = (hi - lo) / 255            zp = clip(round(-lo / s), 0, 255)    [..., 1]
    xq = uint8(clip(round(x / s) + zp, 0, 255))                          [..., K]
    y  = (float(xq @ (Wq - Wzp)) - zp * colsum(Wq - Wzp)) * s * Wscale   [..., N]

The integer GEMM is the same ``MatMulInteger`` kernel (a scalar zero point of 0 for the
activations, which every ORT build accepts; per-row zero points it does not), and the
zero-point term is folded in exactly afterwards with the weights' column sums (constant).
ONNX Runtime's ``QAttention`` takes one input scale per tensor, so the per-row mode needs
the attention blocks left unfused (:class:`export.quantize.QuantizationConfig` checks).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from export.errors import ExportError

#: Smallest scale used: a row of zeros (padding) has range 0; dividing by this keeps it at zero point 0.
MIN_SCALE = 1e-30


def quantize_rows(path: str | Path) -> int:
    """Rewrite ``path`` in place: every ``DynamicQuantizeLinear`` feeding ``MatMulInteger`` quantizes per row.

    Args:
        path: an ONNX file written by ``quantize_dynamic`` (``DynamicQuantizeLinear`` →
            ``MatMulInteger`` → ``Cast`` → ``Mul(a_scale * b_scale)``).

    Returns:
        How many ``DynamicQuantizeLinear`` nodes were rewritten.

    Raises:
        ExportError: a ``DynamicQuantizeLinear`` output feeds something other than the
            ``MatMulInteger`` pattern (e.g. ``QAttention``, which takes one scale per tensor).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list] = defaultdict(list)
    for node in g.node:
        for name in node.input:
            consumers[name].append(node)

    def const(name: str, value) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    rewritten = 0
    new_nodes: dict[str, list] = {}  # DQL node name -> nodes replacing it
    remove: set[str] = set()
    for dql in [n for n in g.node if n.op_type == "DynamicQuantizeLinear"]:
        xq_old, xs_old, zp_old = dql.output
        users = consumers[xq_old]
        bad = [u for u in users if u.op_type != "MatMulInteger"]
        bad += [u for u in consumers[xs_old] if u.op_type != "Mul"]
        bad += [u for u in consumers[zp_old] if u.op_type != "MatMulInteger"]
        if bad:
            raise ExportError(f"{path}: {dql.name}: per-row activation scales need every user to be MatMulInteger; "
                              f"found {sorted({u.op_type for u in bad})} (leave attention unfused)")
        p = f"rowq{rewritten}"  # short names: thousands of these nodes in a large model
        x = dql.input[0]
        lo, hi, s, zp, xq = f"{p}/lo", f"{p}/hi", f"{p}/scale", f"{p}/zero_point", f"{p}/quantized"
        zero, c255, tiny = const(f"{p}/0", np.float32(0)), const(f"{p}/255", np.float32(255)), const(f"{p}/min_scale", np.float32(MIN_SCALE))
        nodes = [
            helper.make_node("ReduceMin", [x], [lo + "0"], axes=[-1], keepdims=1, name=f"{p}/ReduceMin"),
            helper.make_node("Min", [lo + "0", zero], [lo], name=f"{p}/Min0"),
            helper.make_node("ReduceMax", [x], [hi + "0"], axes=[-1], keepdims=1, name=f"{p}/ReduceMax"),
            helper.make_node("Max", [hi + "0", zero], [hi], name=f"{p}/Max0"),
            helper.make_node("Sub", [hi, lo], [s + "0"], name=f"{p}/range"),
            helper.make_node("Div", [s + "0", c255], [s + "1"], name=f"{p}/step"),
            helper.make_node("Max", [s + "1", tiny], [s], name=f"{p}/scale"),
            helper.make_node("Div", [lo, s], [zp + "0"], name=f"{p}/lo_steps"),
            helper.make_node("Neg", [zp + "0"], [zp + "1"], name=f"{p}/neg"),
            helper.make_node("Round", [zp + "1"], [zp + "2"], name=f"{p}/round_zp"),
            helper.make_node("Clip", [zp + "2", zero, c255], [zp], name=f"{p}/clip_zp"),
            helper.make_node("Div", [x, s], [xq + "0"], name=f"{p}/steps"),
            helper.make_node("Round", [xq + "0"], [xq + "1"], name=f"{p}/round"),
            helper.make_node("Add", [xq + "1", zp], [xq + "2"], name=f"{p}/shift"),
            helper.make_node("Clip", [xq + "2", zero, c255], [xq + "3"], name=f"{p}/clip"),
            helper.make_node("Cast", [xq + "3"], [xq], to=onnx.TensorProto.UINT8, name=f"{p}/to_uint8"),
        ]
        for j, mm in enumerate(users):
            w_name, wzp_name = mm.input[1], (mm.input[3] if len(mm.input) > 3 else "")
            if w_name not in inits:
                raise ExportError(f"{path}: {mm.name}: weight {w_name!r} is not a constant")
            w = numpy_helper.to_array(inits[w_name]).astype(np.int64)
            wzp = numpy_helper.to_array(inits[wzp_name]).astype(np.int64) if wzp_name else np.int64(0)
            colsum = (w - wzp).sum(axis=-2).astype(np.float32)  # [N]: sum over K of the centred weights
            mm.input[0] = xq
            mm.input[2] = ""  # activations' zero point 0: the per-row one is folded in below
            cast = [c for c in consumers[mm.output[0]] if c.op_type == "Cast"]
            if len(cast) != 1 or len(consumers[mm.output[0]]) != 1:
                raise ExportError(f"{path}: {mm.name}: expected MatMulInteger -> Cast, found "
                                  f"{[c.op_type for c in consumers[mm.output[0]]]}")
            acc = cast[0].output[0]
            m = f"{p}_{j}"
            corr_c = const(f"{m}/colsum", colsum)
            nodes_after = [
                helper.make_node("Mul", [zp, corr_c], [f"{m}/zp_term"], name=f"{m}/zp_term"),
                helper.make_node("Sub", [acc, f"{m}/zp_term"], [f"{m}/centred"], name=f"{m}/centred"),
            ]
            for user in list(consumers[acc]):
                user.input[list(user.input).index(acc)] = f"{m}/centred"
            new_nodes.setdefault(cast[0].name, []).extend(nodes_after)
        for mul in consumers[xs_old]:  # a_scale * b_scale: now [..., 1] * [N] -> [..., N]
            mul.input[list(mul.input).index(xs_old)] = s
        new_nodes[dql.name] = nodes
        remove.add(dql.name)
        rewritten += 1
    order = []
    for node in g.node:
        if node.name not in remove:
            order.append(node)
        if node.name in new_nodes:
            # Replacement nodes go where the DQL was (their inputs exist there); the zero-point terms after their Cast.
            order.extend(new_nodes[node.name])
    del g.node[:]
    g.node.extend(order)
    onnx.save(model, str(path))
    return rewritten
