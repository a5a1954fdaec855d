"""The fp16 variant (GPU instances): fp32 inputs and outputs, normalisations and reductions kept fp32."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from client.errors import ConfigError
from export.errors import ExportError

#: Operator types kept in fp32 in the fp16 variant: normalisations and reductions
#: (sums of squares over a window or a frame overflow fp16's 65504), Softmax, and
#: onnxconverter-common's own list of ops without fp16 kernels. GELU's Erf and the
#: MatMul/Conv/Add bulk run in fp16.
FP16_KEEP_FP32_OPS = (
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax",
    "ReduceSum", "ReduceMean", "Pow", "Sqrt",
)


@dataclass(frozen=True)
class Fp16Config:
    """Options of the fp16 conversion (``onnxconverter_common.float16.convert_float_to_float16``).

    The graph's inputs and outputs stay FP32 (``keep_io_types``): the serving
    contract (``waveform`` FP32, ``logits``/``probabilities`` FP32) does not change.

    Attributes:
        keep_fp32_ops: operator types computed in fp32 (casts are inserted around them).
        keep_input_normalisation_fp32: keep every node upstream of the first ``Conv``
            (the in-graph per-clip mean/variance over W samples) in fp32.
        keep_float_casts_fp32: keep ``Cast(to=FLOAT)`` nodes and their consumers in fp32
            (mask-derived counts, the pooled mean's divisor); the converter leaves
            these casts at FLOAT, so converting their consumers would mix types.
        max_finite_val: constants are clamped to ±this (fp16's range; the attention
            mask's -inf/finfo.min becomes -1e4, which still zeroes a softmax weight).
    """

    keep_fp32_ops: tuple[str, ...] = FP16_KEEP_FP32_OPS
    keep_input_normalisation_fp32: bool = True
    keep_float_casts_fp32: bool = True
    max_finite_val: float = 1e4

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_fp32_ops", tuple(self.keep_fp32_ops))
        if "LayerNormalization" not in self.keep_fp32_ops:
            raise ConfigError(f"keep_fp32_ops={list(self.keep_fp32_ops)}: LayerNormalization must stay fp32 (its variance overflows fp16)")
        if not 1.0 <= self.max_finite_val <= 65504.0:
            raise ConfigError(f"max_finite_val={self.max_finite_val}: must be in [1, 65504] (fp16's largest finite value)")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in the recipe)."""
        return {**asdict(self), "keep_fp32_ops": list(self.keep_fp32_ops)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Fp16Config":
        """Inverse of :meth:`to_json`."""
        return cls(**{**d, "keep_fp32_ops": tuple(d["keep_fp32_ops"])})


def _prepare_for_fp16(model, config: Fp16Config) -> list[str]:
    """Make an exported graph convertible, in place; return the node names to keep in fp32.

    Three things break ``convert_float_to_float16`` on the TorchScript export (each
    seen here): ``Identity`` nodes aliasing a shared weight (ORT then sees an fp32
    and an fp16 copy bound to one type parameter), initializers shared between a
    kept-fp32 and a converted node (the converter leaves them fp32 for both), and
    stale ``value_info`` types. So: Identity nodes are bypassed, every float
    initializer used by more than one node gets one copy per extra use, and
    ``value_info`` is dropped (the converter re-infers shapes).
    """
    import onnx

    g = model.graph
    outputs = {o.name for o in g.output}
    alias: dict[str, str] = {}
    kept = []
    for node in g.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            kept.append(node)

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = resolve(name)
    del g.node[:]
    g.node.extend(kept)

    inits = {t.name: t for t in g.initializer}
    uses: dict[str, int] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            t = inits.get(name)
            if t is None or t.data_type != onnx.TensorProto.FLOAT:
                continue
            uses[name] = uses.get(name, 0) + 1
            if uses[name] > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(t)
                copy.name = f"{name}__use{uses[name]}"
                g.initializer.append(copy)
                node.input[i] = copy.name
    del g.value_info[:]

    block: set[str] = set()
    producers = {out: node for node in g.node for out in node.output}
    if config.keep_input_normalisation_fp32:
        first_conv = next((n for n in g.node if n.op_type == "Conv"), None)
        stack = [first_conv.input[0]] if first_conv is not None else []
        while stack:
            node = producers.get(stack.pop())
            if node is None or node.name in block:
                continue
            block.add(node.name)
            stack.extend(node.input)
    if config.keep_float_casts_fp32:
        consumers: dict[str, list] = {}
        for node in g.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        for node in g.node:
            if node.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute):
                block.add(node.name)
                block.update(c.name for c in consumers.get(node.output[0], []))
    unnamed = [n for n in g.node if not n.name]
    for k, node in enumerate(unnamed):
        node.name = f"ser_fp16_unnamed_{k}"
    return sorted(block)


def convert_fp16(src: str | Path, dst: str | Path, *, config: Fp16Config = Fp16Config()) -> Path:
    """fp16 copy of an fp32 ONNX file, FP32 inputs/outputs, overflow-prone ops kept fp32.

    Args:
        src: the fp32 ``.onnx``.
        dst: where to write the fp16 ``.onnx`` (one file).
        config: which ops/nodes stay fp32.

    Returns:
        ``dst``.

    Raises:
        ExportError: the conversion failed, or the result does not pass ``onnx.checker``.
    """
    import warnings

    import onnx
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    src, dst = Path(src), Path(dst)
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and I/O errors
        raise ExportError(f"{src}: not a readable ONNX model: {exc}") from None
    nodes = _prepare_for_fp16(model, config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the float32 number -inf will be truncated to -10000.0"
            converted = convert_float_to_float16(
                model,
                max_finite_val=config.max_finite_val,
                keep_io_types=True,
                op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(config.keep_fp32_ops)),
                node_block_list=nodes,
            )
        del converted.graph.value_info[:]  # let the runtime infer types: the converter leaves stale ones
        _restore_fp32_outputs(converted)
        onnx.save(converted, str(dst))
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        raise ExportError(f"{src}: fp16 conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    from export.onnx_export import check_graph, read_signature

    reference = read_signature(src)
    check_graph(dst, window_samples=reference.window_samples, num_labels=reference.num_labels)  # the FP32 interface, unchanged
    return dst


def _restore_fp32_outputs(model) -> None:
    """Make every graph output FP32 again.

    ``keep_io_types`` misses an output produced by a kept-fp32 node (here the final
    ``Softmax``): the converter appends a ``Cast`` to FLOAT16 and declares the
    output FLOAT16. That Cast is turned into a Cast to FLOAT (a no-op on the
    fp32 Softmax output), so ``probabilities`` stays FP32 as the contract says.
    """
    import onnx

    producers = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        t = out.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT16:
            continue
        node = producers.get(out.name)
        if node is None or node.op_type != "Cast":
            raise ExportError(f"output {out.name!r} became FLOAT16 and is not produced by a Cast; cannot restore FP32")
        for attr in node.attribute:
            if attr.name == "to":
                attr.i = onnx.TensorProto.FLOAT
        t.elem_type = onnx.TensorProto.FLOAT
