"""Fuse wav2vec2's self-attention blocks into ONNX Runtime's ``Attention`` op (quantized to ``QAttention``)."""

from __future__ import annotations

from pathlib import Path

from export.errors import ExportError


def fuse_attention(src: str | Path, dst: str | Path) -> int:
    """Fuse every self-attention block of an fp32 graph into ONNX Runtime's ``Attention`` op.

    ONNX Runtime's transformer optimizer (``model_type="bert"``) does the matching; it
    cannot find the head count and width in a wav2vec2 graph, so they come from the
    graph's metadata (written by :func:`export.onnx_export.export_onnx`). Only the
    attention fusion is kept: the optimizer also fuses residual ``Add`` +
    ``LayerNormalization`` into ``SkipLayerNormalization``, whose CPU kernel took ~0.5 ms
    per call where the two ops take ~0.25 (xlsr-large: 23 ms of a ~200 ms int8 call),
    so those are split back (:func:`_split_skip_layer_norms`), and its ``BiasGelu``
    would pull the bias out of the int8 MatMul; it is off. The fused graph computes
    what the unfused one does (xlsr-large, padded rows included: max |Δlogit| 0;
    the tests compare on the tiny model).

    Args:
        src: fp32 ``.onnx`` to read (from ``export_onnx``, eager attention).
        dst: where to write the fused graph.

    Returns:
        The number of ``Attention`` nodes (0: no block matched; the graph is unchanged
        otherwise).

    Raises:
        ExportError: ``src`` is unreadable or lacks the attention metadata.
    """
    import logging

    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from export.onnx_export import META_ATTENTION_HEADS, META_HIDDEN_SIZE, read_metadata

    try:
        meta = read_metadata(onnx.load(str(src), load_external_data=False))
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and I/O errors
        raise ExportError(f"{src}: not a readable ONNX model: {exc}") from None
    missing = [k for k in (META_ATTENTION_HEADS, META_HIDDEN_SIZE) if k not in meta]
    if missing:
        raise ExportError(f"{src}: no {', '.join(missing)} metadata, which the attention fusion needs: export the graph "
                          "with `ser export` (export.onnx_export.export_onnx), or use a preset without fuse_attention")
    options = FusionOptions("bert")
    options.enable_gelu = options.enable_bias_gelu = options.enable_gelu_approximation = False
    quiet = logging.getLogger("onnxruntime.transformers")
    level, quiet.level = quiet.level, logging.ERROR  # it logs every pattern it does not find
    try:
        optimized = optimize_model(str(src), model_type="bert", num_heads=int(meta[META_ATTENTION_HEADS]),
                                   hidden_size=int(meta[META_HIDDEN_SIZE]), opt_level=0, optimization_options=options)
    finally:
        quiet.setLevel(level)
    model = optimized.model
    _split_skip_layer_norms(model.graph)
    if any(n.domain == "com.microsoft" for n in model.graph.node) and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.add(domain="com.microsoft", version=1)  # the optimizer leaves it to save_model_to_file
    onnx.save(model, str(dst))
    return sum(n.op_type == "Attention" for n in model.graph.node)


def _split_skip_layer_norms(graph) -> int:
    """Replace each ``SkipLayerNormalization`` by ``Add`` (+ bias ``Add``) and ``LayerNormalization``, in place.

    Outputs 0 (normalised) and 3 (the input + skip + bias sum) are kept; the mean and
    inverse-std outputs are never consumed in these graphs (checked). Returns how many
    nodes were split.
    """
    from onnx import helper

    nodes, split = [], 0
    for n in graph.node:
        if n.op_type != "SkipLayerNormalization":
            nodes.append(n)
            continue
        if any(len(n.output) > i and n.output[i] for i in (1, 2)):
            raise ExportError(f"{n.name}: SkipLayerNormalization with a mean/inv-std output cannot be split")
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        x, skip, gamma = n.input[0], n.input[1], n.input[2]
        beta = n.input[3] if len(n.input) > 3 else ""
        bias = n.input[4] if len(n.input) > 4 else ""
        total = n.output[3] if len(n.output) > 3 and n.output[3] else f"{n.name}/sum"
        if bias:
            nodes.append(helper.make_node("Add", [x, bias], [f"{n.name}/biased"], name=f"{n.name}/bias"))
            x = f"{n.name}/biased"
        nodes.append(helper.make_node("Add", [x, skip], [total], name=f"{n.name}/add"))
        nodes.append(helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []), [n.output[0]],
                                      axis=-1, epsilon=attrs.get("epsilon", 1e-12), name=f"{n.name}/layer_norm"))
        split += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return split
