"""``ser export``: checkpoint -> parity-checked ONNX variants with recipes.

:func:`export_checkpoint` writes, for each requested variant::

    <out_dir>/<variant>/model.onnx     one file, named tensors, dynamic batch
    <out_dir>/<variant>/recipe.json    how it was made (export.recipe.ExportRecord)

Everything is built in a temporary folder inside ``out_dir`` and checked
(``onnx.checker``, fp32 vs PyTorch parity, variant vs fp32 agreement) before any
variant folder is replaced; each replacement is a rename, so a failed export
leaves the previous good export untouched. The fp32 graph is always built
because every other variant is derived from and compared with it; when ``fp32``
is not requested it is discarded afterwards (and :class:`ExportResult` says so).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from client.contract import default_hop_samples
from client.errors import ConfigError
from export.cpu_class import CPU_CLASSES
from export.errors import ExportError
from export.fp16 import Fp16Config
from export.onnx_export import DEFAULT_OPSET, OnnxExportConfig
from export.parity import ParityConfig, ParityReport
from export.quantize import (
    INT8_PRESET_ORDER,
    QUANTIZATION_PRESETS,
    QuantizationConfig,
    resolve_preset,
)
from export.recipe import MODEL_FILENAME, RECIPE_FILENAME

#: Variants this version can produce: fp32 (the reference), int8 (CPU instances), fp16 (GPU instances).
VARIANTS = ("fp32", "int8", "fp16")
#: What ``ser export`` writes when no variant is named.
DEFAULT_VARIANTS = ("fp32", "int8")
#: Variants named in the design but not implemented yet (refused with a clear message).
PLANNED_VARIANTS: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportConfig:
    """Everything :func:`export_checkpoint` does, validated up front.

    Attributes:
        variants: which models to write (``fp32``, ``int8``, ``fp16``), unique, in order.
        preset: int8 quantization preset name (``None``: the default preset).
        quantization: explicit int8 options instead of a preset.
        fp16: fp16 conversion options (ops kept in fp32).
        onnx: exporter options.
        parity: parity batches and tolerances.
        verify_cpu_classes: CPU classes (:data:`export.cpu_class.CPU_CLASSES`) on which the int8
            model must agree with fp32 besides this host's, checked through emulation where
            this host is of another class (:mod:`export.isa_check`).
    """

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    preset: str | None = None
    quantization: QuantizationConfig | None = None
    fp16: Fp16Config = field(default_factory=Fp16Config)
    onnx: OnnxExportConfig = field(default_factory=OnnxExportConfig)
    parity: ParityConfig = field(default_factory=ParityConfig)
    verify_cpu_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "verify_cpu_classes", tuple(self.verify_cpu_classes))
        unknown = [c for c in self.verify_cpu_classes if c not in CPU_CLASSES]
        if unknown:
            raise ConfigError(f"verify_cpu_classes={list(self.verify_cpu_classes)}: {unknown} unknown; "
                              f"choose from {list(CPU_CLASSES)}")
        if self.verify_cpu_classes and "int8" not in self.variants:
            raise ConfigError(f"verify_cpu_classes={list(self.verify_cpu_classes)} concerns the int8 variant, "
                              f"but variants={list(self.variants)}")
        if isinstance(self.variants, str):
            object.__setattr__(self, "variants", (self.variants,))
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.variants:
            raise ConfigError(f"variants=(): choose at least one of {list(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants={list(self.variants)}: each variant at most once")
        for v in self.variants:
            if v in PLANNED_VARIANTS:
                raise ConfigError(f"variant {v!r}: planned but not implemented yet; available: {list(VARIANTS)}")
            if v not in VARIANTS:
                raise ConfigError(f"variant {v!r}: unknown; choose from {list(VARIANTS)}")
        name, _ = resolve_preset(self.preset, self.quantization)  # raises on unknown preset
        if "int8" not in self.variants and (self.preset is not None or self.quantization is not None):
            raise ConfigError(f"quantization preset {name!r} given but variants={list(self.variants)} has no int8")

    @property
    def int8_candidates(self) -> tuple[tuple[str, QuantizationConfig], ...]:
        """``(preset name, config)`` pairs to try, in order.

        The named preset or explicit config alone; otherwise :data:`export.quantize.INT8_PRESET_ORDER`.
        """
        if self.preset is None and self.quantization is None:
            return tuple((name, QUANTIZATION_PRESETS[name]) for name in INT8_PRESET_ORDER)
        return (resolve_preset(self.preset, self.quantization),)


@dataclass(frozen=True)
class VariantResult:
    """One exported variant.

    Attributes:
        variant: ``fp32``, ``int8``.
        model_path: ``<out_dir>/<variant>/model.onnx``.
        recipe_path: ``<out_dir>/<variant>/recipe.json``.
        size_bytes: size of ``model.onnx``.
        sha256: sha256 of ``model.onnx``.
        parity: the check that admitted it (vs PyTorch for fp32, vs fp32 otherwise).
    """

    variant: str
    model_path: Path
    recipe_path: Path
    size_bytes: int
    sha256: str
    parity: ParityReport


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote.

    Attributes:
        checkpoint: the source checkpoint directory.
        out_dir: the export directory.
        variants: ``{variant: VariantResult}`` in the requested order.
        fp32_reference_only: fp32 was built as the reference but not requested, so not kept.
    """

    checkpoint: Path
    out_dir: Path
    variants: Mapping[str, VariantResult]
    fp32_reference_only: bool = False

    def __str__(self) -> str:
        lines = [f"exported {self.checkpoint} -> {self.out_dir}"]
        for v in self.variants.values():
            p = v.parity
            check = (
                f"max|Δlogit| {p.max_abs_logit_diff:.2e} vs PyTorch"
                if v.variant == "fp32"
                else f"max|Δp| {p.max_abs_prob_diff:.2e}, label agreement {p.label_agreement:.3f} vs fp32"
            )
            lines.append(f"  {v.variant:5s} {v.size_bytes / 1e6:8.2f} MB  sha256 {v.sha256[:12]}  {check}  {v.model_path}")
        if self.fp32_reference_only:
            lines.append("  (fp32 was built as the parity reference only, not kept)")
        return "\n".join(lines)


