"""k-fold CV, CREMA-D training, the cross-corpus table and `ser evaluate`, on tiny synthetic corpora.

Figures measured on 2 shared CPU cores: the CREMA-D tiny model (TEST recipe, batch 8, 150 steps)
reaches 60.4 % on 2 held-out actors (4 classes, chance 25 %); the 3-fold CV of the ``cv_result`` fixture
(15 steps a fold) only checks mechanics, its accuracy is near chance.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from training.folds import read_manifest
from training.metrics import load_predictions


def test_cv_tests_every_actor_once_and_its_report_equals_scikit_learn_on_the_saved_predictions(cv_result):
    assert len(cv_result.folds) == 3
    tested = []
    for i, fold in enumerate(cv_result.folds):
        split = read_manifest(fold.manifest)
        assert split.extra == {"fold": i, "folds": 3}
        assert not set(split.actors("test")) & set(split.actors("train"))
        tested += split.actors("test")
        saved = load_predictions(fold.checkpoint / "predictions.csv")
        assert sorted(set(saved.actors)) == list(split.actors("test"))
        doc = json.loads((cv_result.out / "metrics.json").read_text())["folds"][i]
        assert doc["accuracy"] == pytest.approx(skm.accuracy_score(saved.y_true, saved.y_pred), abs=1e-12)
        assert doc["weighted_f1"] == pytest.approx(skm.f1_score(saved.y_true, saved.y_pred, average="weighted"), abs=1e-12)
        assert fold.test_accuracy == pytest.approx(doc["accuracy"])
    assert sorted(tested) == [1, 2, 3, 4, 5, 6]
    text = cv_result.report.read_text()
    assert "| **mean ± std** |" in text and "## Per class" in text and "confusion_counts.png" in text
    assert (cv_result.out / "fold_0" / "metrics.csv").is_file()


def test_a_tiny_model_learns_synthetic_crema_d_far_above_chance(crema_trained_result):
    chance = 1 / len(crema_trained_result.labels)
    # Measured: 60.4 % (4 classes, 2 held-out actors x 24 clips); memorising the corpus would not transfer.
    assert crema_trained_result.labels == ("angry", "fearful", "happy", "sad")  # crema6 order, classes present
    assert crema_trained_result.test_accuracy >= 0.45 > chance + 0.15
    split = read_manifest(crema_trained_result.manifest)
    assert {c.corpus for part in split for c in part} == {"crema-d"}


def test_evaluate_reproduces_the_trained_accuracy_and_onnx_scores_like_pytorch(trained_result, tiny_checkpoint,
                                                                                 exported_tiny, tmp_path):
    from training.evaluate import evaluate_checkpoint

    ev = evaluate_checkpoint(trained_result.checkpoint, manifest=trained_result.manifest, out=tmp_path / "ev")
    assert ev.metrics.accuracy == pytest.approx(trained_result.test_accuracy)
    assert (tmp_path / "ev" / "predictions.csv").is_file() and (tmp_path / "ev" / "metrics.json").is_file()
    torch_ev = evaluate_checkpoint(tiny_checkpoint, manifest=trained_result.manifest)
    onnx_ev = evaluate_checkpoint(tiny_checkpoint, manifest=trained_result.manifest,
                                  onnx=exported_tiny / "fp32" / "model.onnx")
    np.testing.assert_allclose(onnx_ev.predictions.probabilities, torch_ev.predictions.probabilities, atol=1e-4)
    np.testing.assert_array_equal(onnx_ev.predictions.y_pred, torch_ev.predictions.y_pred)


def test_ser_evaluate_prints_the_metrics_and_writes_predictions(trained_result, tmp_path, capsys):
    from ser.cli import main

    assert main(["evaluate", str(trained_result.checkpoint), "--manifest", str(trained_result.manifest),
                 "--out", str(tmp_path)]) == 0
    assert "weighted F1" in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == pytest.approx(trained_result.test_accuracy)


@pytest.mark.slow
def test_cross_corpus_trains_on_each_and_both_and_tests_on_each(synth_corpus_dir, crema_corpus_dir, session_dir):
    from training.cv import run_cross_corpus
    from training.training_recipes import TEST

    config = TEST.config(corpus=(synth_corpus_dir, crema_corpus_dir), layout=("ravdess", "crema-d"),
                         class_set="combined7", out=session_dir / "cross", max_steps=10, folds=3, val_actors=0)
    result = run_cross_corpus(config, fold=0, progress=False)
    assert set(result.cells) == {(a, b) for a in ("RAVDESS", "CREMA-D", "RAVDESS + CREMA-D") for b in ("RAVDESS", "CREMA-D")}
    text = result.report.read_text()
    assert "| trained on \\ tested on | RAVDESS: accuracy | RAVDESS: weighted F1 | CREMA-D: accuracy |" in text
    both = read_manifest(session_dir / "cross" / "both" / "split.json")
    alone = read_manifest(session_dir / "cross" / "ravdess" / "split.json")
    assert both.only("ravdess").actors("test") == alone.actors("test"), "rows test on the same actors"
    cell = load_predictions(session_dir / "cross" / "cells" / "crema-d__ravdess" / "predictions.json")
    assert set(cell.corpora) == {"ravdess"} and len(cell.paths) == len(both.only("ravdess").test)
    assert result.cells["CREMA-D", "RAVDESS"]["accuracy"] == pytest.approx(skm.accuracy_score(cell.y_true, cell.y_pred))
