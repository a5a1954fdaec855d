"""Variants of the fp32 graph: dynamic int8 with ONNX Runtime, and fp16 for GPU instances.

Named presets over piles of flags (STYLE.md 3): a preset is one name that maps
to one :class:`QuantizationConfig`; a config object is the escape hatch.

Measured on this kind of machine (2 shared cores): quantizing the conv feature
encoder with ``ConvInteger`` made inference slower, MatMul int8 roughly doubled
speed, so int8 *compute* is ``MatMul``, QInt8 weights. The default preset
(``dynamic-int8-convmatmul``) first rewrites the conv encoder as exact ``MatMul``
graphs (:func:`convs_to_matmul`) so that its layers 1..6 are int8 too, and stores
the remaining fp32 Conv weights (the positional conv) as int8.

Evidence behind the presets (xlsr-large shape, W = 40000, batch 1, 2 threads,
``python -m export.bench --shapes xlsr-large --runners ort-fp32,ort-int8:<preset>,torch-int8-dynamic
--batch-sizes 1 --seconds 2.5 --threads 2 --warmup 2 --repeat 20``; README has the tables):

* ``ConvInteger`` is slow on these CPUs even for one layer: quantizing only the
  positional convolution (34 MB of fp32 weights) cut the file to 0.261x fp32 but
  took batch-1 latency from 235 to 362 ms (a quiet 16-core Xeon with VNNI, 2 threads).
* Dynamic int8 of the whole conv encoder (the former ``dynamic-int8-all`` preset)
  flipped 1 of 64 held-out clips of the trained test model (agreement 96.9 % < 99 %,
  max |Δp| 0.10): the first conv sees the raw waveform, and one scale per tensor for
  its activations is too coarse. So the first conv stays fp32 (as a MatMul) in every preset.
* ``reduce_range`` (7-bit weights, the usual advice for CPUs without VNNI) on the per-tensor
  MatMul preset flipped 2 of 64 held-out clips (near ties); the ``-avx2`` preset uses u8
  weights (U8U8) instead. Per channel it costs nothing measurable, and the default uses it:
  with full 8-bit weights the default failed its agreement check on an AVX2-only CPU, where
  ``vpmaddubsw`` saturates two u8*s8 products at int16 (max |dp| 0.062 vs 0.008 with VNNI;
  reproduced under ``qemu-x86_64 -cpu Haswell``); with |w| <= 64 the integer GEMMs are exact
  on every x86 CPU (:func:`integer_weights` checks a file).
* ``dynamic-int8-compact`` keeps every Conv in fp32 *compute* but stores its weights
  int8 per output channel behind Cast/Mul nodes that ONNX Runtime folds at session
  creation (:func:`store_conv_weights`): 0.251x fp32 on xlsr-large (the size goal is
  <= 0.26x), the speed of ``dynamic-int8-matmul``.
* ``dynamic-int8-convmatmul`` (the default): on the VNNI/AMX Xeon, interleaved with the
  others, 3.08x and 2.99x ORT fp32 per round (``compact`` 2.19x, 2.31x; an earlier session,
  full 8-bit weights: 3.24x vs 2.44x), with the attention fused into
  ``QAttention`` (:func:`fuse_attention`; 2.75-2.88x without it). Its block form
  (reshapes, no im2col ``Concat``; ``Sum`` rather than ``Add`` so ONNX Runtime does not
  fuse a ``SkipLayerNormalization`` whose CPU kernel is slow on long inputs) cut the
  rewrite's own ``Slice``/``Concat``/``Transpose`` time from ~40 to ~12 ms. On an
  AVX2-only EPYC (no VNNI) it was within noise of ``compact``.

ORT's pre-processing (``quant_pre_process``: symbolic shape inference + graph
optimisation) is an option, off by default: on the base shape it gave the same
size (121.7 MB) and speed (379 ms, within noise) for 11.6 s instead of 3.3 s of
quantization time; on the tiny model it only trims ~50 kB of small constants.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from client.errors import ConfigError, ExportError

WEIGHT_TYPES = ("qint8", "quint8")
#: How the weights of Conv nodes left in fp32 are stored (see :func:`store_conv_weights`).
CONV_WEIGHT_STORAGE = ("fp32", "fp16", "int8")
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
        conv_as_matmul: before quantizing, rewrite each plain 1-D ``Conv`` of a static length
            (the feature encoder's seven; not the grouped positional conv) as ``Reshape`` /
            ``Slice`` + ``MatMul`` graphs (:func:`convs_to_matmul`), so that ``"MatMul"`` int8
            covers layers 1..6 with the fast ``MatMulInteger`` kernels instead of
            ``ConvInteger``; the first conv, which reads the raw waveform, is left fp32.
        fuse_attention: before quantizing, fuse each self-attention block into ONNX
            Runtime's ``Attention`` op (:func:`fuse_attention`), which ``"Attention"`` in
            ``op_types`` turns into ``QAttention``: one int8 GEMM for Q, K and V and the
            attention core in one kernel instead of ~15 nodes.
    """

    op_types: tuple[str, ...] = ("MatMul",)
    weight_type: str = "qint8"
    per_channel: bool = False
    reduce_range: bool = False
    preprocess: bool = False
    extra_options: Mapping[str, Any] = field(default_factory=dict)
    conv_nodes: tuple[str, ...] = ()
    conv_weight_storage: str = "fp32"
    conv_as_matmul: bool = False
    fuse_attention: bool = False

    def __post_init__(self) -> None:
        if self.conv_weight_storage not in CONV_WEIGHT_STORAGE:
            raise ConfigError(f"conv_weight_storage={self.conv_weight_storage!r}: expected one of {list(CONV_WEIGHT_STORAGE)}")
        object.__setattr__(self, "op_types", tuple(self.op_types))
        object.__setattr__(self, "conv_nodes", tuple(self.conv_nodes))
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
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "QuantizationConfig":
        """Inverse of :meth:`to_json`."""
        return cls(**{**d, "op_types": tuple(d["op_types"]), "conv_nodes": tuple(d.get("conv_nodes", ())),
                      "conv_as_matmul": bool(d.get("conv_as_matmul", False)),
                      "fuse_attention": bool(d.get("fuse_attention", False))})


