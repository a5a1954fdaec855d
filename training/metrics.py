"""Classification metrics of saved predictions, per fold and over folds.

Computed from the confusion matrix with numpy, defined exactly as scikit-learn
defines them (tests compare every number with ``sklearn.metrics`` on the same
saved predictions):

* accuracy: correct / clips;
* balanced accuracy (UAR): mean recall over the classes present in ``y_true``
  (``balanced_accuracy_score``);
* weighted F1: per-class F1 weighted by true-class support (``f1_score(average="weighted")``);
* macro F1: unweighted mean of the per-class F1 over all labels of the class set
  (``f1_score(average="macro", labels=range(C), zero_division=0)``);
* per class: precision, recall, F1 (0 where undefined, i.e. ``zero_division=0``), support.

Over folds: mean and sample standard deviation (``ddof=1``; 0 for one fold).

Predictions are saved per fold as ``predictions.csv`` and ``predictions.json``
(:func:`save_predictions`), and every report is computed from those files.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from client.errors import ConfigError
from training.errors import CorpusError

#: Scalar metrics, in report order.
SCALARS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "weighted_f1", "macro_f1")
SCALAR_TITLES = {"accuracy": "accuracy", "balanced_accuracy": "UAR", "weighted_f1": "weighted F1", "macro_f1": "macro F1"}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int) -> np.ndarray:
    """``[C, C]`` int64 counts, rows true class, columns predicted class.

    Raises:
        ConfigError: lengths differ, or an index is outside ``0..C-1``.
    """
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ConfigError(f"y_true has {t.size} entries but y_pred has {p.size}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ConfigError(f"{name}: class index {int(a.min() if a.min() < 0 else a.max())} outside 0..{num_classes - 1}")
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


@dataclass(frozen=True)
class Metrics:
    """Metrics of one set of predictions.

    Attributes:
        labels: class names (C), the order of ``confusion``'s rows and columns.
        confusion: ``[C, C]`` int64 counts (rows true, columns predicted).
        accuracy, balanced_accuracy, weighted_f1, macro_f1: in [0, 1] (nan for no clips).
        precision, recall, f1: ``[C]`` float64 per class (0 where undefined).
        support: ``[C]`` int64 true clips per class.
    """

    labels: tuple[str, ...]
    confusion: np.ndarray
    accuracy: float
    balanced_accuracy: float
    weighted_f1: float
    macro_f1: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, *, labels: Sequence[str]) -> "Metrics":
        """All metrics from a ``[C, C]`` confusion matrix."""
        m = np.asarray(confusion, dtype=np.int64)
        c = len(labels)
        if m.shape != (c, c):
            raise ConfigError(f"confusion matrix of shape {m.shape} for {c} labels: need ({c}, {c})")
        tp = np.diag(m).astype(np.float64)
        support = m.sum(axis=1)
        predicted = m.sum(axis=0)
        n = int(m.sum())
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        f1 = _safe_div(2 * precision * recall, precision + recall)
        if n == 0:
            nan = float("nan")
            return cls(tuple(labels), m, nan, nan, nan, nan, precision, recall, f1, support)
        present = support > 0
        return cls(
            labels=tuple(labels), confusion=m,
            accuracy=float(tp.sum() / n),
            balanced_accuracy=float(recall[present].mean()),
            weighted_f1=float((f1 * support).sum() / support.sum()),
            macro_f1=float(f1.mean()),
            precision=precision, recall=recall, f1=f1, support=support,
        )

    @classmethod
    def from_predictions(cls, y_true: Sequence[int], y_pred: Sequence[int], *, labels: Sequence[str]) -> "Metrics":
        """Metrics of class indices ``y_true``/``y_pred`` (``[N]`` int) over ``labels``."""
        return cls.from_confusion(confusion_matrix(np.asarray(y_true), np.asarray(y_pred), num_classes=len(labels)),
                                  labels=labels)

    def scalars(self) -> dict[str, float]:
        """``{"accuracy", "balanced_accuracy", "weighted_f1", "macro_f1"}``."""
        return {k: getattr(self, k) for k in SCALARS}

    def per_class(self) -> dict[str, dict[str, float]]:
        """``{label: {"precision", "recall", "f1", "support"}}``."""
        return {lab: {"precision": float(self.precision[i]), "recall": float(self.recall[i]),
                      "f1": float(self.f1[i]), "support": int(self.support[i])} for i, lab in enumerate(self.labels)}

    def normalized_confusion(self) -> np.ndarray:
        """``[C, C]`` float64: each row divided by its support (rows without clips stay 0)."""
        return _safe_div(self.confusion, self.confusion.sum(axis=1, keepdims=True))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (scalars, per class, labels, confusion counts)."""
        return {**self.scalars(), "per_class": self.per_class(), "labels": list(self.labels),
                "confusion": self.confusion.tolist(), "clips": int(self.confusion.sum())}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for one value) of finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


