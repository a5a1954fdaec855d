"""Reports laid out like the reference tables, computed from saved predictions only.

Every number in ``report.md`` and ``metrics.json`` is computed here from the
``predictions.{csv,json}`` files the runs saved (:mod:`training.metrics`), so a
report can be rebuilt, and checked against scikit-learn, without a model.

* :func:`write_cv_report`: k-fold table (accuracy, UAR, weighted F1, macro F1 per
  fold and mean +- std), per-class precision/recall/F1 (mean +- std over folds),
  confusion matrices (pooled over folds and per fold) as PNG (counts and
  row-normalised) and JSON.
* :func:`write_cross_corpus_report`: train on A, B, A+B; test on A and B
  (accuracy and weighted F1, the reference's fold-0 table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from training.metrics import SCALAR_TITLES, SCALARS, Metrics, Summary, load_predictions


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


def _pm(mean: float, std: float) -> str:
    return f"{_pct(mean)} ± {_pct(std)}"


def write_confusion(metrics: Metrics, prefix: str | Path, *, title: str = "") -> dict[str, Path]:
    """Write ``<prefix>.json`` and ``<prefix>_counts.png`` / ``<prefix>_normalized.png``.

    Args:
        metrics: whose confusion matrix (rows true, columns predicted).
        prefix: path without suffix.
        title: figure title.

    Returns:
        ``{"json", "counts", "normalized"}`` paths.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": prefix.with_suffix(".json"), "counts": prefix.parent / f"{prefix.name}_counts.png",
             "normalized": prefix.parent / f"{prefix.name}_normalized.png"}
    norm = metrics.normalized_confusion()
    paths["json"].write_text(json.dumps({"labels": list(metrics.labels), "counts": metrics.confusion.tolist(),
                                         "row_normalized": np.round(norm, 6).tolist()}, indent=1) + "\n")
    c = len(metrics.labels)
    for kind, data, fmt in (("counts", metrics.confusion, "d"), ("normalized", norm, ".2f")):
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * c, 0.8 + 0.65 * c), dpi=100)
        ax.imshow(data, cmap="Blues", vmin=0, vmax=max(float(data.max()), 1e-9) if kind == "counts" else 1.0)
        for i in range(c):
            for j in range(c):
                v = data[i, j]
                dark = v > (0.5 * data.max() if kind == "counts" else 0.5)
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(c), metrics.labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(c), metrics.labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} ({'row-normalised' if kind == 'normalized' else 'counts'})", fontsize=9)
        fig.tight_layout()
        fig.savefig(paths[kind])
        plt.close(fig)
    return paths


def _protocol_lines(protocol: Mapping[str, Any]) -> list[str]:
    return [f"- {k}: {v}" for k, v in protocol.items()]