#: The default int8 preset. ``dynamic-int8-convmatmul`` became the default on a measured win on the VNNI
#: Xeon the speed goals were written for (xlsr-large, 2.5 s, batch 1, 2 threads, runners interleaved call
#: by call, ratios per round): 3.24x ORT fp32 against 2.44x for ``dynamic-int8-compact`` (the default
#: before; 2.89x vs 2.21x in a second run), 2.34x PyTorch dynamic int8, at 0.251x fp32 size; every
#: preset passes the held-out agreement tests. Without the attention fusion it measured 2.75-2.88x.
#: With 7-bit weights (exact on AVX2-only CPUs too) on a VNNI/AMX Xeon: 3.08x and 2.99x ORT fp32,
#: 2.53x and 2.67x PyTorch dynamic int8, 1.00x the full 8-bit form. On an AVX2-only EPYC the conv
#: rewrite's earlier im2col form was within noise of ``compact``; the present form was not timed there.
DEFAULT_PRESET = "dynamic-int8-convmatmul"

#: The conv-as-MatMul + QAttention graph at full 8-bit weights; the default is this with 7-bit weights.
_CONVMATMUL_8BIT = QuantizationConfig(op_types=("MatMul", "Attention"), conv_as_matmul=True, fuse_attention=True,
                                      per_channel=True, conv_weight_storage="int8")

