"""Hostile input to training gives typed errors that name the bad value, before any heavy work."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.errors import ConfigError
from training.errors import CheckpointError, CorpusError, UnusableClipsError
from training.train import train
from training.train_config import TrainConfig


def _fake_corpus(root: Path, actors: int = 4) -> Path:
    for a in range(1, actors + 1):
        for e in (3, 4):
            p = root / f"Actor_{a:02d}" / f"03-01-{e:02d}-01-01-01-{a:02d}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")  # names only: these tests must fail before decoding
    return root


def test_a_missing_corpus_directory_raises_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        train(TrainConfig(corpus=tmp_path / "missing", out=tmp_path / "out"), progress=False)


def test_an_empty_corpus_directory_raises_corpus_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no RAVDESS"):
        train(TrainConfig(corpus=tmp_path / "empty", out=tmp_path / "out"), progress=False)


@pytest.mark.parametrize(
    "field, value",
    [("epochs", 0), ("epochs", float("nan")), ("max_steps", -5), ("max_steps", 1.5), ("batch_size", 0),
     ("learning_rate", 0.0), ("learning_rate", 5.0), ("window_s", 0.01), ("window_s", 120.0),
     ("test_actors", 0), ("val_actors", -1), ("class_set", "ravdess9"), ("warmup_ratio", 1.0),
     ("base", ""), ("corpus", ""), ("out", None)],
)
def test_bad_config_values_raise_config_error_naming_the_field(field, value, tmp_path):
    kwargs = dict(corpus=tmp_path, out=tmp_path / "out")
    kwargs[field] = value
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kwargs)


def test_an_unknown_base_name_raises_config_error_before_training(tmp_path):
    corpus = _fake_corpus(tmp_path / "c")
    with pytest.raises(ConfigError, match="no-such-preset"):
        train(TrainConfig(corpus=corpus, out=tmp_path / "out", base="no-such-preset"), progress=False)


def test_a_local_base_folder_without_a_model_raises_checkpoint_error(tmp_path):
    corpus = _fake_corpus(tmp_path / "c")
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(CheckpointError, match="not-a-model"):
        train(TrainConfig(corpus=corpus, out=tmp_path / "out", base=str(tmp_path / "not-a-model"),
                          max_steps=1), progress=False)


def test_more_held_out_actors_than_the_corpus_has_raises_config_error(tmp_path):
    corpus = _fake_corpus(tmp_path / "c", actors=3)
    with pytest.raises(ConfigError, match="only 3 actors"):
        train(TrainConfig(corpus=corpus, out=tmp_path / "out", test_actors=2, val_actors=1), progress=False)


def test_a_missing_split_manifest_raises_corpus_error(tmp_path):
    corpus = _fake_corpus(tmp_path / "c")
    with pytest.raises(CorpusError, match="no such split manifest"):
        train(TrainConfig(corpus=corpus, out=tmp_path / "out", manifest=tmp_path / "split.json"), progress=False)


def test_a_corpus_of_undecodable_clips_raises_a_typed_error_naming_the_files_and_the_reason(tmp_path):
    corpus = _fake_corpus(tmp_path / "c")  # a few undecodable clips are skipped (test_corpus_failures.py); all is fatal
    with pytest.raises(UnusableClipsError, match=r"no clip can be used.*03-01-0\d-01-01-01-0\d\.wav \(cannot decode"):
        train(TrainConfig(corpus=corpus, out=tmp_path / "out", max_steps=1), progress=False)


def test_an_output_path_that_is_a_file_raises_config_error(tmp_path):
    corpus = _fake_corpus(tmp_path / "c")
    (tmp_path / "out").write_text("x")
    with pytest.raises(ConfigError, match="out="):
        train(TrainConfig(corpus=corpus, out=tmp_path / "out"), progress=False)


# --- corpora, class sets, folds, recipes, evaluation --------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(layout="tess"), "layout="), (dict(layout=("ravdess", "crema-d")), "layout="),
     (dict(class_set="crema6"), "class_set='crema6' reads"), (dict(layout="crema-d"), "class_set='ravdess8' reads"),
     (dict(calm_as_neutral=True), "calm_as_neutral"), (dict(fold=5), "fold=5"), (dict(fold=-1), "fold=-1"),
     (dict(folds=1), "folds=1"), (dict(fold=0, manifest="m.json"), "give one"), (dict(precision="fp8"), "precision="),
     (dict(early_stopping_patience=2, val_actors=0), "early stopping needs validation"),
     (dict(eval_steps=0), "eval_steps="), (dict(save_steps=1.5), "save_steps=")],
)
def test_bad_corpus_fold_and_option_combinations_raise_config_error_naming_them(kwargs, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(corpus=tmp_path, out=tmp_path / "out", **kwargs)


def test_mixed_precision_without_a_gpu_raises_config_error_before_training(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    corpus = _fake_corpus(tmp_path / "c")
    with pytest.raises(ConfigError, match="precision='fp16'"):
        train(TrainConfig(corpus=corpus, out=tmp_path / "out", precision="fp16", max_steps=1), progress=False)


def test_a_corpus_without_clips_of_the_class_set_raises_corpus_error(tmp_path):
    root = tmp_path / "c" / "Actor_01"
    root.mkdir(parents=True)
    (root / "03-01-02-01-01-01-01.wav").write_bytes(b"")  # calm only: nothing left in ravdess7
    with pytest.raises(CorpusError, match="ravdess7"):
        train(TrainConfig(corpus=tmp_path / "c", out=tmp_path / "out", class_set="ravdess7"), progress=False)


def test_an_unknown_or_malformed_recipe_raises_config_error_naming_it(tmp_path):
    from training.training_recipes import TrainingRecipe, load_recipe

    with pytest.raises(ConfigError, match="'ravdess9'"):
        load_recipe("ravdess9")
    bad = tmp_path / "r.json"
    bad.write_text('{"train": {"base": "tiny", "learning_rat": 0.1}}')
    with pytest.raises(ConfigError, match="learning_rat"):
        load_recipe(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="malformed"):
        TrainingRecipe.from_json(bad)


def test_run_cv_refuses_a_pinned_fold_or_folds_outside_k(tmp_path):
    from training.cv import run_cv

    with pytest.raises(ConfigError, match="fold=1"):
        run_cv(TrainConfig(corpus=tmp_path, out=tmp_path / "o", fold=1), progress=False)
    with pytest.raises(ConfigError, match="only="):
        run_cv(TrainConfig(corpus=tmp_path, out=tmp_path / "o"), only=(7,), progress=False)


def test_cross_corpus_needs_both_corpora(tmp_path):
    from training.cv import run_cross_corpus

    with pytest.raises(ConfigError, match="one ravdess and one crema-d"):
        run_cross_corpus(TrainConfig(corpus=tmp_path, out=tmp_path / "o"), progress=False)


def test_evaluate_refuses_a_missing_onnx_file_a_bad_partition_and_a_missing_manifest(tiny_checkpoint, tmp_path):
    from training.evaluate import evaluate_checkpoint

    with pytest.raises(CorpusError, match="no such split manifest"):
        evaluate_checkpoint(tiny_checkpoint, manifest=tmp_path / "none.json")
    with pytest.raises(CorpusError, match="partition='dev'"):
        evaluate_checkpoint(tiny_checkpoint, manifest=tmp_path / "none.json", partition="dev")
    manifest = tmp_path / "m.json"
    manifest.write_text('{"root": "/", "clips": [{"path": "x.wav", "actor": 1, "label": "sad", "partition": "test"}]}')
    with pytest.raises(CheckpointError, match="no such ONNX file"):
        evaluate_checkpoint(tiny_checkpoint, manifest=manifest, onnx=tmp_path / "model.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="garbage.onnx: cannot load"):
        evaluate_checkpoint(tiny_checkpoint, manifest=manifest, onnx=garbage)
