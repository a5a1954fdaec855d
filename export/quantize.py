"""Quantized variants of the fp32 graph: dynamic int8 with ONNX Runtime.

Named presets over piles of flags (STYLE.md 3): a preset is one name that maps
to one :class:`QuantizationConfig`; a config object is the escape hatch.

Measured on this kind of machine (2 shared cores): quantizing the conv feature
encoder (``ConvInteger``) made inference slower, MatMul-only int8 roughly doubled
speed, so the default preset quantizes ``MatMul`` only, QInt8 weights,
per-tensor. On the wav2vec2-base shape (random weights, W = 16000, batch 4, one
thread): fp32 378.2 MB / 611 ms, int8 121.8 MB / 356 ms.

ORT's pre-processing (``quant_pre_process``: symbolic shape inference + graph
optimisation) is an option, off by default: on the base shape it gave the same
size (121.7 MB) and speed (379 ms, within noise) for 11.6 s instead of 3.3 s of
quantization time; on the tiny model it only trims ~50 kB of small constants.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from client.errors import ConfigError, ExportError

WEIGHT_TYPES = ("qint8", "quint8")
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
    """

    op_types: tuple[str, ...] = ("MatMul",)
    weight_type: str = "qint8"
    per_channel: bool = False
    reduce_range: bool = False
    preprocess: bool = False
    extra_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "op_types", tuple(self.op_types))
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
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "QuantizationConfig":
        """Inverse of :meth:`to_json`."""
        return cls(**{**d, "op_types": tuple(d["op_types"])})


#: The default int8 preset.
DEFAULT_PRESET = "dynamic-int8-matmul"

#: Named quantization presets. Add new ones here (one name -> one config).
QUANTIZATION_PRESETS: dict[str, QuantizationConfig] = {
    # MatMul only, QInt8, per-tensor: measured fastest on CPU here (ConvInteger was slower).
    DEFAULT_PRESET: QuantizationConfig(),
    # Per-channel weight scales: closer to fp32, slightly larger, same kernels.
    "dynamic-int8-matmul-per-channel": QuantizationConfig(per_channel=True),
    # Older x86 without VNNI: 7-bit weights avoid the u8*s8 saturation of vpmaddubsw.
    "dynamic-int8-matmul-avx2": QuantizationConfig(reduce_range=True),
    # The conv feature encoder too (ConvInteger): smallest file; measured slower on CPU.
    "dynamic-int8-all": QuantizationConfig(op_types=("MatMul", "Gemm", "Conv")),
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
        try:
            quantize_dynamic(
                str(source),
                str(dst),
                op_types_to_quantize=list(config.op_types),
                weight_type=weight_type,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                extra_options=dict(config.extra_options) or None,
            )
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{src}: quantize_dynamic failed: {type(exc).__name__}: {exc}") from None
    return dst