def write_cv_report(
    out_dir: str | Path,
    *,
    predictions: Sequence[str | Path],
    protocol: Mapping[str, Any] | None = None,
    title: str = "Cross-validation",
) -> Path:
    """Summarise k folds' saved predictions into ``report.md``, ``metrics.json`` and confusion matrices.

    Args:
        out_dir: where to write.
        predictions: one ``predictions.{csv,json}`` per fold, in fold order.
        protocol: lines for the report's protocol section (corpus, class set, folds, seed, model...).
        title: report heading.

    Returns:
        Path of ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    preds = [load_predictions(p) for p in predictions]
    summary = Summary.of([p.metrics() for p in preds])
    doc = {"title": title, "protocol": dict(protocol or {}), "predictions": [str(p) for p in predictions],
           **summary.to_json()}
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_confusion(summary.pooled, out_dir / "confusion", title=f"{title}: all folds")
    for i, m in enumerate(summary.folds):
        write_confusion(m, out_dir / f"confusion_fold{i}", title=f"{title}: fold {i}")
    labels = summary.pooled.labels
    lines = [f"# {title}", "", "## Protocol", "", *_protocol_lines(protocol or {}),
             f"- classes ({len(labels)}, chance {100 / len(labels):.2f} %): {', '.join(labels)}",
             "- every figure is computed from the saved per-fold predictions "
             f"({', '.join(str(Path(p).relative_to(out_dir)) if Path(p).is_relative_to(out_dir) else str(p) for p in predictions)}); "
             "mean ± sample standard deviation over folds, in %", "",
             "## Folds", "",
             "| fold | test actors | test clips | " + " | ".join(SCALAR_TITLES[k] for k in SCALARS) + " |",
             "|---|---|---|" + "---|" * len(SCALARS)]
    for i, (p, m) in enumerate(zip(preds, summary.folds, strict=True)):
        actors = ", ".join(str(a) for a in sorted(set(p.actors)))
        lines.append(f"| {i} | {actors} | {len(p.paths)} | " + " | ".join(_pct(getattr(m, k)) for k in SCALARS) + " |")
    lines.append(f"| **mean ± std** | | {sum(len(p.paths) for p in preds)} | "
                 + " | ".join(f"**{_pm(summary.mean[k], summary.std[k])}**" for k in SCALARS) + " |")
    lines += ["", "## Per class (mean ± std over folds)", "", "| class | precision | recall | F1 | clips |",
              "|---|---|---|---|---|"]
    for j, lab in enumerate(labels):
        mm, ss = summary.per_class_mean[lab], summary.per_class_std[lab]
        lines.append(f"| {lab} | {_pm(mm['precision'], ss['precision'])} | {_pm(mm['recall'], ss['recall'])} | "
                     f"{_pm(mm['f1'], ss['f1'])} | {int(summary.pooled.support[j])} |")
    lines += ["", "## Confusion matrix (all folds' test clips)", "",
              "![counts](confusion_counts.png) ![row-normalised](confusion_normalized.png)", "",
              "Per fold: `confusion_fold<i>.json` and `confusion_fold<i>_{counts,normalized}.png`.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_cross_corpus_report(
    out_dir: str | Path,
    *,
    cells: Mapping[tuple[str, str], str | Path],
    protocol: Mapping[str, Any] | None = None,
    title: str = "Cross-corpus",
) -> Path:
    """The train-on-A/B/A+B x test-on-A/B table (accuracy and weighted F1) from saved predictions.

    Args:
        out_dir: where to write ``report.md``, ``metrics.json`` and one confusion matrix per cell.
        cells: ``{(trained on, tested on): predictions file}``, e.g.
            ``{("RAVDESS", "RAVDESS"): ..., ("RAVDESS + CREMA-D", "CREMA-D"): ...}``; rows and
            columns appear in insertion order.
        protocol: lines for the protocol section.
        title: report heading.

    Returns:
        Path of ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(dict.fromkeys(r for r, _ in cells))
    cols = list(dict.fromkeys(c for _, c in cells))
    metrics: dict[tuple[str, str], Metrics] = {}
    for (r, c), p in cells.items():
        metrics[r, c] = load_predictions(p).metrics()
        write_confusion(metrics[r, c], out_dir / f"confusion_{_slug(r)}__{_slug(c)}", title=f"{r} -> {c}")
    doc = {"title": title, "protocol": dict(protocol or {}),
           "cells": [{"trained_on": r, "tested_on": c, "predictions": str(cells[r, c]), **metrics[r, c].to_json()}
                     for r, c in cells]}
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    head = "| trained on \\ tested on | " + " | ".join(f"{c}: accuracy | {c}: weighted F1" for c in cols) + " |"
    lines = [f"# {title}", "", "## Protocol", "", *_protocol_lines(protocol or {}),
             "- computed from the saved predictions of each cell (`metrics.json` lists the files); in %", "",
             "## Accuracy and weighted F1", "", head, "|---|" + "---|---|" * len(cols)]
    for r in rows:
        cells_txt = [f"{_pct(metrics[r, c].accuracy)} | {_pct(metrics[r, c].weighted_f1)}" if (r, c) in metrics
                     else "n/a | n/a" for c in cols]
        lines.append(f"| {r} | " + " | ".join(cells_txt) + " |")
    lines += ["", "UAR and macro F1 of every cell are in `metrics.json`; confusion matrices in "
              "`confusion_<train>__<test>_{counts,normalized}.png`.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-").replace("--", "-")
