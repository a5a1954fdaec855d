"""Rewrite plain 1-D convolutions as exact ``Reshape`` + ``MatMul`` graphs, so that int8 covers them.

ONNX Runtime's ``MatMulInteger`` kernels are fast on x86; its ``ConvInteger`` is slower
than fp32 convolution. Rewriting wav2vec2's conv feature encoder as ``MatMul`` graphs
(:func:`convs_to_matmul`) lets dynamic int8 quantize it with the transformer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from export.errors import ExportError


@dataclass(frozen=True)
class ConvRewrite:
    """What :func:`convs_to_matmul` did.

    Attributes:
        rewritten: how many ``Conv`` nodes became ``MatMul`` graphs.
        fp32_matmuls: names of the ``MatMul`` nodes made from convolutions with fewer
            than ``quantize_min_in_channels`` input channels (the first conv, which reads
            the raw waveform): to be left out of int8 quantization.
    """

    rewritten: int
    fp32_matmuls: tuple[str, ...] = ()


def convs_to_matmul(src: str | Path, dst: str | Path, *, quantize_min_in_channels: int = 2) -> ConvRewrite:
    """Rewrite plain 1-D convolutions of a static length as ``Reshape`` + ``MatMul`` graphs, exactly.

    A ``Conv`` over ``x [B, Cin, T]`` with weight ``[Cout, Cin, k]``, stride ``s``, no
    padding, no dilation and one group computes, for each of ``T_out = (T - k) // s + 1``
    output frames ``t``, ``sum_j W[:, :, j] @ x[:, :, s*t + j]``. Its taps fall into
    blocks of ``s`` consecutive samples; a full block ``b`` is a plain reshape of the
    channel-last input, so no im2col copy is made::

        xt  = Transpose(x)                                              [B, T, Cin]
        A_b = Reshape(Slice(xt, b*s, b*s + s*T_out), [0, T_out, s*Cin])  [B, T_out, s*Cin]
        y   = sum_b MatMul(A_b, W[:, :, b*s:(b+1)*s] as [s*Cin, Cout])  (+ bias)
        out = Transpose(y)                                              [B, Cout, T_out]

    (The ``Slice`` is skipped when it would keep all of ``T``.) Taps of a last, partial
    block are each one strided ``Slice`` (step ``s``) and one ``MatMul``. For
    wav2vec2's encoder: k=3/s=2 is one reshape + one strided tap, k=2/s=2 a reshape
    only, the first conv (k=10/s=5, one input channel) two reshapes. ONNX Runtime's
    transpose optimiser cancels the ``Transpose`` pairs this leaves against the
    feature encoder's own channel-last LayerNorm. The point is quantization:
    ``MatMul`` gets the fast ``MatMulInteger`` kernels, ``ConvInteger`` does not (see
    the module docstring).

    ``T`` must be static (ONNX shape inference on the graph gives it: the bundle's
    graphs have a fixed window); a convolution whose length is not known stays ``Conv``.

    Args:
        src: fp32 ``.onnx`` to read.
        dst: where to write the rewritten graph.
        quantize_min_in_channels: the ``MatMul`` nodes made from convolutions with fewer
            input channels are listed in :attr:`ConvRewrite.fp32_matmuls` (default 2:
            the first conv, which reads the raw waveform, is computed as an fp32
            ``MatMul``: one scale per tensor for raw audio is too coarse).

    Returns:
        A :class:`ConvRewrite`.

    Raises:
        ExportError: ``src`` is unreadable.
    """
    import onnx
    from onnx import helper, numpy_helper

    try:
        model = onnx.load(str(src))
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and I/O errors
        raise ExportError(f"{src}: not a readable ONNX model: {exc}") from None
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    lengths = _static_lengths(model)
    new_nodes, new_inits, fp32_matmuls, rewritten = [], [], [], 0
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        length = lengths.get(node.input[0]) if node.input else None
        if length is None or not _is_plain_conv1d(node, attrs, weight, inits):
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)
        stride = int(attrs.get("strides", [1])[0])
        if (length - w.shape[2]) // stride + 1 < 1:
            new_nodes.append(node)  # ONNX Runtime reports the invalid shape as it would have
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        nodes, tensors, fp32 = _conv_as_matmul(
            node, w, bias, numpy_helper.to_array(inits[bias]) if bias else None, length=length, stride=stride,
            fp32=w.shape[1] < quantize_min_in_channels)
        new_nodes += nodes
        new_inits += tensors
        fp32_matmuls += fp32
        rewritten += 1
    used = {name for n in new_nodes for name in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    onnx.save(model, str(dst))
    return ConvRewrite(rewritten=rewritten, fp32_matmuls=tuple(fp32_matmuls))


def _conv_as_matmul(node, w, bias: str | None, bias_values, *, length: int, stride: int, fp32: bool):
    """The ``MatMul`` graph of one plain 1-D ``Conv`` (see :func:`convs_to_matmul`).

    Args:
        node: the ``Conv``; its input and output names are kept.
        w: its weight ``[Cout, Cin, k]`` (float32).
        bias: the name of its bias initializer, or ``None``.
        bias_values: the bias ``[Cout]`` (float32), or ``None``.
        length: T, the static length of its input.
        stride: s.
        fp32: the MatMuls will not be quantized (so the bias may ride in the GEMM).

    Returns:
        ``(nodes, initializers, fp32 MatMul names)``.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    c_out, c_in, k = w.shape
    s = stride
    t_out = (length - k) // s + 1
    p = f"{node.name or node.output[0]}__as_matmul"
    new_nodes, new_inits, fp32_matmuls = [], [], []
    bias_row = None

    def const(name: str, values) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def matmul(a: str, taps: range, tag: str) -> str:
        w_mat = f"{p}/weight_{tag}"
        w_taps = w[:, :, taps.start:taps.stop]  # [Cout, Cin, n]: rows tap-major, then channel
        w_rows = w_taps.transpose(2, 1, 0).reshape(len(taps) * c_in, c_out)
        if bias_row is not None:  # the input ends with a column of ones
            w_rows = np.concatenate([w_rows, bias_row])
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(w_rows, dtype=w.dtype), w_mat))
        y = f"{p}/y_{tag}"
        new_nodes.append(helper.make_node("MatMul", [a, w_mat], [y], name=f"{p}/matmul_{tag}"))
        if fp32:
            fp32_matmuls.append(f"{p}/matmul_{tag}")
        return y

    xt = f"{p}/x_t"
    new_nodes.append(helper.make_node("Transpose", [node.input[0]], [xt], perm=[0, 2, 1], name=f"{p}/transpose_in"))
    axis = const(f"{p}/axis", [1])
    pieces: list[tuple[str, range, str]] = []  # (input [B, T_out, n*Cin], taps, tag)
    for b in range(-(-k // s)):
        first = b * s
        if first + s <= k:  # a full block of s taps: a reshape of the channel-last input
            src_t, end = xt, first + s * t_out
            if (first, end) != (0, length):
                src_t = f"{p}/block{b}"
                new_nodes.append(helper.make_node("Slice", [xt, const(f"{p}/start{b}", [first]), const(f"{p}/end{b}", [end]), axis],
                                                  [src_t], name=f"{p}/slice_block{b}"))
            a = f"{p}/cols{b}"
            new_nodes.append(helper.make_node("Reshape", [src_t, const(f"{p}/shape{b}", [0, t_out, s * c_in])], [a],
                                              name=f"{p}/reshape_block{b}"))
            pieces.append((a, range(first, first + s), f"block{b}"))
        else:  # the last, partial block: one strided slice per tap
            for j in range(first, k):
                a = f"{p}/tap{j}"
                new_nodes.append(helper.make_node(
                    "Slice", [xt, const(f"{p}/start_tap{j}", [j]), const(f"{p}/end_tap{j}", [j + s * (t_out - 1) + 1]),
                              axis, const(f"{p}/step_tap{j}", [s])], [a], name=f"{p}/slice_tap{j}"))
                pieces.append((a, range(j, j + 1), f"tap{j}"))
    if len(pieces) > 1 and k * c_in <= c_out:
        # Few input values per frame (the 1-channel first conv): one im2col Concat copies no more than
        # the output holds, and one GEMM beats several output-sized partial sums.
        cols = f"{p}/cols"
        new_nodes.append(helper.make_node("Concat", [a for a, _, _ in pieces], [cols], axis=2, name=f"{p}/concat"))
        pieces = [(cols, range(0, k), "all")]
        if bias and fp32:
            # An fp32 MatMul: a column of ones and a bias row add the bias inside the GEMM instead of
            # one more pass over the output (2.8 ms on the first conv's 7999 x 512 frames).
            ones = f"{p}/cols_1"
            new_nodes.append(helper.make_node("Pad", [cols, const(f"{p}/pad_1", [0, 0, 0, 0, 0, 1])], [ones],
                                              mode="constant", name=f"{p}/pad_ones"))
            new_nodes[-1].input.append(f"{p}/one")
            new_inits.append(numpy_helper.from_array(np.ones((), dtype=np.float32), f"{p}/one"))
            pieces = [(ones, range(0, k), "all")]
            bias_row = np.asarray(bias_values, dtype=w.dtype).reshape(1, c_out)
            bias = None
    terms: list[str] = []
    for i, (a, taps, tag) in enumerate(pieces):
        term = matmul(a, taps, tag)
        if i == 0 and bias:  # on the first MatMul, where ONNX Runtime fuses it into the int8 kernel's bias
            new_nodes.append(helper.make_node("Add", [term, bias], [f"{p}/y_bias"], name=f"{p}/bias"))
            term = f"{p}/y_bias"
        terms.append(term)
    y = terms[0]
    if len(terms) > 1:
        # Sum, not Add: ONNX Runtime fuses Add + LayerNormalization into SkipLayerNormalization,
        # whose CPU kernel took 23 ms on the 7999-frame layer where Add + LayerNormalization take ~6.
        y = f"{p}/sum"
        new_nodes.append(helper.make_node("Sum", terms, [y], name=f"{p}/sum"))
    new_nodes.append(helper.make_node("Transpose", [y], [node.output[0]], perm=[0, 2, 1], name=f"{p}/transpose_out"))
    return new_nodes, new_inits, fp32_matmuls


def _static_lengths(model) -> dict[str, int]:
    """The static last-axis length of every rank-3 tensor ONNX shape inference can tell.

    Inference runs on a skeleton of ``model``: initializers of more than 64 elements
    become graph inputs of the same type and shape (inference needs their shapes, not
    their values), so a 1.2 GB graph is not serialised for it.
    """
    import numpy as np
    import onnx
    from onnx import helper

    g = model.graph
    small = [t for t in g.initializer if int(np.prod(t.dims)) <= 64]
    large = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in g.initializer if int(np.prod(t.dims)) > 64]
    skeleton = helper.make_model(
        helper.make_graph(list(g.node), "skeleton", list(g.input) + large, list(g.output), small),
        opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton).graph
    except Exception:  # noqa: BLE001 - inference is best effort: unknown lengths stay Conv
        return {}
    lengths = {}
    for v in list(inferred.value_info) + list(inferred.input):
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 3 and dims[2].HasField("dim_value"):
            lengths[v.name] = int(dims[2].dim_value)
    return lengths


def _is_plain_conv1d(node, attrs: Mapping[str, Any], weight, inits: Mapping[str, Any]) -> bool:
    """Whether ``node`` is a 1-D ``Conv`` that :func:`convs_to_matmul` can rewrite.

    That is: an fp32 initializer weight ``[Cout, Cin, k]``, one group,
    no padding, no dilation, and a bias (if any) that is an initializer.
    """
    import onnx

    return (weight is not None and len(weight.dims) == 3 and weight.data_type == onnx.TensorProto.FLOAT
            and attrs.get("group", 1) == 1
            and all(p == 0 for p in attrs.get("pads", [0]))
            and all(d == 1 for d in attrs.get("dilations", [1]))
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and (len(node.input) < 3 or not node.input[2] or node.input[2] in inits))
