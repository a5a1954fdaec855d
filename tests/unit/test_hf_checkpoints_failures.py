"""Hostile input to the Hugging Face checkpoint import: typed one-line errors naming the input, before any heavy work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.errors import ConfigError
from export.pipeline import export_checkpoint
from training.errors import CheckpointError
from training.hf_import import inspect_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
UNFETCHABLE = "no-such-owner-ser/no-such-emotion-model"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_config(folder: Path, **changes) -> Path:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return folder


def test_a_hub_name_that_cannot_be_fetched_fails_fast_naming_it_and_suggesting_a_local_path(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        export_checkpoint(UNFETCHABLE, tmp_path / "out", window_s=1.0, progress=False)
    assert time.perf_counter() - t0 < 20, "no minutes of retries against an unreachable hub"
    message = str(err.value)
    assert message.startswith(UNFETCHABLE) and "local" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_ser_export_of_an_unfetchable_hub_name_is_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ser", "export", UNFETCHABLE, "--out", str(tmp_path / "o"), "--window-s", "1"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith(f"error: {UNFETCHABLE}"), proc.stderr


def test_a_hugging_face_checkpoint_needs_a_window_source(hf_checkpoints, tmp_path):
    with pytest.raises(ConfigError, match="--window-s"):
        export_checkpoint(hf_checkpoints["wav2vec2"], tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="one of them"):
        export_checkpoint(hf_checkpoints["wav2vec2"], tmp_path / "out", window_s=1.0, audio_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="window_s=0.01"):
        export_checkpoint(hf_checkpoints["wav2vec2"], tmp_path / "out", window_s=0.01, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no readable audio"):
        export_checkpoint(hf_checkpoints["wav2vec2"], tmp_path / "out", audio_dir=tmp_path / "empty", progress=False)


def test_a_bundle_checkpoint_refuses_a_window_option(tiny_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="fixes its window W"):
        export_checkpoint(tiny_checkpoint, tmp_path / "out", window_s=2.0, progress=False)


def test_a_checkpoint_without_preprocessor_config_is_refused_with_the_reason(hf_checkpoints, tmp_path):
    folder = _copy(hf_checkpoints["hubert"], tmp_path / "m")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match="no preprocessor_config.json: the sampling rate, normalisation"):
        inspect_checkpoint(folder)


def test_a_model_without_a_trained_head_is_refused(hf_checkpoints, tmp_path):
    folder = _edit_config(_copy(hf_checkpoints["wavlm"], tmp_path / "m"), architectures=["WavLMModel"])
    with pytest.raises(CheckpointError, match="no trained audio-classification head.*ser train --base"):
        inspect_checkpoint(folder)


@pytest.mark.parametrize("problem_type", ["multi_label_classification"])
def test_heads_other_than_single_label_classification_or_regression_are_refused(problem_type, hf_checkpoints, tmp_path):
    folder = _edit_config(_copy(hf_checkpoints["wav2vec2"], tmp_path / "m"), problem_type=problem_type)
    with pytest.raises(CheckpointError, match=f"problem_type '{problem_type}'"):
        inspect_checkpoint(folder)


def test_labels_that_do_not_name_each_output_once_are_refused(hf_checkpoints, tmp_path):
    folder = _edit_config(_copy(hf_checkpoints["wav2vec2"], tmp_path / "m"),
                          id2label={"0": "angry", "1": "angry", "2": "neutral", "3": "sad"})
    with pytest.raises(CheckpointError, match="id2label"):
        inspect_checkpoint(folder)


def test_a_spectrogram_model_is_refused_naming_what_is_served(tmp_path):
    from transformers import ASTConfig, ASTFeatureExtractor

    folder = tmp_path / "ast"
    ASTConfig(architectures=["ASTForAudioClassification"]).save_pretrained(str(folder))
    ASTFeatureExtractor().save_pretrained(str(folder))
    with pytest.raises(CheckpointError, match="does not read the raw waveform"):
        inspect_checkpoint(folder)


def test_a_folder_that_is_no_checkpoint_of_either_kind_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="ser_checkpoint.json.*config.json"):
        export_checkpoint(tmp_path, tmp_path / "out", progress=False)


def test_ser_train_with_an_unfetchable_hub_base_fails_fast_before_decoding(tmp_path):
    from training.train import train
    from training.train_config import TrainConfig

    for a in (1, 2, 3, 4):
        for e in (3, 4):
            p = tmp_path / "c" / f"Actor_{a:02d}" / f"03-01-{e:02d}-01-01-01-{a:02d}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")  # names only: the base must fail before any clip is decoded
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"^{UNFETCHABLE}: .*local"):
        train(TrainConfig(corpus=tmp_path / "c", out=tmp_path / "out", base=UNFETCHABLE, max_steps=1), progress=False)
    assert time.perf_counter() - t0 < 20
