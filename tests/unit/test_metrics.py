"""Metrics and reports: every number equals scikit-learn's on the saved predictions."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from sklearn import metrics as skm

from client.errors import ConfigError
from training.errors import CorpusError
from training.metrics import Metrics, Predictions, Summary, load_predictions, save_predictions
from training.report import write_cross_corpus_report, write_cv_report

LABELS = ("neutral", "happy", "sad", "angry", "fearful")


def _predictions(seed: int, n: int = 60, *, absent: int | None = None, corpus: str = "ravdess") -> Predictions:
    rng = np.random.default_rng(seed)
    c = len(LABELS)
    y = rng.integers(0, c, n)
    if absent is not None:
        y[y == absent] = (absent + 1) % c  # a class with no true clips (still predicted sometimes)
    logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[y] * (rng.random(n) < 0.6)[:, None]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return Predictions(LABELS, tuple(f"clip{i}.wav" for i in range(n)), tuple(int(a) for a in rng.integers(1, 5, n)),
                       (corpus,) * n, y.astype(np.int64), p.argmax(1), p.astype(np.float32))


def _sklearn(y, p) -> dict[str, float]:
    labels = list(range(len(LABELS)))
    return {
        "accuracy": skm.accuracy_score(y, p),
        "balanced_accuracy": skm.balanced_accuracy_score(y, p),
        "weighted_f1": skm.f1_score(y, p, average="weighted", labels=labels, zero_division=0),
        "macro_f1": skm.f1_score(y, p, average="macro", labels=labels, zero_division=0),
    }


@pytest.mark.parametrize("seed, absent", [(0, None), (1, None), (2, 3)])
def test_every_metric_equals_scikit_learn(seed, absent):
    pred = _predictions(seed, absent=absent)
    m = pred.metrics()
    for k, v in _sklearn(pred.y_true, pred.y_pred).items():
        assert getattr(m, k) == pytest.approx(v, abs=1e-12), k
    p, r, f, s = skm.precision_recall_fscore_support(pred.y_true, pred.y_pred, labels=range(len(LABELS)), zero_division=0)
    np.testing.assert_allclose(m.precision, p, atol=1e-12)
    np.testing.assert_allclose(m.recall, r, atol=1e-12)
    np.testing.assert_allclose(m.f1, f, atol=1e-12)
    np.testing.assert_array_equal(m.support, s)
    np.testing.assert_array_equal(m.confusion, skm.confusion_matrix(pred.y_true, pred.y_pred, labels=range(len(LABELS))))


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_saved_predictions_round_trip_through_csv_and_json(suffix, tmp_path):
    pred = _predictions(5)
    save_predictions(pred, tmp_path)
    back = load_predictions(tmp_path / f"predictions.{suffix}")
    assert back.labels == pred.labels and back.paths == pred.paths and back.actors == pred.actors
    np.testing.assert_array_equal(back.y_true, pred.y_true)
    np.testing.assert_array_equal(back.y_pred, pred.y_pred)
    np.testing.assert_allclose(back.probabilities, pred.probabilities, atol=1e-7)


def _numbers(row: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", row)]


def test_cv_report_numbers_equal_scikit_learn_on_the_saved_predictions(tmp_path):
    files = []
    for i in range(3):
        save_predictions(_predictions(10 + i), tmp_path / f"fold_{i}")
        files.append(tmp_path / f"fold_{i}" / "predictions.csv")
    report = write_cv_report(tmp_path, predictions=files, protocol={"corpus": "test"})
    doc = json.loads((tmp_path / "metrics.json").read_text())
    text = report.read_text()
    per_fold = []
    for i, f in enumerate(files):
        saved = load_predictions(f)
        want = _sklearn(saved.y_true, saved.y_pred)
        per_fold.append(want)
        row = next(line for line in text.splitlines() if line.startswith(f"| {i} |"))
        assert _numbers(row) == pytest.approx([round(100 * want[k], 2) for k in want], abs=1e-9), row
        for k, v in want.items():
            assert doc["folds"][i][k] == pytest.approx(v, abs=1e-12)
    for k in per_fold[0]:
        values = [f[k] for f in per_fold]
        assert doc["mean"][k] == pytest.approx(np.mean(values), abs=1e-12)
        assert doc["std"][k] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    mean_row = next(line for line in text.splitlines() if line.startswith("| **mean"))
    expected = [x for k in per_fold[0] for x in (round(100 * np.mean([f[k] for f in per_fold]), 2),
                                                 round(100 * np.std([f[k] for f in per_fold], ddof=1), 2))]
    assert _numbers(mean_row) == pytest.approx(expected, abs=1e-9)
    for name in ("confusion.json", "confusion_counts.png", "confusion_normalized.png", "confusion_fold2_counts.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    conf = json.loads((tmp_path / "confusion.json").read_text())
    pooled = sum(skm.confusion_matrix(load_predictions(f).y_true, load_predictions(f).y_pred, labels=range(5)) for f in files)
    assert conf["counts"] == pooled.tolist()
    np.testing.assert_allclose(np.asarray(conf["row_normalized"]).sum(1), 1.0, atol=1e-5)


def test_cross_corpus_report_lays_out_train_rows_and_test_columns(tmp_path):
    cells = {}
    for i, (train_on, test_on) in enumerate([(a, b) for a in ("A", "B", "A + B") for b in ("A", "B")]):
        save_predictions(_predictions(20 + i), tmp_path / f"c{i}")
        cells[train_on, test_on] = tmp_path / f"c{i}" / "predictions.json"
    text = write_cross_corpus_report(tmp_path / "rep", cells=cells).read_text()
    assert "| trained on \\ tested on | A: accuracy | A: weighted F1 | B: accuracy | B: weighted F1 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| A + B |"))
    a, b = load_predictions(cells["A + B", "A"]), load_predictions(cells["A + B", "B"])
    want = [skm.accuracy_score(a.y_true, a.y_pred), skm.f1_score(a.y_true, a.y_pred, average="weighted"),
            skm.accuracy_score(b.y_true, b.y_pred), skm.f1_score(b.y_true, b.y_pred, average="weighted")]
    assert _numbers(row) == pytest.approx([round(100 * w, 2) for w in want], abs=1e-9)


def test_summary_refuses_folds_with_different_labels_and_metrics_refuse_bad_indices():
    a = Metrics.from_predictions([0, 1], [0, 1], labels=("x", "y"))
    b = Metrics.from_predictions([0, 1], [0, 1], labels=("y", "x"))
    with pytest.raises(ConfigError, match="different label sets"):
        Summary.of([a, b])
    with pytest.raises(ConfigError, match="y_pred: class index 2"):
        Metrics.from_predictions([0, 1], [0, 2], labels=("x", "y"))


def test_a_malformed_predictions_file_raises_corpus_error_naming_it(tmp_path):
    bad = tmp_path / "predictions.json"
    bad.write_text('{"labels": ["a"], "clips": [{"path": "x", "actor": 1, "true": "zzz", "pred": "a", "p_a": 1}]}')
    with pytest.raises(CorpusError, match="predictions.json: malformed"):
        load_predictions(bad)
    with pytest.raises(CorpusError, match="no such predictions file"):
        load_predictions(tmp_path / "none.csv")
