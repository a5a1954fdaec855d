"""Hostile input to training gives typed errors that name the bad value, before any heavy work."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.errors import AudioDecodeError, CheckpointError, ConfigError, CorpusError
from training.train import TrainConfig, train


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


def test_an_undecodable_clip_raises_an_audio_error_naming_the_file(tmp_path):
    corpus = _fake_corpus(tmp_path / "c")
    with pytest.raises(AudioDecodeError, match=r"03-01-0\d-01-01-01-0\d\.wav"):
        train(TrainConfig(corpus=corpus, out=tmp_path / "out", max_steps=1), progress=False)


def test_an_output_path_that_is_a_file_raises_config_error(tmp_path):
    corpus = _fake_corpus(tmp_path / "c")
    (tmp_path / "out").write_text("x")
    with pytest.raises(ConfigError, match="out="):
        train(TrainConfig(corpus=corpus, out=tmp_path / "out"), progress=False)
