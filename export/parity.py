"""Numerical checks of every conversion: ONNX vs PyTorch, and variants vs fp32.

Both checks run the same seeded batches (several batch sizes, full and padded
windows of several lengths), collect *every* mismatch and raise one
:class:`~export.errors.ParityError` listing them.

* fp32 parity: ONNX Runtime vs PyTorch, ``max |Δlogit| <= logit_atol`` (1e-4).
* variant agreement (int8): the variant's ONNX vs the fp32 ONNX,
  ``max |Δprobability| <= prob_atol`` and top-1 label agreement
  ``>= min_label_agreement``. If every class probability moves by at most
  ``ε``, a label can only flip where fp32's top-1/top-2 margin is below ``2ε``.
  So a flip on a *near tie* (fp32 margin < ``2 * prob_atol``) is within the
  probability tolerance and is excused; only flips of decisive windows count
  against the agreement. The report keeps the raw agreement too, so a figure on
  an untrained (near-uniform) model can be read for what it is.
* batch invariance (every variant): the variant runs each window alone *and* in mixed
  batches of ``max_batch_size`` (:mod:`export.gate_windows`), as Triton's dynamic batcher
  merges callers; a window whose probabilities differ by more than ``batch_atol`` between the
  two fails the check (:class:`~export.errors.BatchDependenceError`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM, OUTPUT_LOGITS, OUTPUT_PROBABILITIES
from client.errors import ConfigError
from export.errors import BatchDependenceError, ExportError, ParityError
from export.gate_windows import clip_probabilities, gate_runs, stack_windows

#: Shortest window used in parity batches (samples): wav2vec2's conv stack needs
#: 400 samples (25 ms @ 16 kHz) for one frame.
MIN_PARITY_SAMPLES = 400
#: Lengths of the parity windows, as fractions of W (cycled over the batches).
LENGTH_FRACTIONS = (1.0, 0.5, 0.25, 0.8, 0.33, 0.9, 0.6, 0.15, 0.71, 1.0, 0.42)

Batch = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ParityConfig:
    """What is compared and how strictly.

    Attributes:
        batch_sizes: one seeded batch per entry (sizes >= 1).
        seed: seed of the generated windows.
        logit_atol: fp32 ONNX vs PyTorch, max |Δlogit| allowed.
        prob_atol: variant vs fp32, max |Δprobability| allowed (int8 default 0.05).
        min_label_agreement: variant vs fp32, fraction of windows whose top-1 label
            must agree; flips where fp32's top-1/top-2 margin is below ``2 * prob_atol``
            are excused (they are within the probability tolerance).
        intra_op_threads: ONNX Runtime threads for the checks (0: the served model's default,
            :func:`client.onnx_session.default_intra_op_threads`); the other session options
            are the served model's.
        fp16_prob_atol: the fp16 variant's max |Δprobability| vs fp32 (default 0.01:
            fp16 rounds, it does not quantize; the tiny model measures ~6e-5).
        windows: seeded windows of the variant checks when no real ones are given (the export
            passes the checkpoint's held-out windows when it has them).
        max_batch_size: the served batch the variant checks stack windows into (Triton's
            ``max_batch_size``; the repository's default).
        batch_atol: max |Δprobability| allowed between a window alone and the same window batched
            with ``max_batch_size - 1`` others (fp32 and per-row int8 measure ~2e-7: float
            summation order only).
        min_clip_agreement: with held-out clips: fraction of clips whose label (windows combined
            as serving combines them) must equal fp32's, alone and batched.
        max_accuracy_drop: with held-out clips: how far the variant's clip accuracy may fall below
            fp32's (0.005: half a point).
    """

    batch_sizes: tuple[int, ...] = (1, 3, 8)
    seed: int = 0
    logit_atol: float = 1e-4
    prob_atol: float = 0.05
    min_label_agreement: float = 0.95
    intra_op_threads: int = 0
    fp16_prob_atol: float = 0.01
    windows: int = 320
    max_batch_size: int = 8
    batch_atol: float = 1e-5
    min_clip_agreement: float = 0.99
    max_accuracy_drop: float = 0.005

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        for name in ("windows", "max_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch_sizes={self.batch_sizes}: need at least one batch, each of size >= 1")
        for name in ("logit_atol", "prob_atol", "fp16_prob_atol", "batch_atol"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be > 0")
        for name in ("min_label_agreement", "min_clip_agreement", "max_accuracy_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be in [0, 1]")
        if self.intra_op_threads < 0:
            raise ConfigError(f"intra_op_threads={self.intra_op_threads}: must be >= 0 (0: the served default)")


@dataclass(frozen=True)
class ParityReport:
    """The outcome of one comparison (stored in the recipe).

    Attributes:
        what: ``"fp32 ONNX vs PyTorch"``, ``"int8 vs fp32 ONNX"``...
        windows: windows compared.
        batch_sizes: batch sizes used.
        min_num_samples: shortest valid length compared (samples).
        max_abs_logit_diff: max |Δlogit| over all windows.
        max_abs_prob_diff: max |Δprobability| over all windows.
        label_agreement: fraction of windows with the same top-1 label.
        near_ties: windows whose reference top-1/top-2 probability margin is below
            twice the probability tolerance (where a label flip is within tolerance).
        excused_flips: label flips on near ties (not counted against agreement).
        tolerances: the thresholds applied.
        mismatches: one line per failed comparison (empty when passed).
        max_batch_dependence: max |Δprobability| between a window alone and batched
            (variant checks; 0 where not measured).
        batch_dependent_windows: windows whose answer changed beyond ``batch_atol`` when batched.
        clips: held-out clips scored (0: seeded windows, no clip figures).
        clip_agreement: fraction of clips with fp32's label, alone and batched (``None`` without clips).
        accuracy: the variant's clip accuracy, the worse of alone and batched (``None`` without clips).
        reference_accuracy: fp32's clip accuracy on the same clips (``None`` without clips).
    """

    what: str
    windows: int
    batch_sizes: tuple[int, ...]
    min_num_samples: int
    max_abs_logit_diff: float
    max_abs_prob_diff: float
    label_agreement: float
    near_ties: int
    excused_flips: int
    tolerances: Mapping[str, float]
    mismatches: tuple[str, ...] = field(default_factory=tuple)
    max_batch_dependence: float = 0.0
    batch_dependent_windows: int = 0
    clips: int = 0
    clip_agreement: float | None = None
    accuracy: float | None = None
    reference_accuracy: float | None = None

    @property
    def passed(self) -> bool:
        """True when no comparison failed."""
        return not self.mismatches

    def error(self) -> ParityError:
        """The typed error of a failed report: :class:`BatchDependenceError` when a window depended on its batch."""
        kind = BatchDependenceError if self.batch_dependent_windows else ParityError
        return kind(self.what, list(self.mismatches))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        d["mismatches"] = list(self.mismatches)
        d["tolerances"] = dict(self.tolerances)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ParityReport":
        """Inverse of :meth:`to_json`."""
        d = {k: v for k, v in d.items() if k != "passed"}
        return cls(
            **{**d, "batch_sizes": tuple(d["batch_sizes"]), "mismatches": tuple(d["mismatches"]), "tolerances": dict(d["tolerances"])}
        )


def make_parity_batches(window_samples: int, *, batch_sizes: Sequence[int] = (1, 3, 8), seed: int = 0) -> list[Batch]:
    """Seeded speech-like windows, full and zero-padded, of several lengths.

    Each window is a frequency-modulated tone (80-400 Hz) at a random level
    (-40..-6 dBFS) plus noise; lengths cycle through :data:`LENGTH_FRACTIONS`
    of W (never below :data:`MIN_PARITY_SAMPLES`), zeros past ``num_samples``.

    Args:
        window_samples: W.
        batch_sizes: one batch per entry.
        seed: numpy seed.

    Returns:
        ``[(waveform [b, W] float32, num_samples [b, 1] int64), ...]``.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(window_samples, dtype=np.float64) / 16_000.0
    batches: list[Batch] = []
    k = 0
    for size in batch_sizes:
        x = np.zeros((size, window_samples), dtype=np.float32)
        n = np.zeros((size, 1), dtype=np.int64)
        for i in range(size):
            frac = LENGTH_FRACTIONS[k % len(LENGTH_FRACTIONS)]
            k += 1
            length = int(np.clip(round(frac * window_samples), min(MIN_PARITY_SAMPLES, window_samples), window_samples))
            f0 = rng.uniform(80, 400) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 6) * t))
            level = 10 ** (rng.uniform(-40, -6) / 20)
            y = level * np.sin(2 * np.pi * np.cumsum(f0) / 16_000.0) + 0.1 * level * rng.standard_normal(window_samples)
            x[i, :length] = y[:length]
            n[i, 0] = length
        batches.append((x, n))
    return batches