@dataclass(frozen=True)
class Summary:
    """Metrics of several folds and their mean +- std.

    Attributes:
        folds: one :class:`Metrics` per fold, in fold order.
        mean, std: per scalar metric (see :data:`SCALARS`).
        per_class_mean, per_class_std: ``{label: {"precision", "recall", "f1"}}``.
        pooled: metrics of all folds' predictions together (one confusion matrix).
    """

    folds: tuple[Metrics, ...]
    mean: dict[str, float]
    std: dict[str, float]
    per_class_mean: dict[str, dict[str, float]]
    per_class_std: dict[str, dict[str, float]]
    pooled: Metrics
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, folds: Sequence[Metrics]) -> "Summary":
        """Summarise folds that share one label set."""
        if not folds:
            raise ConfigError("no folds to summarise")
        labels = folds[0].labels
        if any(f.labels != labels for f in folds):
            raise ConfigError(f"folds have different label sets: {sorted({f.labels for f in folds})}")
        mean, std = {}, {}
        for k in SCALARS:
            mean[k], std[k] = mean_std([getattr(f, k) for f in folds])
        pcm: dict[str, dict[str, float]] = {}
        pcs: dict[str, dict[str, float]] = {}
        for i, lab in enumerate(labels):
            pcm[lab], pcs[lab] = {}, {}
            for k in ("precision", "recall", "f1"):
                pcm[lab][k], pcs[lab][k] = mean_std([float(getattr(f, k)[i]) for f in folds])
        pooled = Metrics.from_confusion(sum(f.confusion for f in folds), labels=labels)
        return cls(tuple(folds), mean, std, pcm, pcs, pooled)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"folds": [f.to_json() for f in self.folds], "mean": self.mean, "std": self.std,
                "per_class_mean": self.per_class_mean, "per_class_std": self.per_class_std,
                "pooled": self.pooled.to_json()}


# --- saved predictions ---------------------------------------------------------------


@dataclass(frozen=True)
class Predictions:
    """Clip-level predictions of one model on one test set (what the reports are computed from).

    Attributes:
        labels: class names (C) in probability-column order.
        paths: clip files (N).
        actors: speaker ids (N).
        corpora: layout of each clip (N).
        y_true, y_pred: ``[N]`` int64 class indices.
        probabilities: ``[N, C]`` float32, aggregated over each clip's windows.
    """

    labels: tuple[str, ...]
    paths: tuple[str, ...]
    actors: tuple[int, ...]
    corpora: tuple[str, ...]
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray

    def metrics(self) -> Metrics:
        """:class:`Metrics` of these predictions."""
        return Metrics.from_predictions(self.y_true, self.y_pred, labels=self.labels)

    def only(self, corpus: str) -> "Predictions":
        """The predictions of one corpus's clips."""
        keep = np.asarray([c == corpus for c in self.corpora], dtype=bool)
        idx = np.flatnonzero(keep)
        return Predictions(self.labels, tuple(self.paths[i] for i in idx), tuple(self.actors[i] for i in idx),
                           tuple(self.corpora[i] for i in idx), self.y_true[keep], self.y_pred[keep],
                           self.probabilities[keep])


def save_predictions(pred: Predictions, directory: str | Path) -> tuple[Path, Path]:
    """Write ``predictions.csv`` (one row per clip, ``p_<label>`` columns) and ``predictions.json``.

    Returns:
        ``(csv_path, json_path)``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(len(pred.paths)):
        rows.append({"path": pred.paths[i], "actor": int(pred.actors[i]), "corpus": pred.corpora[i],
                     "true": pred.labels[int(pred.y_true[i])], "pred": pred.labels[int(pred.y_pred[i])],
                     **{f"p_{lab}": float(pred.probabilities[i, j]) for j, lab in enumerate(pred.labels)}})
    csv_path = directory / "predictions.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "actor", "corpus", "true", "pred"] + [f"p_{lab}" for lab in pred.labels])
        w.writeheader()
        w.writerows(rows)
    json_path = directory / "predictions.json"
    json_path.write_text(json.dumps({"labels": list(pred.labels), "clips": rows}, indent=1) + "\n")
    return csv_path, json_path


def load_predictions(path: str | Path) -> Predictions:
    """Read ``predictions.json`` or ``predictions.csv`` written by :func:`save_predictions`.

    Raises:
        CorpusError: missing or malformed file (names it and the reason).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such predictions file")
    try:
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                labels = tuple(c[2:] for c in (reader.fieldnames or []) if c.startswith("p_"))
                rows = list(reader)
        else:
            doc = json.loads(path.read_text())
            labels, rows = tuple(doc["labels"]), doc["clips"]
        if not labels:
            raise ValueError("no label columns")
        index = {lab: i for i, lab in enumerate(labels)}
        return Predictions(
            labels=labels, paths=tuple(str(r["path"]) for r in rows), actors=tuple(int(r["actor"]) for r in rows),
            corpora=tuple(str(r.get("corpus", "ravdess")) for r in rows),
            y_true=np.asarray([index[r["true"]] for r in rows], dtype=np.int64),
            y_pred=np.asarray([index[r["pred"]] for r in rows], dtype=np.int64),
            probabilities=np.asarray([[float(r[f"p_{lab}"]) for lab in labels] for r in rows],
                                     dtype=np.float32).reshape(len(rows), len(labels)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{path}: malformed predictions file: {exc!r}") from None
