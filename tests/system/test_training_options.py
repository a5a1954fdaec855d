"""Training options: resume, early stopping, class weights, metrics log, folds, recipes.

Resume after an interruption, early stopping on validation weighted F1,
class-weighted loss, the metrics log, k-fold selection and the reference recipes.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from transformers import TrainerCallback

from training.loss import class_weights
from training.train import train
from training.training_recipes import RECIPE_DIR, TEST, load_recipe


class _Interrupt(TrainerCallback):
    """Stops the run like a crash right after the Trainer checkpoint of step ``at`` is written."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("simulated interruption")


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_interrupted_training_resumes_and_ends_like_an_uninterrupted_run(synth_corpus_dir, tmp_path):
    config = TEST.config(corpus=synth_corpus_dir, out=tmp_path / "once", max_steps=20, save_steps=10, eval_steps=10,
                         val_actors=1, cache=False)
    once = train(config, progress=False)
    broken = replace(config, out=tmp_path / "twice")
    with pytest.raises(KeyboardInterrupt):
        train(broken, progress=False, callbacks=(_Interrupt(10),))
    assert (tmp_path / "twice" / "trainer" / "checkpoint-10").is_dir()
    assert not (tmp_path / "twice" / "model.safetensors").exists()
    resumed = train(replace(broken, resume=True), progress=False)
    assert resumed.steps == once.steps == 20
    a = load_predictions_json(tmp_path / "once")
    b = load_predictions_json(tmp_path / "twice")
    np.testing.assert_allclose(b, a, atol=1e-5)
    assert resumed.test_accuracy == once.test_accuracy and resumed.val_accuracy == once.val_accuracy
    log_a, log_b = _rows(tmp_path / "once" / "metrics.csv"), _rows(tmp_path / "twice" / "metrics.csv")
    assert [r["step"] for r in log_b] == [r["step"] for r in log_a], "the resumed log has no duplicated steps"
    for ra, rb in zip(log_a, log_b, strict=True):
        for k in ("loss", "val_weighted_f1"):
            if ra[k]:
                assert float(rb[k]) == pytest.approx(float(ra[k]), abs=1e-4), (ra["step"], k)


def load_predictions_json(directory) -> np.ndarray:
    doc = json.loads((directory / "predictions.json").read_text())
    return np.array([[v for k, v in row.items() if k.startswith("p_")] for row in doc["clips"]])


@pytest.mark.slow
def test_early_stopping_stops_when_validation_weighted_f1_stops_improving(synth_corpus_dir, tmp_path):
    # A learning rate too small to change any prediction: the F1 of step 5 is never beaten.
    config = TEST.config(corpus=synth_corpus_dir, out=tmp_path / "es", max_steps=60, learning_rate=1e-9,
                         early_stopping_patience=2, eval_steps=5, val_actors=1, class_weighted=True, cache=False)
    result = train(config, progress=False)
    assert result.steps == 15, "validations at 5 (best), 10, 15: two without improvement"
    assert result.metrics["best_step"] == 5
    rows = [r for r in _rows(tmp_path / "es" / "metrics.csv") if r["val_weighted_f1"]]
    assert [int(float(r["step"])) for r in rows] == [5, 10, 15]


def test_class_weights_are_inverse_class_frequencies():
    np.testing.assert_allclose(class_weights([0, 0, 0, 1], 3), [4 / 9, 4 / 3, 0.0], rtol=1e-6)


@pytest.mark.slow
def test_training_on_a_fold_holds_out_that_folds_actors(synth_corpus_dir, tmp_path):
    from training.corpus import read_ravdess
    from training.folds import actor_kfold, read_manifest

    result = train(TEST.config(corpus=synth_corpus_dir, out=tmp_path / "f1", max_steps=1, fold=1, folds=3, val_actors=1),
                   progress=False)
    split = read_manifest(result.manifest)
    expected = actor_kfold(read_ravdess(synth_corpus_dir), k=3, val_actors=1, seed=0)[1]
    assert split.actors("test") == expected.actors("test") and split.actors("val") == expected.actors("val")


@pytest.mark.parametrize("name, class_set, accuracy_key", [
    ("ravdess8", "ravdess8", "cv_accuracy"), ("ravdess7", "ravdess7", "cv_accuracy"),
    ("crema6", "crema6", "fold0_accuracy"), ("combined7", "combined7", "fold0_on_ravdess_accuracy"),
])
def test_reference_recipes_name_the_xlsr_base_their_class_set_the_expected_figures_and_wall_time(
        name, class_set, accuracy_key, tmp_path):
    recipe = load_recipe(name)
    corpus = (tmp_path, tmp_path) if name == "combined7" else tmp_path
    config = recipe.config(corpus=corpus, out=tmp_path / "out")
    assert config.base == "facebook/wav2vec2-large-xlsr-53" and config.class_set == class_set
    assert config.folds == 5 and config.early_stopping_patience and config.resolved()["freeze_feature_encoder"]
    assert 0.7 < recipe.expected[accuracy_key] < 0.9 and "GPU" not in recipe.wall_time or "A100" in recipe.wall_time
    assert (RECIPE_DIR / f"{name}.json").is_file()