#: Named quantization presets. Add new ones here (one name -> one config).
QUANTIZATION_PRESETS: dict[str, QuantizationConfig] = {
    # The conv feature encoder rewritten as MatMul graphs (convs_to_matmul): layers 1..6 quantized with the
    # transformer, the first conv (raw waveform) an fp32 MatMul, the grouped positional conv an fp32 Conv whose
    # weights are stored int8; each self-attention fused into Attention -> QAttention (fuse_attention).
    # Per-channel: the per-tensor form flipped the held-out split's nearest fp32 tie.
    # 7-bit weights (reduce_range): |w| <= 64, so a u8 activation pair times s8 weights sums to at most
    # 2 * 255 * 64 = 32640 and cannot saturate vpmaddubsw's int16 on AVX2-only CPUs; the integer GEMMs are then
    # exact on every x86 CPU and the model answers the same on AVX2, VNNI and AMX hosts.
    DEFAULT_PRESET: replace(_CONVMATMUL_8BIT, reduce_range=True),
    # The default at full 8-bit weights: closer to fp32 on CPUs with VNNI (AVX512-VNNI, AVX-VNNI, AMX), the
    # same speed there; on AVX2-only CPUs its u8*s8 pairs saturate (see PRESET_EVIDENCE): serve it only on VNNI.
    "dynamic-int8-convmatmul-vnni": _CONVMATMUL_8BIT,
    # MatMul int8, and every Conv weight *stored* int8 per output channel behind Cast/Mul that ORT folds at
    # load, so Conv computes fp32 as in "dynamic-int8-matmul": its speed at 0.251x fp32 size (xlsr-large).
    "dynamic-int8-compact": QuantizationConfig(conv_weight_storage="int8"),
    # MatMul only, QInt8, per-tensor, Conv weights fp32 (0.281x fp32 on xlsr-large).
    "dynamic-int8-matmul": QuantizationConfig(),
    # Per-channel weight scales: same kernels, slightly larger; measured *farther* from fp32 than per tensor
    # (held-out mean |dp| 0.0096 vs 0.0046 on the trained test model, onnxruntime 1.32).
    "dynamic-int8-matmul-per-channel": QuantizationConfig(per_channel=True),
    # Older x86 without VNNI: u8 weights (U8U8 kernels) avoid the u8*s8 saturation of vpmaddubsw at
    # full 8-bit precision. (reduce_range=True, 7-bit s8 weights, flipped 2 of 64 held-out clips of the
    # trained test model, both near ties with an fp32 top-2 margin < 0.0012: agreement 96.9 % < 99 %.)
    "dynamic-int8-matmul-avx2": QuantizationConfig(weight_type="quint8"),
}


#: Presets whose int8 GEMMs saturate on x86 CPUs without VNNI/AMX badly enough to fail the agreement checks:
#: for fleets where every serving host has VNNI (see :func:`cpu_has_vnni`).
VNNI_ONLY_PRESETS: tuple[str, ...] = ("dynamic-int8-convmatmul-vnni",)
#: /proc/cpuinfo flags of the x86 extensions whose int8 dot products accumulate in int32 (no int16 step).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})