def ensure_writable_dir(path: Path, *, what: str) -> None:
    """Create directory ``path`` if needed; refuse a file there or an unwritable place (ExportError naming ``what``)."""
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path}: {what} exists and is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{path}: cannot create the {what}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ExportError(f"{path}: {what} is not writable")


def _prepare_out_dir(out_dir: Path, variants: Sequence[str]) -> None:
    """Create ``out_dir`` (refusing files and unwritable places) and refuse clashing variant paths."""
    ensure_writable_dir(out_dir, what="output directory")
    for v in variants:
        target = out_dir / v
        if target.exists() and not target.is_dir():
            raise ExportError(f"{target}: exists and is not a directory; cannot write the {v!r} variant there")


def install_dir(staged: Path, target: Path) -> None:
    """Replace ``target`` by ``staged`` with renames; on failure the old ``target`` is kept."""
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    had_old = target.exists()
    if had_old:
        os.replace(target, old)
    try:
        os.replace(staged, target)
    except OSError as exc:
        if had_old:
            os.replace(old, target)
        raise ExportError(f"{target}: cannot install the new export: {exc}") from None
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    preset: str | None = None,
    quantization: QuantizationConfig | None = None,
    fp16: Fp16Config | None = None,
    opset: int = DEFAULT_OPSET,
    parity: ParityConfig | None = None,
    verify_cpu_classes: Sequence[str] = (),
    window_s: float | None = None,
    audio_dir: str | Path | None = None,
    progress: bool = True,
) -> ExportResult:
    """Export a checkpoint to parity-checked ONNX variants, each with its recipe.

    Args:
        checkpoint: directory written by ``ser train`` (HF files + ``ser_checkpoint.json``),
            or a Hugging Face audio-classification checkpoint (folder or hub name; see
            :mod:`training.hf_import`).
        out_dir: export directory; ``<out_dir>/<variant>/{model.onnx, recipe.json}``.
        variants: ``fp32``, ``int8`` and/or ``fp16``.
        preset: int8 quantization preset (:data:`export.quantize.QUANTIZATION_PRESETS`); ``None``:
            the first of :data:`export.quantize.INT8_PRESET_ORDER` that passes the agreement check
            on every CPU class checked (the recipe lists each preset tried and why it was refused).
        quantization: explicit int8 options instead of ``preset``.
        fp16: fp16 conversion options (default :class:`export.fp16.Fp16Config`).
        opset: ONNX opset.
        parity: batches and tolerances of the checks.
        verify_cpu_classes: CPU classes the int8 model must also pass on (e.g. ``("avx2",)``).
        window_s: W in seconds, for a Hugging Face checkpoint.
        audio_dir: or W from the durations of the audio files under this folder.
        progress: show the steps' progress (:mod:`client.progress`).

    Returns:
        :class:`ExportResult`.

    Raises:
        ConfigError: unknown variant or preset, bad option.
        CheckpointError: missing or unreadable checkpoint.
        ExportError: output directory unusable, export/quantization failed.
        ParityError: a variant disagrees with its reference beyond tolerance (for int8: every
            candidate preset did, on some CPU class checked).
    """
    from client.progress import progress_bar
    from export.fp16 import convert_fp16
    from export.gate_windows import held_out_windows
    from export.int8_selection import choose_int8
    from export.onnx_export import export_onnx, load_classifier
    from export.parity import check_onnx_parity, check_variant_agreement
    from export.quantize import integer_weights
    from export.recipe import ExportRecord, checkpoint_weights_sha256, library_versions, sha256_file
    from export.versions import installed_versions

    config = ExportConfig(
        variants=tuple(variants),
        preset=preset,
        quantization=quantization,
        fp16=fp16 or Fp16Config(),
        onnx=OnnxExportConfig(opset=opset),
        parity=parity or ParityConfig(),
        verify_cpu_classes=tuple(verify_cpu_classes),
    )
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    # CheckpointError before touching out_dir
    classifier, info = load_classifier(checkpoint, window_s=window_s, audio_dir=audio_dir)
    _prepare_out_dir(out_dir, config.variants)
    local = Path(info.extra.get("hf_checkpoint", checkpoint))
    source = str(checkpoint.resolve()) if checkpoint.exists() else f"{checkpoint} ({local})"
    # What the served config says: any caller reads it, so no path of the machine that wrote it
    # (the recipe beside the model keeps the full one, and the sha256s identify the weights).
    served_source = checkpoint.resolve().name if checkpoint.exists() else str(checkpoint)
    source_sha = checkpoint_weights_sha256(local)
    versions = library_versions(opset=config.onnx.opset)
    converter = installed_versions(("onnxconverter-common",), missing="(unknown version)")["onnxconverter-common"]
    W = info.window_samples
    steps = ["export fp32", "parity fp32"] + [f"{step} {v}" for v in ("int8", "fp16") if v in config.variants
                                              for step in ("convert", "agreement")] + ["install"]
    bar = progress_bar(total=len(steps), desc=f"export {checkpoint.name}", unit="step", disable=not progress)
    results: dict[str, VariantResult] = {}
    try:
        with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as work:
            work = Path(work)
            staged: dict[str, Path] = {}
            parity_json: dict[str, dict[str, dict]] = {}

            def stage(variant: str, preset_name: str | None, options: dict, report: ParityReport,
                      extra: Mapping[str, str] | None = None) -> None:
                folder = work / variant
                model = folder / MODEL_FILENAME
                contract = info.contract(variant=variant, source=served_source)
                if extra:
                    contract = replace(contract, extra={**contract.extra, **extra})
                recipe = ExportRecord(
                    variant=variant,
                    preset=preset_name,
                    options=options,
                    versions=versions,
                    source_checkpoint=source,
                    source_sha256=source_sha,
                    model_sha256=sha256_file(model),
                    model_bytes=model.stat().st_size,
                    contract=contract,
                    parity=parity_json[variant],
                )
                recipe.write(folder / RECIPE_FILENAME)
                staged[variant] = folder
                results[variant] = VariantResult(
                    variant=variant,
                    model_path=out_dir / variant / MODEL_FILENAME,
                    recipe_path=out_dir / variant / RECIPE_FILENAME,
                    size_bytes=recipe.model_bytes,
                    sha256=recipe.model_sha256,
                    parity=report,
                )

            bar.set_postfix_str("fp32: torch.onnx.export")
            (work / "fp32").mkdir()
            fp32_path = work / "fp32" / MODEL_FILENAME
            export_onnx(classifier, fp32_path, window_samples=W, config=config.onnx)
            bar.update()
            bar.set_postfix_str("fp32: ONNX Runtime vs PyTorch")
            fp32_report = check_onnx_parity(classifier, fp32_path, window_samples=W, config=config.parity)
            bar.update()
            fp32_options = {"exporter": "torch.onnx.export(dynamo=False)", "opset": config.onnx.opset,
                            "constant_folding": config.onnx.constant_folding,
                            "attention": "eager" if config.onnx.eager_attention else "as trained"}
            # The variant checks run the checkpoint's held-out windows when it records its split (what the
            # quantization report scores), else the config's seeded ones; each alone and in mixed served batches.
            held_out = held_out_windows(local, window_samples=W,
                                        hop_samples=info.hop_samples or default_hop_samples(W))
            windows = None if held_out is None else held_out.batches
            clips = None if held_out is None else held_out.clips
            bar.set_postfix_str("fp32: batch invariance")
            fp32_batched = check_variant_agreement(fp32_path, fp32_path, window_samples=W, config=config.parity,
                                                   batches=windows, clips=clips, what="fp32 ONNX alone vs batched")
            parity_json["fp32"] = {"fp32_vs_pytorch": fp32_report.to_json(), "fp32_batch_invariance": fp32_batched.to_json()}
            stage("fp32", None, fp32_options, fp32_report)

            if "int8" in config.variants:
                (work / "int8").mkdir()
                int8_path = work / "int8" / MODEL_FILENAME
                choice = choose_int8(
                    fp32_path, int8_path, window_samples=W, candidates=config.int8_candidates,
                    classes=config.verify_cpu_classes, parity=config.parity, batches=windows, clips=clips,
                    on_attempt=lambda name: bar.set_postfix_str(f"int8: {name}, agreement with fp32"),
                )
                bar.update(2)
                parity_json["int8"] = {"int8_vs_fp32": choice.report.to_json(), "fp32_vs_pytorch": fp32_report.to_json(),
                                       **{f"int8_vs_fp32_on_{c}": r.to_json()
                                          for c, r in list(choice.attempts[-1].reports.items())[1:]}}
                stage("int8", choice.preset, {**fp32_options, "quantization": choice.config.to_json(),
                                              "preset_selection": [a.to_json() for a in choice.attempts],
                                              "graph_rewrites": choice.rewrites.to_json(),
                                              "integer_weights": integer_weights(int8_path).to_json(),
                                              "reference_sha256": results["fp32"].sha256}, choice.report,
                      extra={"verified_cpu_classes": ",".join(choice.verified_classes)})

            if "fp16" in config.variants:
                bar.set_postfix_str("fp16: convert_float_to_float16")
                (work / "fp16").mkdir()
                fp16_path = work / "fp16" / MODEL_FILENAME
                convert_fp16(fp32_path, fp16_path, config=config.fp16)
                bar.update()
                bar.set_postfix_str("fp16: agreement with fp32")
                fp16_parity = replace(config.parity, prob_atol=config.parity.fp16_prob_atol)
                fp16_report = check_variant_agreement(
                    fp32_path, fp16_path, window_samples=W, config=fp16_parity, what="fp16 vs fp32 ONNX",
                    batches=windows, clips=clips,
                )
                bar.update()
                parity_json["fp16"] = {"fp16_vs_fp32": fp16_report.to_json(), "fp32_vs_pytorch": fp32_report.to_json()}
                stage("fp16", None, {**fp32_options, "fp16": config.fp16.to_json(), "converter": f"onnxconverter-common {converter}",
                                     "reference_sha256": results["fp32"].sha256}, fp16_report)

            bar.set_postfix_str("install")
            for variant in config.variants:
                install_dir(staged[variant], out_dir / variant)
            bar.update()
    finally:
        bar.close()
    return ExportResult(
        checkpoint=checkpoint,
        out_dir=out_dir,
        variants={v: results[v] for v in config.variants},
        fp32_reference_only="fp32" not in config.variants,
    )