def _session(path: Path, threads: int):
    """The served model's ONNX Runtime session (:func:`client.onnx_session.open_session`), or an ExportError."""
    from client.onnx_session import open_session

    try:
        return open_session(path, intra_op_threads=threads or None)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
        raise ExportError(f"{path}: ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None


def _run(session, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    logits, probs = session.run([OUTPUT_LOGITS, OUTPUT_PROBABILITIES], {INPUT_WAVEFORM: batch[0], INPUT_NUM_SAMPLES: batch[1]})
    return np.asarray(logits, dtype=np.float32), np.asarray(probs, dtype=np.float32)


def run_outputs(path: str | Path, batches: Iterable[Batch], *, intra_op_threads: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(logits, probabilities)`` of the ONNX file at ``path`` for each batch (float32 ``[b, C]`` each)."""
    session = _session(Path(path), intra_op_threads)
    return [_run(session, batch) for batch in batches]


def _describe(j: int, batch: Batch, row: int) -> str:
    return f"batch {j} (size {batch[0].shape[0]}) window {row} (num_samples={int(batch[1][row, 0])})"


def _margins(probs: np.ndarray) -> np.ndarray:
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def check_onnx_parity(
    classifier,
    onnx_path: str | Path,
    *,
    window_samples: int,
    config: ParityConfig = ParityConfig(),
    what: str = "fp32 ONNX vs PyTorch",
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch on seeded full and padded batches.

    Args:
        classifier: the :class:`~training.model.WaveformClassifier` that was exported.
        onnx_path: the exported fp32 file.
        window_samples: W.
        config: batches and ``logit_atol``.
        what: how the error and report name this comparison.

    Returns:
        The :class:`ParityReport` (passed).

    Raises:
        ParityError: listing every window whose |Δlogit| exceeds ``logit_atol``,
            non-finite outputs and shape mismatches.
    """
    import torch

    session = _session(Path(onnx_path), config.intra_op_threads)
    batches = make_parity_batches(window_samples, batch_sizes=config.batch_sizes, seed=config.seed)
    mismatches: list[str] = []
    max_logit = max_prob = 0.0
    agree = windows = ties = 0
    for j, batch in enumerate(batches):
        with torch.no_grad():
            ref_logits, ref_probs = (t.numpy() for t in classifier(torch.from_numpy(batch[0]), torch.from_numpy(batch[1])))
        logits, probs = _run(session, batch)
        if logits.shape != ref_logits.shape or probs.shape != ref_probs.shape:
            mismatches.append(f"batch {j}: ONNX shapes {logits.shape}/{probs.shape} != PyTorch {ref_logits.shape}/{ref_probs.shape}")
            continue
        finite = np.isfinite(logits).all(axis=1) & np.isfinite(probs).all(axis=1)
        for row in np.flatnonzero(~finite):
            mismatches.append(f"{_describe(j, batch, row)}: non-finite ONNX output")
        dl = np.abs(logits - ref_logits).max(axis=1)
        dp = np.abs(probs - ref_probs).max(axis=1)
        for row in np.flatnonzero(finite & (dl > config.logit_atol)):
            mismatches.append(f"{_describe(j, batch, row)}: max |Δlogit| {dl[row]:.3g} > {config.logit_atol:g}")
        max_logit = max(max_logit, float(np.nanmax(dl)))
        max_prob = max(max_prob, float(np.nanmax(dp)))
        agree += int((logits.argmax(1) == ref_logits.argmax(1)).sum())
        ties += int((_margins(ref_probs) < 2 * config.logit_atol).sum())
        windows += len(dl)
    report = ParityReport(
        what=what,
        windows=windows,
        batch_sizes=config.batch_sizes,
        min_num_samples=int(min(int(b[1].min()) for b in batches)),
        max_abs_logit_diff=max_logit,
        max_abs_prob_diff=max_prob,
        label_agreement=agree / max(windows, 1),
        near_ties=ties,
        excused_flips=0,
        tolerances={"logit_atol": config.logit_atol},
        mismatches=tuple(mismatches),
    )
    if mismatches:
        raise ParityError(what, mismatches)
    return report


def check_variant_agreement(
    reference: str | Path,
    candidate: str | Path,
    *,
    window_samples: int,
    config: ParityConfig = ParityConfig(),
    batches: Iterable[Batch] | None = None,
    what: str = "variant vs fp32 ONNX",
    clips: tuple[np.ndarray, np.ndarray] | None = None,
) -> ParityReport:
    """Compare a quantized/converted ONNX file with the fp32 one; raise when it fails.

    :func:`compare_variants` with the same arguments, then :meth:`ParityReport.error`
    (a :class:`ParityError`, or :class:`BatchDependenceError` when a window's answer
    depended on its batch) listing every mismatch when the report did not pass.
    """
    report = compare_variants(reference, candidate, window_samples=window_samples, config=config,
                              batches=batches, what=what, clips=clips)
    if report.mismatches:
        raise report.error()
    return report


def variant_windows(window_samples: int, config: ParityConfig, batches: Iterable[Batch] | None = None) -> Batch:
    """The windows the variant checks run: ``batches``' rows, else ``config.windows`` seeded ones."""
    if batches is None:
        full, rest = divmod(config.windows, config.max_batch_size)
        sizes = [config.max_batch_size] * full + ([rest] if rest else [])
        batches = make_parity_batches(window_samples, batch_sizes=sizes, seed=config.seed)
    batches = list(batches)
    if not batches:
        raise ConfigError("no windows to compare")
    return stack_windows(batches)


def variant_runs(window_samples: int, config: ParityConfig, batches: Iterable[Batch] | None = None
                 ) -> tuple[list[Batch], list[np.ndarray]]:
    """What the model under test runs in the variant checks: every window alone, then mixed batches.

    :func:`export.gate_windows.gate_runs` over :func:`variant_windows`.
    """
    waveforms, counts = variant_windows(window_samples, config, batches)
    return gate_runs(waveforms, counts, max_batch_size=config.max_batch_size)


def _scatter(outputs: Sequence[tuple[np.ndarray, np.ndarray]], mixes: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the mixed batches' outputs put back in window order: ``(logits [n, C], probabilities [n, C])``."""
    logits = np.zeros((n, outputs[0][0].shape[1]), dtype=np.float32)
    probs = np.zeros_like(logits)
    for ix, (lg, pr) in zip(mixes, outputs, strict=True):
        logits[ix], probs[ix] = lg, pr
    return logits, probs


def compare_variants(
    reference: str | Path,
    candidate: str | Path,
    *,
    window_samples: int,
    config: ParityConfig = ParityConfig(),
    batches: Iterable[Batch] | None = None,
    what: str = "variant vs fp32 ONNX",
    candidate_outputs: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    clips: tuple[np.ndarray, np.ndarray] | None = None,
) -> ParityReport:
    """Compare a quantized/converted ONNX file with the fp32 one, alone and batched.

    The candidate runs every window alone (batch 1) and in mixed batches of
    ``config.max_batch_size`` (:func:`variant_runs`); fp32 runs the mixed batches. Both
    of the candidate's answers are compared with fp32, and with each other.

    Args:
        reference: the fp32 ``.onnx``.
        candidate: the variant's ``.onnx``.
        window_samples: W.
        config: ``prob_atol``, ``min_label_agreement``, ``batch_atol``, ``max_batch_size``, ``windows``.
        batches: real inputs instead of the seeded ones, e.g. held-out clips cut with
            :func:`client.audio.make_windows`: ``[(waveform [b, W] f32, num_samples [b, 1] i64)]``
            (only their rows matter: they are re-batched as above).
        what: how the error and report name this comparison.
        candidate_outputs: the candidate's ``(logits, probabilities)`` per batch of
            :func:`variant_runs`, computed elsewhere (e.g. on an emulated CPU by
            :func:`run_outputs`); ``candidate`` is then only named, not run.
        clips: ``(clip_of_window [n] int, clip_labels [clips] int)`` when the windows are held-out
            clips' (:class:`export.gate_windows.HeldOutWindows`): clips are then scored too.

    Returns:
        The :class:`ParityReport`; its ``mismatches`` list the windows whose max
        |Δprobability| exceeds ``prob_atol`` (alone or batched), non-finite outputs, label
        agreement below ``min_label_agreement``, windows whose answer alone and batched
        differ by more than ``batch_atol``, and with clips: clip agreement below
        ``min_clip_agreement`` or accuracy more than ``max_accuracy_drop`` below fp32's (empty: passed).
    """
    from export.reference_outputs import reference_outputs

    runs, mixes = variant_runs(window_samples, config, batches)
    n = sum(len(ix) for ix in mixes)
    threads = config.intra_op_threads
    # fp32's answers to the mixed batches are the same for every check of one export: computed once.
    ref_mixed = reference_outputs(Path(reference), runs[n:], threads=threads,
                                  run=lambda path, batches: run_outputs(path, batches, intra_op_threads=threads))
    ref_logits, ref_probs = _scatter(ref_mixed, mixes, n)
    if candidate_outputs is None:
        if Path(candidate).resolve() == Path(reference).resolve():  # fp32 alone vs batched: its batched runs are those
            candidate_outputs = run_outputs(candidate, runs[:n], intra_op_threads=threads) + ref_mixed
        else:
            candidate_outputs = run_outputs(candidate, runs, intra_op_threads=threads)
    alone_logits = np.concatenate([lg for lg, _ in candidate_outputs[:n]])
    alone_probs = np.concatenate([pr for _, pr in candidate_outputs[:n]])
    mixed_logits, mixed_probs = _scatter(candidate_outputs[n:], mixes, n)
    counts = np.concatenate([b[1] for b in runs[:n]])
    mismatches: list[str] = []

    def describe(row: int) -> str:
        return f"window {row} (num_samples={int(counts[row, 0])})"

    finite = np.isfinite(alone_probs).all(1) & np.isfinite(mixed_probs).all(1) & np.isfinite(alone_logits).all(1)
    for row in np.flatnonzero(~finite):
        mismatches.append(f"{describe(row)}: non-finite output")
    dp = np.maximum(np.abs(alone_probs - ref_probs).max(1), np.abs(mixed_probs - ref_probs).max(1))
    dp = np.where(finite, dp, 0.0)
    over = np.flatnonzero(dp > config.prob_atol)
    if len(over):
        worst = int(over[np.argmax(dp[over])])
        mismatches.append(f"{describe(worst)}: max |Δprobability| {dp[worst]:.3g} > {config.prob_atol:g} "
                          f"({len(over)} window(s) over)")
    dependence = np.where(finite, np.abs(alone_probs - mixed_probs).max(1), 0.0)
    dependent = np.flatnonzero(dependence > config.batch_atol)
    if len(dependent):
        worst = int(dependent[np.argmax(dependence[dependent])])
        mismatches.append(f"{len(dependent)} window(s) answer differently alone and batched with "
                          f"{config.max_batch_size - 1} others: {describe(worst)} max |Δprobability| "
                          f"{dependence[worst]:.3g} > batch_atol {config.batch_atol:g}")
    # A window agrees only when it agrees alone and batched: a caller may meet either.
    same = (alone_probs.argmax(1) == ref_probs.argmax(1)) & (mixed_probs.argmax(1) == ref_probs.argmax(1))
    tie = _margins(ref_probs) < 2 * config.prob_atol
    agree, ties, excused = int(same.sum()), int(tie.sum()), int((~same & tie).sum())
    counted = (agree + excused) / n  # flips on near ties are within prob_atol
    if counted < config.min_label_agreement:
        mismatches.append(
            f"label agreement {counted:.3f} < {config.min_label_agreement:g} over {n} windows "
            f"({n - agree - excused} decisive flip(s); raw agreement {agree / n:.3f})"
        )
    clip_figures = {} if clips is None else _clip_figures(clips, counts, ref_probs, (alone_probs, mixed_probs))
    if clip_figures:
        if clip_figures["clip_agreement"] < config.min_clip_agreement:
            mismatches.append(f"clip agreement {clip_figures['clip_agreement']:.3f} < {config.min_clip_agreement:g} "
                              f"over {clip_figures['clips']} held-out clips")
        drop = clip_figures["reference_accuracy"] - clip_figures["accuracy"]
        if drop > config.max_accuracy_drop:
            mismatches.append(f"clip accuracy {clip_figures['accuracy']:.3f} vs fp32 {clip_figures['reference_accuracy']:.3f}: "
                              f"{100 * drop:.1f} points lower > {100 * config.max_accuracy_drop:g}")
    max_logit = max(float(np.abs(alone_logits - ref_logits)[finite].max(initial=0.0)),
                    float(np.abs(mixed_logits - ref_logits)[finite].max(initial=0.0)))
    return ParityReport(
        what=what,
        windows=n,
        batch_sizes=tuple(sorted({1, *(len(ix) for ix in mixes)})),
        min_num_samples=int(counts.min()),
        max_abs_logit_diff=max_logit,
        max_abs_prob_diff=float(dp.max(initial=0.0)),
        label_agreement=agree / n,
        near_ties=ties,
        excused_flips=excused,
        tolerances={"prob_atol": config.prob_atol, "min_label_agreement": config.min_label_agreement,
                    "batch_atol": config.batch_atol},
        mismatches=tuple(mismatches),
        max_batch_dependence=float(dependence.max(initial=0.0)),
        batch_dependent_windows=int(len(dependent)),
        **clip_figures,
    )


def _clip_figures(clips: tuple[np.ndarray, np.ndarray], counts: np.ndarray, ref_probs: np.ndarray,
                  candidates: Sequence[np.ndarray]) -> dict[str, Any]:
    """Clip agreement (worst of the candidate's runs) and accuracies, windows combined as serving combines them."""
    clip_of_window, labels = (np.asarray(a) for a in clips)
    n = len(labels)
    ref = clip_probabilities(ref_probs, counts, clip_of_window, n).argmax(1)
    got = [clip_probabilities(p, counts, clip_of_window, n).argmax(1) for p in candidates]
    return {"clips": int(n), "clip_agreement": float(min((g == ref).mean() for g in got)),
            "accuracy": float(min((g == labels).mean() for g in got)), "reference_accuracy": float((ref == labels).mean())}
