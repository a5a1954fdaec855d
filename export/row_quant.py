"""Per-row activation scales for dynamic int8: a window's answer must not depend on its batch.

``quantize_dynamic`` quantizes each ``MatMul`` input with ``DynamicQuantizeLinear``: one
scale and zero point for the *whole* input tensor. A served batch is one tensor (the
dynamic batcher stacks the windows of different callers), so a quiet window batched with
loud ones is quantized on the loud ones' scale and its answer changes with its neighbours.

:func:`quantize_rows` rewrites each ``DynamicQuantizeLinear`` that feeds only the
``MatMulInteger`` → ``Cast`` → ``Mul`` pattern into a quantization per *row* of the GEMM's
left operand (one scale per vector along the last axis: per frame of one window, never
across windows), symmetric around the fixed zero point 128::

    x2 = reshape(x, [M, K])                        rows of the GEMM
    s  = max(max|x2| / 127.5, 1e-30)               [M]      one scale per row
    xq = QuantizeLinear(x2, s, 128, axis=0)        [M, K]   uint8, round half to even
    y  = MatMulIntegerToFloat(xq, Wq, 1, Wscale, 128, Wzp) * s     [..., N]

Every op is a standard ONNX op or an ONNX Runtime CPU kernel (``QuantizeLinear`` per axis,
``com.microsoft.MatMulIntegerToFloat``: the integer GEMM with the weight scales applied in its
epilogue), so the rewrite costs one pass over the input (``max|x|``) and one over the output
(``* s``) more than the per-tensor graph. Why symmetric: ORT's integer GEMMs take one zero
point for the activations, so a per-row zero point would need a correction pass of its own.
ONNX Runtime's ``QAttention`` takes one input scale per tensor, so the per-row mode needs the
attention blocks left unfused (:class:`export.quantize.QuantizationConfig` checks).
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
        ExportError: a ``DynamicQuantizeLinear`` output feeds something other than that
            pattern (e.g. ``QAttention``, which takes one scale per tensor).
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

    shared = {"zp": np.uint8(128), "half_range": np.float32(127.5), "min_scale": np.float32(MIN_SCALE),
              "one": np.float32(1.0), "last": np.array([-1], np.int64), "first": np.array([0], np.int64),
              "unit": np.array([1], np.int64)}
    for key, value in shared.items():
        g.initializer.append(numpy_helper.from_array(np.asarray(value), f"rowq/{key}"))

    def bad(why: str, dql) -> ExportError:
        return ExportError(f"{path}: {dql.name}: per-row activation scales need {why} (leave attention unfused)")

    replaced: dict[str, list] = {}  # name of the node the new nodes go after (or replace) -> new nodes
    remove: set[str] = set()  # first output of each node replaced
    rewritten = 0
    for dql in [n for n in g.node if n.op_type == "DynamicQuantizeLinear"]:
        xq_old, xs_old, zp_old = dql.output
        users = consumers[xq_old]
        if not users or any(u.op_type != "MatMulInteger" for u in users + consumers[zp_old]):
            raise bad(f"every user to be MatMulInteger; found {sorted({u.op_type for u in users + consumers[zp_old]})}", dql)
        x, p = dql.input[0], f"rowq{rewritten}"
        k = int(numpy_helper.to_array(inits[users[0].input[1]]).shape[-2]) if users[0].input[1] in inits else None
        if k is None:
            raise bad("constant weights", dql)
        g.initializer.append(numpy_helper.from_array(np.array([-1, k], np.int64), f"{p}/rows_shape"))
        nodes = [
            helper.make_node("Shape", [x], [f"{p}/x_shape"], name=f"{p}/x_shape"),
            helper.make_node("Reshape", [x, f"{p}/rows_shape"], [f"{p}/rows"], name=f"{p}/rows"),
            helper.make_node("Abs", [f"{p}/rows"], [f"{p}/abs"], name=f"{p}/abs"),
            helper.make_node("ReduceMax", [f"{p}/abs"], [f"{p}/max"], axes=[1], keepdims=0, name=f"{p}/max"),
            helper.make_node("Div", [f"{p}/max", "rowq/half_range"], [f"{p}/step"], name=f"{p}/step"),
            # A row of zeros (padding) has max 0: a tiny scale keeps it at the zero point instead of 0/0.
            helper.make_node("Max", [f"{p}/step", "rowq/min_scale"], [f"{p}/scale"], name=f"{p}/scale"),
            helper.make_node("Shape", [f"{p}/scale"], [f"{p}/m"], name=f"{p}/m"),
            helper.make_node("Expand", ["rowq/zp", f"{p}/m"], [f"{p}/zps"], name=f"{p}/zps"),
            helper.make_node("QuantizeLinear", [f"{p}/rows", f"{p}/scale", f"{p}/zps"], [f"{p}/q_rows"], axis=0,
                             name=f"{p}/quantize"),
            helper.make_node("Reshape", [f"{p}/q_rows", f"{p}/x_shape"], [f"{p}/q"], name=f"{p}/q"),
            # The scales shaped [..., 1] like x without its last axis, to multiply the GEMM's rows.
            helper.make_node("Slice", [f"{p}/x_shape", "rowq/first", "rowq/last"], [f"{p}/lead"], name=f"{p}/lead"),
            helper.make_node("Concat", [f"{p}/lead", "rowq/unit"], [f"{p}/scale_shape"], axis=0, name=f"{p}/scale_shape"),
            helper.make_node("Reshape", [f"{p}/scale", f"{p}/scale_shape"], [f"{p}/row_scale"], name=f"{p}/row_scale"),
        ]
        for j, mm in enumerate(users):
            after = consumers[mm.output[0]]
            if len(after) != 1 or after[0].op_type != "Cast" or len(consumers[after[0].output[0]]) != 1:
                raise bad("MatMulInteger -> Cast -> Mul", dql)
            cast, mul = after[0], consumers[after[0].output[0]][0]
            scales = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
            scale_mul = next((n for n in g.node if scales in n.output), None)
            if mul.op_type != "Mul" or scale_mul is None or xs_old not in scale_mul.input:
                raise bad("MatMulInteger -> Cast -> Mul(a_scale * b_scale)", dql)
            w_scale = scale_mul.input[1] if scale_mul.input[0] == xs_old else scale_mul.input[0]
            w_zp = mm.input[3] if len(mm.input) > 3 else ""
            q = f"{p}_{j}"
            nodes += [
                helper.make_node("MatMulIntegerToFloat", [f"{p}/q", mm.input[1], "rowq/one", w_scale, "rowq/zp", w_zp],
                                 [f"{q}/gemm"], domain="com.microsoft", name=f"{q}/gemm"),
                helper.make_node("Mul", [f"{q}/gemm", f"{p}/row_scale"], [mul.output[0]], name=f"{q}/rescale"),
            ]
            remove.update(n.output[0] for n in (mm, cast, mul, scale_mul))
        replaced[dql.name] = nodes
        remove.add(dql.output[0])
        rewritten += 1
    order = []
    for node in g.node:
        if node.op_type == "DynamicQuantizeLinear" and node.name in replaced:
            order.extend(replaced[node.name])
        elif node.output[0] not in remove:
            order.append(node)
    del g.node[:]
    g.node.extend(order)
    if rewritten and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
    return rewritten
