"""k-fold cross-validation and the cross-corpus table, each a loop over :func:`training.train.train`.

``run_cv``: fold ``i`` of ``k`` actor-grouped folds (:func:`training.folds.actor_kfold`)
is trained into ``out/fold_<i>/`` (checkpoint, ``split.json``, ``metrics.csv``,
``predictions.{csv,json}`` of its test actors); ``out/report.md`` and
``out/metrics.json`` are then computed from those saved predictions. A fold whose
checkpoint already exists with an identical config is reused (``train``'s cache),
so an interrupted CV resumes at the first unfinished fold. The folds share one
:func:`training.screen.decode_cache`: each clip is decoded once for all of them, and a
corpus file that cannot be used is reported once (and recorded in every fold's ``split.json``).

``run_cross_corpus``: on one fold of RAVDESS and CREMA-D (each corpus folded on its
own, so "RAVDESS" and "RAVDESS + CREMA-D" test on the same actors), train on
RAVDESS (ravdess7), on CREMA-D (crema6) and on both (combined7), and score each
model on each corpus's test actors (:func:`training.evaluate.evaluate_checkpoint`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from client.errors import ConfigError
from training.metrics import save_predictions
from training.screen import decode_cache
from training.train import train
from training.train_config import TrainConfig, TrainResult

CORPUS_TITLES = {"ravdess": "RAVDESS", "crema-d": "CREMA-D"}


@dataclass(frozen=True)
class CVResult:
    """What :func:`run_cv` produced.

    Attributes:
        out: the CV directory.
        report: ``report.md``.
        folds: one :class:`TrainResult` per fold.
        mean, std: scalar metrics over folds (from the saved predictions).
        seconds: wall time (s).
    """

    out: Path
    report: Path
    folds: tuple[TrainResult, ...]
    mean: dict[str, float]
    std: dict[str, float]
    seconds: float

    def __str__(self) -> str:
        return (f"{len(self.folds)}-fold CV: accuracy {100 * self.mean['accuracy']:.2f} ± {100 * self.std['accuracy']:.2f} %, "
                f"UAR {100 * self.mean['balanced_accuracy']:.2f} ± {100 * self.std['balanced_accuracy']:.2f} %, "
                f"weighted F1 {100 * self.mean['weighted_f1']:.2f} ± {100 * self.std['weighted_f1']:.2f} % "
                f"in {self.seconds:.0f} s; report {self.report}")


def _protocol(config: TrainConfig, **more: Any) -> dict[str, Any]:
    hp = config.resolved()
    return {
        "corpus": ", ".join(f"{CORPUS_TITLES[lay]} at {root}" for lay, root in config.roots().items()),
        "class set": config.class_set + (" (calm merged into neutral)" if config.calm_as_neutral else ""),
        **more,
        "model": f"base {config.base}, window {config.window_s or 'auto'} s, "
                 + (f"{hp['max_steps']} steps" if hp["max_steps"] else f"{hp['epochs']:g} epochs")
                 + f", batch {hp['batch_size']}, lr {hp['learning_rate']:g}"
                 + (", class-weighted loss" if config.class_weighted else "")
                 + (f", early stopping (patience {config.early_stopping_patience}) on validation weighted F1"
                    if config.early_stopping_patience else ""),
        "evaluation": "clip level: all windows of a clip scored and averaged weighted by valid samples (as served)",
    }


def run_cv(config: TrainConfig, *, folds: int | None = None, only: tuple[int, ...] | None = None,
           progress: bool = True) -> CVResult:
    """Train and score every fold of ``k`` actor-grouped folds; write the report.

    Args:
        config: training config; its ``out`` is the CV directory (folds go to
            ``out/fold_<i>``), its ``folds`` the k (overridden by ``folds``);
            ``fold`` and ``manifest`` must be unset.
        folds: k (default: ``config.folds``, 5).
        only: run these fold indices only (the report covers them).
        progress: progress lines over folds (and the trainer's), :mod:`client.progress`.

    Returns:
        :class:`CVResult`.

    Raises:
        ConfigError: ``config`` pins a fold or a manifest, or ``only`` names a fold outside 0..k-1.
    """
    from client.progress import progress_bar
    from training.report import write_cv_report

    if config.fold is not None or config.manifest is not None:
        raise ConfigError(f"fold={config.fold}, manifest={config.manifest}: run_cv chooses the folds itself; unset both")
    k = int(folds or config.folds)
    indices = tuple(range(k)) if only is None else tuple(only)
    if not indices or any(not 0 <= i < k for i in indices):
        raise ConfigError(f"only={only}: fold indices must be in 0..{k - 1}")
    t0 = time.perf_counter()
    results = []
    with decode_cache():  # every clip decoded, and every unusable one reported, once for all folds
        for i in progress_bar(indices, desc="folds", unit="fold", disable=not progress):
            results.append(train(replace(config, out=config.out / f"fold_{i}", fold=i, folds=k), progress=progress))
    report = write_cv_report(
        config.out, predictions=[r.checkpoint / "predictions.json" for r in results],
        protocol=_protocol(config, folds=f"{k} actor-grouped folds (no speaker in two partitions), seed {config.seed}, "
                           f"{config.val_actors} validation actor(s) per corpus; folds run: {list(indices)}"),
        title=f"{k}-fold cross-validation, {config.class_set}",
    )
    doc = json.loads((config.out / "metrics.json").read_text())
    return CVResult(out=config.out, report=report, folds=tuple(results), mean=doc["mean"], std=doc["std"],
                    seconds=time.perf_counter() - t0)


@dataclass(frozen=True)
class CrossCorpusResult:
    """What :func:`run_cross_corpus` produced: ``report.md`` and ``{(trained on, tested on): metrics}``."""

    out: Path
    report: Path
    cells: dict[tuple[str, str], dict[str, float]]
    seconds: float

    def __str__(self) -> str:
        cells = "; ".join(f"{a} -> {b}: acc {100 * m['accuracy']:.1f} / wF1 {100 * m['weighted_f1']:.1f}"
                          for (a, b), m in self.cells.items())
        return f"cross-corpus ({self.seconds:.0f} s): {cells}; report {self.report}"


def run_cross_corpus(config: TrainConfig, *, fold: int = 0, progress: bool = True) -> CrossCorpusResult:
    """Train on RAVDESS, on CREMA-D and on both (fold ``fold``); test each on both corpora's test actors.

    Args:
        config: a config with both roots (``layout=("ravdess", "crema-d")``); its
            class set is replaced per run (ravdess7 / crema6 / combined7; its
            ``calm_as_neutral`` is kept), its ``out`` holds ``ravdess/``,
            ``crema-d/``, ``both/`` and the report.
        fold: which fold of ``config.folds``.
        progress: progress displays (:mod:`client.progress`).

    Raises:
        ConfigError: ``config`` does not name one RAVDESS and one CREMA-D root.
    """
    from training.evaluate import evaluate_checkpoint
    from training.report import write_cross_corpus_report

    roots = config.roots()
    if set(roots) != {"ravdess", "crema-d"}:
        raise ConfigError(f"layout={config.layout!r}: the cross-corpus table needs one ravdess and one crema-d root")
    t0 = time.perf_counter()
    base = replace(config, manifest=None, fold=fold)
    runs = {
        "RAVDESS": replace(base, corpus=roots["ravdess"], layout="ravdess", class_set="ravdess7",
                           out=config.out / "ravdess"),
        "CREMA-D": replace(base, corpus=roots["crema-d"], layout="crema-d", class_set="crema6",
                           calm_as_neutral=False, out=config.out / "crema-d"),
        "RAVDESS + CREMA-D": replace(base, corpus=(roots["ravdess"], roots["crema-d"]), layout=("ravdess", "crema-d"),
                                     class_set="combined7", out=config.out / "both"),
    }
    with decode_cache():
        trained = {name: train(cfg, progress=progress) for name, cfg in runs.items()}
    both_manifest = trained["RAVDESS + CREMA-D"].manifest  # holds both corpora's test actors of this fold
    cells: dict[tuple[str, str], Path] = {}
    for name, result in trained.items():
        ev = evaluate_checkpoint(result.checkpoint, manifest=both_manifest, roots=roots)
        for layout, title in CORPUS_TITLES.items():
            cell_dir = config.out / "cells" / f"{runs[name].out.name}__{layout}"
            save_predictions(ev.predictions.only(layout), cell_dir)
            cells[name, title] = cell_dir / "predictions.json"
    report = write_cross_corpus_report(
        config.out, cells=cells,
        protocol=_protocol(base, folds=f"fold {fold} of {config.folds} actor-grouped folds per corpus, seed {config.seed} "
                           "(each corpus folded on its own: every row tests on the same actors)",
                           **{"class sets": "RAVDESS: ravdess7, CREMA-D: crema6, both: combined7 (surprised only from "
                              "RAVDESS); a model scores 0 on classes it does not have"}),
        title=f"Cross-corpus, fold {fold}",
    )
    doc = json.loads((config.out / "metrics.json").read_text())
    got = {(c["trained_on"], c["tested_on"]): {k: c[k] for k in ("accuracy", "balanced_accuracy", "weighted_f1",
                                                                  "macro_f1")} for c in doc["cells"]}
    return CrossCorpusResult(out=config.out, report=report, cells=got, seconds=time.perf_counter() - t0)
