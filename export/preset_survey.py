"""``ser int8-presets``: how far each int8 preset drifts from fp32 on one model, per CPU class.

For a user choosing a preset for a fleet, and for anyone checking why the export fell
back from one preset to the next: every preset is quantized from the same fp32 file and
compared with it as the export's check compares (the source checkpoint's held-out windows when
``ser int8-presets`` finds them, each alone and batched), on this host's CPU class and on the
classes asked for (emulated where possible, :mod:`export.isa_check`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from client.errors import ConfigError
from export.cpu_class import cpu_class
from export.isa_check import compare_on_class
from export.parity import ParityConfig
from export.quantize import QUANTIZATION_PRESETS, integer_weights, quantize_int8


@dataclass(frozen=True)
class SurveyRow:
    """One preset on one CPU class.

    Attributes:
        preset: the preset name.
        cpu_class: where it ran (``"avx2"`` may be emulated).
        max_abs_prob_diff: max |Δprobability| against fp32 over the parity windows.
        label_agreement: fraction of windows with fp32's top-1 label (alone and batched).
        max_batch_dependence: max |Δprobability| between a window alone and batched with
            ``max_batch_size - 1`` others (0 for a batch-invariant model, up to float rounding).
        clip_agreement: with held-out clips, the fraction of clips with fp32's label (else ``None``).
        accuracy_vs_fp32: with held-out clips, the preset's clip accuracy minus fp32's, in points (else ``None``).
        passed: within the export's tolerances.
        avx2_exact: its integer weights cannot saturate on AVX2-only CPUs.
        size_bytes: size of the int8 file.
    """

    preset: str
    cpu_class: str
    max_abs_prob_diff: float
    label_agreement: float
    max_batch_dependence: float
    clip_agreement: float | None
    accuracy_vs_fp32: float | None
    passed: bool
    avx2_exact: bool
    size_bytes: int


def survey_presets(
    fp32_path: str | Path,
    *,
    window_samples: int,
    presets: Sequence[str] = tuple(QUANTIZATION_PRESETS),
    classes: Sequence[str] = (),
    config: ParityConfig | None = None,
    progress: Callable[[str], None] | None = None,
    batches: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    clips: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[SurveyRow]:
    """Quantize ``fp32_path`` with each preset and compare it with fp32 on each class.

    Args:
        fp32_path: the fp32 ``.onnx`` of an export.
        window_samples: W.
        presets: preset names (default: all).
        classes: CPU classes besides this host's.
        config: tolerances and batches (default: the export's).
        progress: called with ``"<preset> on <class>"`` before each comparison.
        batches: the windows to compare on (e.g. :func:`export.gate_windows.held_out_windows`), instead
            of ``config.windows`` seeded ones; each runs alone and in mixed batches as in the export's check.
        clips: with held-out windows, their clips and labels (clip agreement and accuracy in the rows).

    Returns:
        One row per preset and class, presets in the given order, this host's class first.

    Raises:
        ConfigError: an unknown preset, or a class that cannot be checked here.
    """
    unknown = [p for p in presets if p not in QUANTIZATION_PRESETS]
    if unknown:
        raise ConfigError(f"presets {unknown}: unknown; choose from {sorted(QUANTIZATION_PRESETS)}")
    config = config or ParityConfig()
    order = list(dict.fromkeys([cpu_class(), *classes]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="ser-survey-") as tmp:
        for name in presets:
            path = quantize_int8(fp32_path, Path(tmp) / f"{name}.onnx", config=QUANTIZATION_PRESETS[name])
            exact = integer_weights(path).avx2_exact
            for target in order:
                if progress:
                    progress(f"{name} on {target}")
                r = compare_on_class(fp32_path, path, window_samples=window_samples, target=target, config=config,
                                     batches=batches, clips=clips)
                rows.append(SurveyRow(preset=name, cpu_class=target, max_abs_prob_diff=r.max_abs_prob_diff,
                                      label_agreement=r.label_agreement,
                                      max_batch_dependence=r.max_batch_dependence, clip_agreement=r.clip_agreement,
                                      accuracy_vs_fp32=None if r.accuracy is None else 100 * (r.accuracy - r.reference_accuracy),
                                      passed=r.passed, avx2_exact=exact,
                                      size_bytes=path.stat().st_size))
    return rows


def survey_markdown(rows: Sequence[SurveyRow], *, tolerance: float) -> str:
    """The rows as a Markdown table (what ``ser int8-presets`` prints)."""
    lines = ["| preset | CPU class | max \\|Δp\\| | label agreement | alone vs batched max \\|Δp\\| | passes (≤ %g) "
             "| clip agreement | accuracy − fp32 (points) | exact on AVX2 | size MB |" % tolerance,
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agree = "" if r.clip_agreement is None else f"{r.clip_agreement:.3f}"
        drop = "" if r.accuracy_vs_fp32 is None else f"{r.accuracy_vs_fp32:+.1f}"
        lines.append(f"| {r.preset} | {r.cpu_class} | {r.max_abs_prob_diff:.4f} | {r.label_agreement:.3f} | {r.max_batch_dependence:.1e} | "
                     f"{'yes' if r.passed else 'no'} | {agree} | {drop} | {'yes' if r.avx2_exact else 'no'} | {r.size_bytes / 1e6:.2f} |")
    return "\n".join(lines)
