"""Dynamic int8 variants of the fp32 graph with ONNX Runtime: presets, and the quantizer.

A preset is one name that maps to one :class:`QuantizationConfig`; a config object is
the escape hatch. How the presets are built, and why:

* Activations are quantized per row (one scale and zero point per frame of one window,
  :func:`export.row_quant.quantize_rows`), not per tensor: a served batch is one tensor
  holding other callers' windows, and a window's answer must not depend on them.
* int8 *compute* is ``MatMul`` (``MatMulInteger``): ONNX Runtime's
  ``ConvInteger`` is slower on x86 than fp32 convolution, so a convolution is either
  rewritten as exact ``MatMul`` graphs first (:func:`export.conv_rewrite.convs_to_matmul`)
  or computed in fp32, its weights optionally *stored* int8 (:func:`store_conv_weights`).
* The first convolution reads the raw waveform; one activation scale per tensor is too
  coarse there, so it stays fp32 in every preset.
* Self-attention fused into ONNX Runtime's ``Attention`` op
  (:func:`export.attention_fusion.fuse_attention`) quantizes to ``QAttention``, which is faster
  but takes one activation scale per tensor: only the ``-qattention`` preset (unbatched serving) uses it.
* Weights are 7-bit (``reduce_range``) in the presets ``ser export`` picks from
  (:data:`INT8_PRESET_ORDER`): on x86 CPUs without VNNI, ONNX Runtime's u8*s8 GEMM adds
  two products in a saturating int16 (``vpmaddubsw``); with |w| <= 64 no sum can clip,
  so the integers are the same on AVX2, VNNI and AMX hosts (:func:`integer_weights`).
* Whether the conv feature encoder stands int8 depends on the model: the export tries
  the whole-model preset first and falls back to the transformer-only one
  (:mod:`export.int8_selection`).
* ORT's ``quant_pre_process`` is an option, off by default: it did not change size or
  speed of the bundle's graphs and takes several times longer.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from client.errors import ConfigError
from export.attention_fusion import fuse_attention
from export.conv_rewrite import convs_to_matmul
from export.errors import ExportError
from export.row_quant import quantize_rows

WEIGHT_TYPES = ("qint8", "quint8")
#: How the weights of Conv nodes left in fp32 are stored (see :func:`store_conv_weights`).
CONV_WEIGHT_STORAGE = ("fp32", "fp16", "int8")
#: Granularity of the activations' dynamic scales (see ``QuantizationConfig.activation_scales``).
ACTIVATION_SCALES = ("tensor", "row")
#: Operator types quantize_dynamic knows how to quantize.
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv", "Attention", "LSTM", "GRU", "EmbedLayerNormalization", "Gather")


@dataclass(frozen=True)
class QuantizationConfig:
    """Options of ``onnxruntime.quantization.quantize_dynamic``.

    Attributes:
        op_types: operator types to quantize (``("MatMul",)``: the transformer's
            projections; the conv feature encoder stays fp32).
        weight_type: ``"qint8"`` (signed, VNNI-friendly) or ``"quint8"``.
        per_channel: per-output-channel weight scales instead of one per tensor.
        reduce_range: 7-bit weights (for CPUs without VNNI, avoids saturation).
        preprocess: run ``quant_pre_process`` (shape inference + ORT graph
            optimisation) on the fp32 graph first (off: no gain measured, 3.5x slower).
        extra_options: passed through to ``quantize_dynamic(extra_options=...)``.
        conv_nodes: with ``Conv`` in ``op_types``: quantize only the Conv nodes whose
            name contains one of these substrings (e.g. ``("pos_conv",)``: the
            positional convolution, 34 MB of xlsr-large); empty: every Conv.
        conv_weight_storage: how the weights of the Conv nodes left in fp32 are stored:
            ``"fp32"``; ``"fp16"`` or ``"int8"`` (per output channel) behind ``Cast``/``Mul``
            nodes that ONNX Runtime constant-folds when the session is created, so compute
            stays fp32 (same speed) and the file is smaller (:func:`store_conv_weights`).
        conv_weight_nodes: with ``conv_weight_storage`` other than ``"fp32"``: store only the weights of
            the Conv nodes whose name contains one of these substrings (e.g. ``("pos_conv",)``); empty: all.
        conv_as_matmul: before quantizing, rewrite each plain 1-D ``Conv`` of a static length
            (the feature encoder's seven; not the grouped positional conv) as ``Reshape`` /
            ``Slice`` + ``MatMul`` graphs (:func:`convs_to_matmul`), so that ``"MatMul"`` int8
            covers layers 1..6 with the fast ``MatMulInteger`` kernels instead of
            ``ConvInteger``; the first conv, which reads the raw waveform, is left fp32.
        fuse_attention: before quantizing, fuse each self-attention block into ONNX
            Runtime's ``Attention`` op (:func:`fuse_attention`), which ``"Attention"`` in
            ``op_types`` turns into ``QAttention``: one int8 GEMM for Q, K and V and the
            attention core in one kernel instead of ~15 nodes.
        activation_scales: ``"row"``: each MatMul input quantized with one scale and zero point per
            row (per frame of one window, :func:`export.row_quant.quantize_rows`), so a window's
            answer does not depend on the other windows of its batch; ``"tensor"``: ORT's one scale
            per input tensor, which a served batch shares between callers. ``"row"`` cannot be
            combined with ``fuse_attention``: ``QAttention`` takes one input scale per tensor.
    """

    op_types: tuple[str, ...] = ("MatMul",)
    weight_type: str = "qint8"
    per_channel: bool = False
    reduce_range: bool = False
    preprocess: bool = False
    extra_options: Mapping[str, Any] = field(default_factory=dict)
    conv_nodes: tuple[str, ...] = ()
    conv_weight_storage: str = "fp32"
    conv_weight_nodes: tuple[str, ...] = ()
    conv_as_matmul: bool = False
    fuse_attention: bool = False
    activation_scales: str = "tensor"

    def __post_init__(self) -> None:
        if self.activation_scales not in ACTIVATION_SCALES:
            raise ConfigError(f"activation_scales={self.activation_scales!r}: expected one of {list(ACTIVATION_SCALES)}")
        if self.activation_scales == "row" and ("Attention" in self.op_types or self.fuse_attention):
            raise ConfigError("activation_scales='row' with 'Attention' quantized: QAttention takes one input scale "
                              "per tensor; leave attention unfused (op_types without 'Attention', fuse_attention=False)")
        if self.conv_weight_storage not in CONV_WEIGHT_STORAGE:
            raise ConfigError(f"conv_weight_storage={self.conv_weight_storage!r}: expected one of {list(CONV_WEIGHT_STORAGE)}")
        object.__setattr__(self, "op_types", tuple(self.op_types))
        object.__setattr__(self, "conv_nodes", tuple(self.conv_nodes))
        object.__setattr__(self, "conv_weight_nodes", tuple(self.conv_weight_nodes))
        if self.conv_weight_nodes and self.conv_weight_storage == "fp32":
            raise ConfigError(f"conv_weight_nodes={list(self.conv_weight_nodes)} needs conv_weight_storage "
                              "'fp16' or 'int8': with 'fp32' no Conv weight is stored differently")
        if self.conv_nodes and "Conv" not in self.op_types:
            raise ConfigError(f"conv_nodes={list(self.conv_nodes)} needs 'Conv' in op_types={list(self.op_types)}")
        if self.conv_as_matmul and "MatMul" not in self.op_types:
            raise ConfigError(f"conv_as_matmul=True needs 'MatMul' in op_types={list(self.op_types)}: "
                              "the rewritten convolutions are MatMul nodes")
        if self.fuse_attention and "Attention" not in self.op_types:
            raise ConfigError(f"fuse_attention=True needs 'Attention' in op_types={list(self.op_types)}: "
                              "otherwise the fused Attention nodes keep their Q/K/V weights in fp32")
        if not self.op_types:
            raise ConfigError("op_types=(): name at least one operator type to quantize, e.g. ('MatMul',)")
        unknown = [op for op in self.op_types if op not in QUANTIZABLE_OPS]
        if unknown:
            raise ConfigError(f"op_types={list(self.op_types)}: {unknown} cannot be dynamically quantized; choose from {list(QUANTIZABLE_OPS)}")
        if self.weight_type not in WEIGHT_TYPES:
            raise ConfigError(f"weight_type={self.weight_type!r}: expected one of {list(WEIGHT_TYPES)}")
        object.__setattr__(self, "extra_options", dict(self.extra_options))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in the recipe)."""
        d = asdict(self)
        d["op_types"] = list(self.op_types)
        d["extra_options"] = dict(self.extra_options)
        d["conv_nodes"] = list(self.conv_nodes)
        d["conv_weight_nodes"] = list(self.conv_weight_nodes)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "QuantizationConfig":
        """Inverse of :meth:`to_json`."""
        return cls(**{**d, "op_types": tuple(d["op_types"]), "conv_nodes": tuple(d.get("conv_nodes", ())),
                      "conv_weight_nodes": tuple(d.get("conv_weight_nodes", ())),
                      "conv_as_matmul": bool(d.get("conv_as_matmul", False)),
                      "fuse_attention": bool(d.get("fuse_attention", False)),
                      "activation_scales": d.get("activation_scales", "tensor")})


#: The fastest preset, and the first one ``ser export`` tries.
DEFAULT_PRESET = "dynamic-int8-convmatmul"
#: The preset ``ser export`` falls back to when the model's conv feature encoder does not stand int8.
TRANSFORMER_PRESET = "dynamic-int8-transformer"

#: The conv-as-MatMul graph with per-row activation scales at full 8-bit weights; the default is this at 7 bits.
_CONVMATMUL_8BIT = QuantizationConfig(conv_as_matmul=True, per_channel=True, conv_weight_storage="int8",
                                      activation_scales="row")
#: The fastest graph measured, with one activation scale per tensor (a served batch shares it between callers).
_QATTENTION = QuantizationConfig(op_types=("MatMul", "Attention"), conv_as_matmul=True, fuse_attention=True,
                                 per_channel=True, reduce_range=True, conv_weight_storage="int8")

#: Named quantization presets (one name -> one config). docs/export-and-quantization.md explains each and
#: docs/benchmarks.md has their measured speed and size. Every preset but the ``-qattention`` one quantizes
#: activations per row (``activation_scales="row"``), so a window's answer does not depend on its batch.
QUANTIZATION_PRESETS: dict[str, QuantizationConfig] = {
    # The whole model int8: the conv feature encoder's layers 1..6 rewritten as MatMul graphs (convs_to_matmul) and
    # quantized with the transformer (the first conv, which reads the raw waveform, stays an fp32 MatMul); the
    # positional conv's weights stored int8. Activations quantized per row (batch-invariant), so attention stays
    # unfused: QAttention takes one scale per tensor.
    # Per-channel 7-bit weights (|w| <= 64): no u8*s8 pair can saturate vpmaddubsw's int16 on AVX2-only CPUs, so the
    # integer GEMMs give the same answers on every x86 class.
    DEFAULT_PRESET: replace(_CONVMATMUL_8BIT, reduce_range=True),
    # The transformer int8 as in the default, the conv feature encoder fp32 (compute and weights), the positional
    # conv's weights stored int8. For models whose feature encoder loses too much as int8.
    TRANSFORMER_PRESET: QuantizationConfig(per_channel=True, reduce_range=True, conv_weight_storage="int8",
                                           conv_weight_nodes=("pos_conv",), activation_scales="row"),
    # The default at full 8-bit weights: closer to fp32 on CPUs with VNNI or AMX, the same speed there; on AVX2-only
    # CPUs its u8*s8 pairs saturate int16: serve it only where every host has VNNI or AMX.
    "dynamic-int8-convmatmul-vnni": _CONVMATMUL_8BIT,
    # MatMul int8, every Conv computed fp32 with its weights *stored* int8 per output channel behind Cast/Mul
    # nodes that ONNX Runtime folds at load: the speed of "dynamic-int8-matmul", a smaller file.
    "dynamic-int8-compact": QuantizationConfig(conv_weight_storage="int8", activation_scales="row"),
    # MatMul only, QInt8 per-tensor weights, Conv weights fp32.
    "dynamic-int8-matmul": QuantizationConfig(activation_scales="row"),
    # MatMul only, per-channel 8-bit scales: saturates on AVX2-only CPUs like the -vnni preset.
    "dynamic-int8-matmul-per-channel": QuantizationConfig(per_channel=True, activation_scales="row"),
    # MatMul only, u8 weights (U8U8 kernels, widened to int16 before multiplying): exact on every x86 class.
    "dynamic-int8-matmul-avx2": QuantizationConfig(weight_type="quint8", activation_scales="row"),
    # The default's graph with attention fused into QAttention and one activation scale per tensor: faster, but
    # a window's answer depends on the other windows of its batch. Passes the export's gate only with
    # ParityConfig(max_batch_size=1), i.e. for a model served without batching.
    "dynamic-int8-convmatmul-qattention": _QATTENTION,
}

#: The order ``ser export`` tries presets in when none is named: the first whose int8 model agrees with fp32
#: on every CPU class checked, alone and batched, is kept (:func:`export.int8_selection.choose_int8`). Only
#: batch-invariant presets whose integer GEMMs cannot saturate on any x86 class (:func:`integer_weights`
#: ``.avx2_exact``) are listed, so a model verified on one class computes the same integers on the others.
INT8_PRESET_ORDER: tuple[str, ...] = (DEFAULT_PRESET, TRANSFORMER_PRESET, "dynamic-int8-matmul-avx2")

#: Presets whose int8 GEMMs saturate on x86 CPUs without VNNI/AMX badly enough to fail the agreement checks:
#: for fleets where every serving host has VNNI (see :func:`export.cpu_class.cpu_has_vnni`).
VNNI_ONLY_PRESETS: tuple[str, ...] = ("dynamic-int8-convmatmul-vnni", "dynamic-int8-matmul-per-channel")

#: What each preset is for, in one line (``ser export --help`` and the docs list them).
PRESET_EVIDENCE: dict[str, str] = {
    DEFAULT_PRESET: "transformer and conv encoder layers 1-6 int8, per-row activation scales (batch-invariant), "
                    "7-bit per-channel weights (exact on AVX2, VNNI and AMX)",
    TRANSFORMER_PRESET: "transformer int8, conv feature encoder fp32: for models whose encoder does not stand int8 "
                        "(per-row activation scales, 7-bit per-channel weights, exact on every x86 class)",
    "dynamic-int8-convmatmul-vnni": "the default at 8-bit weights: closer to fp32 on VNNI/AMX, saturates on AVX2-only CPUs",
    "dynamic-int8-compact": "MatMul int8, Conv fp32 compute with int8-stored weights: small file",
    "dynamic-int8-matmul": "MatMul int8 (per-tensor weights), Conv fp32: the simplest dynamic int8",
    "dynamic-int8-matmul-per-channel": "MatMul int8 with per-channel 8-bit scales: saturates on AVX2-only CPUs",
    "dynamic-int8-matmul-avx2": "MatMul int8 with u8 weights (U8U8 kernels): exact on every x86 class",
    "dynamic-int8-convmatmul-qattention": "the default with QAttention and one activation scale per tensor: faster, "
                                          "but answers depend on the batch; only for unbatched serving",
}


def resolve_preset(preset: str | None = None, config: QuantizationConfig | None = None) -> tuple[str, QuantizationConfig]:
    """Pick the quantization config: an explicit ``config`` wins, else the named preset.

    Args:
        preset: a key of :data:`QUANTIZATION_PRESETS` (``None``: the default).
        config: an explicit config (its name in recipes is ``"custom"``).

    Returns:
        ``(name, config)``.

    Raises:
        ConfigError: unknown preset (the message lists the known ones), or both given.
    """
    if config is not None:
        if preset is not None:
            raise ConfigError(f"preset={preset!r} and an explicit quantization config: give one or the other")
        return "custom", config
    name = DEFAULT_PRESET if preset is None else preset
    if name not in QUANTIZATION_PRESETS:
        raise ConfigError(f"quantization preset {name!r}: unknown; choose from {sorted(QUANTIZATION_PRESETS)}")
    return name, QUANTIZATION_PRESETS[name]


@dataclass(frozen=True)
class GraphRewrites:
    """What the graph rewrites before quantization changed (recorded in the int8 recipe).

    Attributes:
        convs_as_matmul: ``Conv`` nodes rewritten as ``MatMul`` graphs (``conv_as_matmul``);
            a convolution the rewrite does not recognise (grouped, padded, of unknown length) stays.
        attention_fused: self-attention blocks fused into ``Attention`` (``fuse_attention``); a
            block the fusion does not recognise stays as separate MatMuls (still quantized).
    """

    convs_as_matmul: int = 0
    attention_fused: int = 0

    def to_json(self) -> dict[str, int]:
        """A JSON-ready dict."""
        return asdict(self)


def quantize_int8(src: str | Path, dst: str | Path, *, config: QuantizationConfig = QuantizationConfig()) -> Path:
    """Dynamic int8 quantization of an fp32 ONNX file: :func:`quantize_int8_with_rewrites`, the path only."""
    return quantize_int8_with_rewrites(src, dst, config=config)[0]


def quantize_int8_with_rewrites(src: str | Path, dst: str | Path, *,
                                config: QuantizationConfig = QuantizationConfig()) -> tuple[Path, GraphRewrites]:
    """Dynamic int8 quantization of an fp32 ONNX file.

    Args:
        src: the fp32 ``.onnx``.
        dst: where to write the int8 ``.onnx`` (one file).
        config: what to quantize and how.

    Returns:
        ``(dst, what the graph rewrites changed)``.

    Raises:
        ExportError: pre-processing or quantization failed (message names ``src``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    weight_type = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[config.weight_type]
    with tempfile.TemporaryDirectory(prefix="ser-quant-", dir=dst.parent) as tmp:
        source = src
        if config.preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            source = Path(tmp) / "preprocessed.onnx"
            try:
                quant_pre_process(str(src), str(source), skip_symbolic_shape=False)
            except Exception as exc:  # noqa: BLE001 - shape inference raises many types
                raise ExportError(f"{src}: quant_pre_process failed (try preprocess=False): {type(exc).__name__}: {exc}") from None
        keep_fp32: list[str] = []
        convs = fused_blocks = 0
        extra_options = dict(config.extra_options)
        if config.conv_as_matmul:
            rewritten = Path(tmp) / "conv_as_matmul.onnx"
            conv_rewrite = convs_to_matmul(source, rewritten)
            keep_fp32 = list(conv_rewrite.fp32_matmuls)
            convs = conv_rewrite.rewritten
            source = rewritten
        if config.fuse_attention:
            fused = Path(tmp) / "attention.onnx"
            fused_blocks = fuse_attention(source, fused)
            source = fused
            # The quantizer's shape inference cannot type the outputs of com.microsoft ops.
            extra_options.setdefault("DefaultTensorType", 1)  # onnx.TensorProto.FLOAT
        nodes = None
        if config.conv_nodes:
            import onnx

            graph = onnx.load(str(source), load_external_data=False).graph
            nodes = [n.name for n in graph.node if n.op_type in config.op_types
                     and (n.op_type != "Conv" or any(s in n.name for s in config.conv_nodes))]
            if not any(n.op_type == "Conv" and n.name in nodes for n in graph.node):
                raise ExportError(f"{src}: no Conv node name contains any of conv_nodes={list(config.conv_nodes)}")
        try:
            with _quiet_quantizer():
                quantize_dynamic(
                    str(source),
                    str(dst),
                    nodes_to_quantize=nodes,
                    nodes_to_exclude=keep_fp32,
                    op_types_to_quantize=list(config.op_types),
                    weight_type=weight_type,
                    per_channel=config.per_channel,
                    reduce_range=config.reduce_range,
                    extra_options=extra_options or None,
                )
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{src}: quantize_dynamic failed: {type(exc).__name__}: {exc}") from None
    if config.activation_scales == "row":
        quantize_rows(dst)
    if config.conv_weight_storage != "fp32":
        store_conv_weights(dst, storage=config.conv_weight_storage, nodes=config.conv_weight_nodes)
    return dst, GraphRewrites(convs_as_matmul=convs, attention_fused=fused_blocks)


#: The advice ORT's quantizer logs on the root logger at every call: it suggests ``quant_pre_process``, which
#: is a measured, deliberate option here (``QuantizationConfig.preprocess``), so it is noise in ``ser export``'s output.
PREPROCESS_ADVICE = "Please consider to run pre-processing before quantization"


class _DropPreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return PREPROCESS_ADVICE not in record.getMessage()


@contextmanager
def _quiet_quantizer():
    """Drop :data:`PREPROCESS_ADVICE` from the root logger while ``quantize_dynamic`` runs; other messages pass."""
    advice = _DropPreprocessAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


#: Integer-GEMM operators and the input index of their (constant) weight.
_INTEGER_GEMM_WEIGHT_INPUT = {"MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1,
                              "QAttention": 1, "ConvInteger": 1}
#: Largest |s8 weight| whose products with u8 activations cannot saturate AVX2's ``vpmaddubsw``, which sums
#: two u8*s8 products into an int16: 2 * 255 * 64 = 32640 <= 32767 (ORT's ``reduce_range`` gives |w| <= 64).
AVX2_SAFE_S8_WEIGHT = 64


@dataclass(frozen=True)
class IntegerWeights:
    """The constant weights of a model's integer GEMMs (what :func:`integer_weights` found).

    Attributes:
        gemms: how many integer GEMM nodes (``MatMulInteger``, ``QAttention``, ...) have a constant weight.
        s8_max_abs: largest |value| over their signed int8 weights (0 if none are signed).
        u8_weights: how many of the weights are unsigned (U8U8 kernels: no saturation either).
    """

    gemms: int
    s8_max_abs: int
    u8_weights: int

    @property
    def avx2_exact(self) -> bool:
        """Whether every integer GEMM is exact on AVX2-only CPUs (no int16 saturation of u8*s8 pairs)."""
        return self.s8_max_abs <= AVX2_SAFE_S8_WEIGHT

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in the int8 recipe's options), ``avx2_exact`` included."""
        return {**asdict(self), "avx2_exact": self.avx2_exact}


def integer_weights(path: str | Path) -> IntegerWeights:
    """Inspect the constant int8/uint8 weights of a quantized ONNX file's integer GEMMs.

    ONNX Runtime's x86 int8 GEMM for u8 activations and s8 weights uses ``vpmaddubsw`` on CPUs
    without VNNI, which saturates two products at int16; with |w| <= :data:`AVX2_SAFE_S8_WEIGHT`
    it cannot, and the result is the same exact integer product as on VNNI/AMX CPUs.

    Args:
        path: a quantized ``.onnx`` file.

    Raises:
        ExportError: the file cannot be read as ONNX.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have many types
        raise ExportError(f"{path}: not a readable ONNX model: {type(exc).__name__}: {exc}") from None
    inits = {i.name: i for i in graph.initializer}
    gemms = s8_max = u8 = 0
    for node in graph.node:
        index = _INTEGER_GEMM_WEIGHT_INPUT.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[index]])
        gemms += 1
        if weight.dtype == np.int8:
            s8_max = max(s8_max, int(np.abs(weight.astype(np.int16)).max(initial=0)))
        elif weight.dtype == np.uint8:
            u8 += 1
    return IntegerWeights(gemms=gemms, s8_max_abs=s8_max, u8_weights=u8)


def store_conv_weights(path: str | Path, *, storage: str, nodes: tuple[str, ...] = ()) -> int:
    """Rewrite ``path`` in place: fp32 ``Conv`` weights stored smaller, computed in fp32.

    * ``fp16``: an fp16 initializer + ``Cast(to=FLOAT)``.
    * ``int8``: symmetric per-output-channel int8 + ``Cast(to=FLOAT)`` + ``Mul(scale)``.

    Every inserted node has only initializers as inputs, so ONNX Runtime's constant
    folding turns them back into one fp32 tensor when a session is created: the graph
    computes exactly as an fp32-weight graph whose weights were rounded once
    (fp16: relative error <= 2^-11; int8: <= half a step of max|w|/127 per output channel).
    (A ``DequantizeLinear`` would not do: ORT keeps DQ nodes unfolded for its QDQ fusions.)

    Args:
        path: a quantized or fp32 ``.onnx`` file, rewritten in place.
        storage: ``"fp16"`` or ``"int8"``.
        nodes: only the ``Conv`` nodes whose name contains one of these substrings (empty: every ``Conv``).

    Returns:
        Bytes saved.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    if storage not in ("fp16", "int8"):
        raise ConfigError(f"storage={storage!r}: expected 'fp16' or 'int8'")
    path = Path(path)
    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    weights = {n.input[1] for n in g.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits
               and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT
               and (not nodes or any(part in n.name for part in nodes))}
    nodes, saved = [], 0
    for name in sorted(weights):
        t = inits[name]
        w = numpy_helper.to_array(t)
        g.initializer.remove(t)
        if storage == "fp16":
            stored = [numpy_helper.from_array(w.astype(np.float16), f"{name}__fp16")]
            nodes.append(helper.make_node("Cast", [stored[0].name], [name], to=onnx.TensorProto.FLOAT, name=f"{name}__to_fp32"))
        else:
            scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            scale = scale.astype(np.float32).reshape(-1, *([1] * (w.ndim - 1)))
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            stored = [numpy_helper.from_array(q, f"{name}__int8"), numpy_helper.from_array(scale, f"{name}__scale")]
            nodes.append(helper.make_node("Cast", [stored[0].name], [f"{name}__int8_as_fp32"], to=onnx.TensorProto.FLOAT,
                                          name=f"{name}__to_fp32"))
            nodes.append(helper.make_node("Mul", [f"{name}__int8_as_fp32", stored[1].name], [name], name=f"{name}__rescale"))
        g.initializer.extend(stored)
        saved += w.nbytes - sum(int(np.prod(s.dims)) * (1 if s.data_type == onnx.TensorProto.INT8 else 2 if s.data_type == onnx.TensorProto.FLOAT16 else 4) for s in stored)
    for node in reversed(nodes):
        g.node.insert(0, node)
    onnx.save(model, str(path))
    return saved