#: Why each preset exists, in one line: written into every int8 recipe (``options.preset_evidence``).
PRESET_EVIDENCE: dict[str, str] = {
    DEFAULT_PRESET: "VNNI/AMX Xeon, xlsr-large, 2.5 s, batch 1, 2 threads, runners interleaved call by call (2 runs x 20 rounds): "
                    "per-round 3.08x and 2.99x ORT fp32 (pooled 3.03x), 2.53x and 2.67x PyTorch dynamic int8, 1.00x the "
                    "same graph at full 8-bit weights (dynamic-int8-convmatmul-vnni), 1.37x dynamic-int8-compact; 0.251x "
                    "fp32 size. 7-bit weights (reduce_range) so that no u8*s8 pair saturates on AVX2-only CPUs: the full "
                    "8-bit form failed the export's own agreement check there (max |dp| 0.062, 1 of 12 labels flipped, "
                    "measured on the AVX2-only CI host and under qemu-x86_64 -cpu Haswell; 0.008 on VNNI), the 7-bit form "
                    "gives 0.019 on both; on 189 held-out windows under the emulation the 8-bit form flipped 7 labels, "
                    "the 7-bit form none. Held-out windows of the trained test model (VNNI): agreement 100 %, max |dp| 0.029. "
                    "Attention fused into QAttention (fuse_attention); the conv encoder's MatMul rewrite is exact (tested "
                    "against Conv). Per-channel because the per-tensor form flipped the held-out split's nearest fp32 tie",
    "dynamic-int8-convmatmul-vnni": "the default at full 8-bit weights: same speed on the VNNI/AMX Xeon (1.00x per round), closer "
                                    "to fp32 there (seeded batches max |dp| 0.008 vs 0.019; held-out 0.012 vs 0.029, one "
                                    "near-tie flip, margin 0.0004); on AVX2-only CPUs (no VNNI) u8*s8 pairs saturate int16: "
                                    "max |dp| 0.062 and a flipped label. Serve it only where every host has VNNI or AMX",
    "dynamic-int8-compact": "xlsr-large, 2.5 s, batch 1, 2 threads: 0.251x fp32 size vs 0.281x for dynamic-int8-matmul; "
                            "same runtime graph after ORT folds the Cast/Mul at load (interleaved medians 247 vs 262, 278 vs 285 ms); "
                            "held-out agreement with fp32 100 % on the trained test model; the default before dynamic-int8-convmatmul",
    "dynamic-int8-matmul": "MatMul-only dynamic int8: ~2.3-2.6x faster than ORT fp32 on xlsr-large (2 threads); "
                           "ConvInteger (conv encoder or positional conv alone: 235 -> 362 ms) is slower on these CPUs",
    "dynamic-int8-matmul-per-channel": "per-channel scales: same kernels and speed (+1 MB on xlsr-large); not closer to fp32 with "
                                       "onnxruntime 1.32: held-out mean |dp| 0.0096 vs 0.0046 per tensor (max 0.062 vs 0.032), trained test model",
    "dynamic-int8-matmul-avx2": "CPUs without VNNI: U8U8 avoids u8*s8 saturation; reduce_range flipped 2/64 held-out near-tie clips",
}


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_vnni(flags: frozenset[str] | None = None) -> bool:
    """Whether this x86 CPU has VNNI or AMX, so ONNX Runtime's u8*s8 GEMMs cannot saturate (:data:`VNNI_FLAGS`)."""
    return bool((cpu_flags() if flags is None else flags) & VNNI_FLAGS)


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


def quantize_int8(src: str | Path, dst: str | Path, *, config: QuantizationConfig = QuantizationConfig()) -> Path:
    """Dynamic int8 quantization of an fp32 ONNX file.

    Args:
        src: the fp32 ``.onnx``.
        dst: where to write the int8 ``.onnx`` (one file).
        config: what to quantize and how.

    Returns:
        ``dst``.

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
        extra_options = dict(config.extra_options)
        if config.conv_as_matmul:
            rewritten = Path(tmp) / "conv_as_matmul.onnx"
            keep_fp32 = list(convs_to_matmul(source, rewritten).fp32_matmuls)
            source = rewritten
        if config.fuse_attention:
            fused = Path(tmp) / "attention.onnx"
            fuse_attention(source, fused)
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
    if config.conv_weight_storage != "fp32":
        store_conv_weights(dst, storage=config.conv_weight_storage)
    return dst


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


def store_conv_weights(path: str | Path, *, storage: str) -> int:
    """Rewrite ``path`` in place: fp32 ``Conv`` weights stored smaller, computed in fp32.

    * ``fp16``: an fp16 initializer + ``Cast(to=FLOAT)``.
    * ``int8``: symmetric per-output-channel int8 + ``Cast(to=FLOAT)`` + ``Mul(scale)``.

    Every inserted node has only initializers as inputs, so ONNX Runtime's constant
    folding turns them back into one fp32 tensor when a session is created: the graph
    computes exactly as an fp32-weight graph whose weights were rounded once
    (fp16: relative error <= 2^-11; int8: <= half a step of max|w|/127 per output channel).
    (A ``DequantizeLinear`` would not do: ORT keeps DQ nodes unfolded for its QDQ fusions.)

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
               and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT}
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


# --- fp16 (GPU instances) ---------------------------------------------------------------

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
