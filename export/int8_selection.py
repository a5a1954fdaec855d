"""Pick the int8 preset for one model: the first, in a stated order, that agrees with fp32.

:func:`choose_int8` quantizes with each candidate preset in turn and runs the export's
agreement check (:func:`export.parity.compare_variants`) on every CPU class asked for:
this host's class first, then others through :mod:`export.isa_check`. The first
candidate that passes everywhere is kept; every attempt, with the reason a refused one
was refused, goes into the recipe. A user who names a preset gets a one-candidate list:
that preset or a :class:`~export.errors.ParityError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from export.cpu_class import cpu_class
from export.errors import ParityError
from export.isa_check import compare_on_class
from export.parity import ParityConfig, ParityReport
from export.quantize import GraphRewrites, QuantizationConfig, quantize_int8_with_rewrites

WHAT = "int8 vs fp32 ONNX"


@dataclass(frozen=True)
class PresetAttempt:
    """One candidate preset and how its checks went.

    Attributes:
        preset: the preset name.
        reports: ``{cpu class: report}`` in the order checked (stops at the first failure).
    """

    preset: str
    reports: Mapping[str, ParityReport]

    @property
    def passed(self) -> bool:
        """True when every class checked passed."""
        return all(r.passed for r in self.reports.values())

    def reason(self) -> str:
        """Why it was refused (empty when it passed)."""
        return "; ".join(f"on {c}: " + "; ".join(r.mismatches) for c, r in self.reports.items() if not r.passed)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (stored in the recipe)."""
        return {
            "preset": self.preset,
            "passed": self.passed,
            "checks": {c: {"max_abs_prob_diff": r.max_abs_prob_diff, "label_agreement": r.label_agreement,
                           "windows": r.windows, "max_batch_dependence": r.max_batch_dependence,
                           "clips": r.clips, "clip_agreement": r.clip_agreement, "accuracy": r.accuracy,
                           "reference_accuracy": r.reference_accuracy,
                           "passed": r.passed} for c, r in self.reports.items()},
            "refused_because": self.reason(),
        }


@dataclass(frozen=True)
class Int8Choice:
    """The preset kept.

    Attributes:
        preset: its name.
        config: its quantization options.
        attempts: every candidate tried, in order (the last one is the kept one).
        verified_classes: the CPU classes its agreement check passed on.
        rewrites: what its graph rewrites changed (how many convs became MatMuls, attention blocks fused).
    """

    preset: str
    config: QuantizationConfig
    attempts: tuple[PresetAttempt, ...]
    verified_classes: tuple[str, ...]
    rewrites: GraphRewrites = GraphRewrites()

    @property
    def report(self) -> ParityReport:
        """The check on this host's class (the first one run)."""
        return next(iter(self.attempts[-1].reports.values()))


def choose_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    window_samples: int,
    candidates: Sequence[tuple[str, QuantizationConfig]],
    classes: Sequence[str] = (),
    parity: ParityConfig | None = None,
    on_attempt: Callable[[str], None] | None = None,
    batches: Sequence[tuple[Any, Any]] | None = None,
    clips: tuple[Any, Any] | None = None,
) -> Int8Choice:
    """Quantize ``fp32_path`` into ``out_path`` with the first candidate that passes on every class.

    Args:
        fp32_path: the fp32 ``.onnx`` (reference and source).
        out_path: where the int8 ``.onnx`` is written (overwritten per candidate).
        window_samples: W.
        candidates: ``(preset name, config)`` in the order to try.
        classes: CPU classes to check besides this host's (e.g. ``("avx2",)``).
        parity: tolerances and batches (default :class:`~export.parity.ParityConfig`).
        on_attempt: called with each preset name before it is tried (progress display).
        batches: the windows to check on (the checkpoint's held-out windows), instead of seeded ones.
        clips: with held-out windows, each window's clip and the clips' labels (clip agreement and accuracy).

    Returns:
        :class:`Int8Choice`.

    Raises:
        ParityError: no candidate passed; lists each one's reason (a lone candidate whose answers
            depended on their batch: :class:`~export.errors.BatchDependenceError`).
        ConfigError: a class cannot be checked on this host (names it and why).
    """
    parity = parity or ParityConfig()
    order = list(dict.fromkeys([cpu_class(), *classes]))
    attempts: list[PresetAttempt] = []
    for name, qconfig in candidates:
        if on_attempt:
            on_attempt(name)
        _, rewrites = quantize_int8_with_rewrites(fp32_path, out_path, config=qconfig)
        reports: dict[str, ParityReport] = {}
        for target in order:
            reports[target] = compare_on_class(fp32_path, out_path, window_samples=window_samples, target=target,
                                               config=parity, what=WHAT, batches=batches, clips=clips)
            if not reports[target].passed:
                break
        attempts.append(PresetAttempt(preset=name, reports=reports))
        if attempts[-1].passed:
            return Int8Choice(preset=name, config=qconfig, attempts=tuple(attempts), verified_classes=tuple(order),
                              rewrites=rewrites)
    if len(attempts) == 1:
        failed = [r for r in attempts[0].reports.values() if not r.passed][0]
        raise failed.error()
    raise ParityError(WHAT, [f"preset {a.preset} refused {a.reason()}" for a in attempts])
