"""Hugging Face audio classifiers of each family: export -> repository -> real local server -> client.

Served answers are compared with ``transformers.pipeline("audio-classification")`` on the same clips.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import HF_FAMILIES, HF_LABELS, build_tiny_hf_checkpoint

from client.errors import ConfigError
from client.triton_client import SerClient
from deploy.local_triton import LocalTriton
from export.pipeline import export_checkpoint
from export.repository import write_repository

SR = 16_000
W_S = 1.0
PIPELINE_ATOL = 1e-3


def _voice(seconds: float, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / SR) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _pipeline_scores(folder: Path, clip: np.ndarray) -> dict[str, float]:
    from transformers import pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = pipeline("audio-classification", model=str(folder), top_k=None, device="cpu")
        return {d["label"]: float(d["score"]) for d in pipe({"raw": clip, "sampling_rate": SR})}


@pytest.mark.parametrize("family", list(HF_FAMILIES))
def test_a_hugging_face_checkpoint_is_served_as_the_pipeline_answers(family, hf_checkpoints, tmp_path):
    folder = hf_checkpoints[family]
    _, _, normalize, mask = HF_FAMILIES[family]
    result = export_checkpoint(folder, tmp_path / "export", variants=("fp32", "int8"), window_s=W_S, progress=False)
    recipe = json.loads(result.variants["fp32"].recipe_path.read_text())
    extra = recipe["contract"]["extra"]
    assert recipe["contract"]["labels"] == list(HF_LABELS), "labels from id2label, in id order"
    assert (extra["hf_model_type"], extra["window_source"]) == (family, "--window-s 1")
    assert (extra["input_normalize"], extra["input_attention_mask"]) == (str(normalize).lower(), str(mask).lower())
    write_repository(result.out_dir, tmp_path / "repo", runtime="portable", variants=("fp32", "int8"))
    clips = {"short": _voice(0.6, 180.0, 1), "full": _voice(W_S, 140.0, 2)}
    paths = {}
    for name, y in clips.items():
        paths[name] = tmp_path / f"{name}.wav"
        sf.write(str(paths[name]), y, SR, subtype="FLOAT")
    with LocalTriton(tmp_path / "repo", startup_timeout_s=120, log_path=tmp_path / "triton.log") as server:
        with SerClient(server.grpc_url, model="ser_fp32", protocol="grpc") as client:
            assert client.contract.extra["hf_source"] == str(folder)
            served = {name: client.classify(p) for name, p in paths.items()}
        with SerClient(server.grpc_url, model="ser_int8", protocol="grpc") as client:
            served_int8 = client.classify(paths["short"])
    for name, y in clips.items():
        got = served[name]
        assert got.num_windows == 1
        # A model trained without attention masks hears a short clip followed by silence up to W (as in its padded
        # training batches); one given masks hears the clip alone.
        fed = y if mask or name == "full" else np.pad(y, (0, int(W_S * SR) - y.size))
        want = _pipeline_scores(folder, fed)
        assert got.label == max(want, key=want.get), (name, got.probabilities, want)
        worst = max(abs(got.probabilities[lab] - want[lab]) for lab in HF_LABELS)
        assert worst <= PIPELINE_ATOL, (family, name, worst)
    assert served_int8.label == served["short"].label
    assert max(abs(served_int8.probabilities[lab] - served["short"].probabilities[lab]) for lab in HF_LABELS) < 0.05


def test_without_attention_masks_a_short_clip_is_answered_as_the_clip_followed_by_silence(hf_checkpoints):
    """The consequence of serving fixed windows to a model trained without masks, measured (docs/corpora-and-checkpoints.md)."""
    import torch

    from export.onnx_export import load_classifier

    classifier, info = load_classifier(hf_checkpoints["wav2vec2"], window_s=W_S)
    y = _voice(0.6, 180.0, 1)
    x = np.zeros((1, info.window_samples), np.float32)
    x[0, : y.size] = y
    with torch.no_grad():
        probs = classifier(torch.from_numpy(x), torch.tensor([[y.size]]))[1].numpy()[0]
    alone = _pipeline_scores(hf_checkpoints["wav2vec2"], y)
    padded = _pipeline_scores(hf_checkpoints["wav2vec2"], x[0])
    assert max(abs(p - padded[lab]) for p, lab in zip(probs, info.labels, strict=True)) < 1e-5
    assert max(abs(p - alone[lab]) for p, lab in zip(probs, info.labels, strict=True)) > PIPELINE_ATOL


def test_the_window_can_come_from_the_durations_of_an_audio_sample(hf_checkpoints, tmp_path):
    durations = (1.2, 1.4, 1.6, 1.8, 2.1)
    for i, d in enumerate(durations):
        sf.write(str(tmp_path / f"clip{i}.wav"), _voice(d, 150.0, i), SR, subtype="PCM_16")
    result = export_checkpoint(hf_checkpoints["hubert"], tmp_path / "export", variants=("fp32",), audio_dir=tmp_path,
                               progress=False)
    contract = json.loads(result.variants["fp32"].recipe_path.read_text())["contract"]
    expected_s = np.ceil(np.quantile(durations, 0.9) / 0.5) * 0.5  # 90th percentile, rounded up to 0.5 s
    assert contract["window_samples"] == int(expected_s * SR) == 32_000
    assert "90th percentile of 5 clip durations" in contract["extra"]["window_source"]
    assert str(tmp_path.resolve()) in contract["extra"]["window_source"]


def test_ser_export_takes_a_hugging_face_folder_from_the_command_line(hf_checkpoints, tmp_path):
    import subprocess
    import sys

    repo_root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "ser", "export", str(hf_checkpoints["wavlm"]), "--out", str(tmp_path / "e"),
                           "--variants", "fp32", "--window-s", "1.5", "--repository", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=600, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr
    config = (tmp_path / "r" / "ser_fp32" / "config.pbtxt").read_text()
    assert "ser.hf_model_type" in config and "wavlm" in config and "ser.window_samples" in config and "24000" in config


VALUES = ("arousal", "dominance", "valence")


def test_a_regression_head_is_served_as_named_values_aggregated_like_probabilities(hf_checkpoints, tmp_path):
    import subprocess
    import sys

    folder = build_tiny_hf_checkpoint("wavlm", tmp_path / "adv", labels=VALUES, problem_type="regression")
    result = export_checkpoint(folder, tmp_path / "export", variants=("fp32", "int8"), window_s=W_S, progress=False)
    assert json.loads(result.variants["fp32"].recipe_path.read_text())["contract"]["extra"]["problem_type"] == "regression"
    write_repository(result.out_dir, tmp_path / "repo", runtime="portable", variants=("fp32", "int8"))
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    y = _voice(0.7, 170.0, 3)
    sf.write(str(short), y, SR, subtype="FLOAT")
    sf.write(str(long), _voice(2.6, 130.0, 4), SR, subtype="FLOAT")
    with LocalTriton(tmp_path / "repo", startup_timeout_s=120, log_path=tmp_path / "triton.log") as server:
        with SerClient(server.grpc_url, model="ser_fp32", protocol="grpc") as client:
            assert client.contract.regression
            one, many = client.classify(short), client.classify(long)
            with pytest.raises(ConfigError, match="regression head"):
                client.classify(short, top_k=1)
        proc = subprocess.run([sys.executable, "-m", "ser", "predict", str(short), str(long), "--url", server.grpc_url,
                               "--model", "ser_fp32", "--format", "text"], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[2])
        rows = subprocess.run([sys.executable, "-m", "ser", "predict", str(short), "--url", server.grpc_url,
                               "--model", "ser_int8", "--json"], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[2])
    want = _pipeline_scores(folder, y)  # the pipeline applies no function to a regression head
    assert set(one.values) == set(VALUES) and one.probabilities == {} and one.label == ""
    assert max(abs(one.values[k] - want[k]) for k in VALUES) <= PIPELINE_ATOL
    assert max(abs(v) for v in one.values.values()) > 0.05, "not all near zero: the comparison means something"
    assert many.num_windows > 1
    weights = many.window_num_samples.astype(np.float64)
    weighted = weights @ many.window_probabilities.astype(np.float64) / weights.sum()
    assert np.allclose([many.values[k] for k in VALUES], weighted, atol=1e-6)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith(str(short)) and all(f"{k}={one.values[k]:.3f}" in first for k in VALUES)
    assert rows.returncode == 0, rows.stderr
    int8 = json.loads(rows.stdout.splitlines()[0])["values"]
    assert max(abs(int8[k] - one.values[k]) for k in VALUES) < 0.05


@pytest.mark.parametrize("family", ["hubert", "data2vec-audio"])  # raw input without masks; normalised with masks
def test_training_starts_from_an_encoder_of_another_family_and_keeps_its_input_preparation(
        family, hf_checkpoints, synth_corpus_dir, tmp_path):
    import shutil

    import torch
    from transformers import AutoModel

    from training.model import CheckpointInfo, load_checkpoint
    from training.train import train
    from training.training_recipes import TEST

    base = tmp_path / "encoder"
    encoder = AutoModel.from_pretrained(str(hf_checkpoints[family]))  # no classification head: a base to fine-tune
    encoder.save_pretrained(str(base))
    shutil.copy(hf_checkpoints[family] / "preprocessor_config.json", base)
    result = train(TEST.config(corpus=synth_corpus_dir, out=tmp_path / "run", base=str(base), max_steps=3, window_s=1.0),
                   progress=False)
    info = CheckpointInfo.load(result.checkpoint)
    _, _, normalize, mask = HF_FAMILIES[family]
    assert (info.normalize, info.attention_mask, info.base) == (normalize, mask, str(base))
    model, _ = load_checkpoint(result.checkpoint)
    assert model.config.model_type == family and model.config.num_labels == len(result.labels)
    conv = "feature_extractor.conv_layers.0.conv.weight"  # frozen while fine-tuning a pretrained base
    trained = dict(model.named_parameters())[f"{model.base_model_prefix}.{conv}"]
    assert torch.equal(trained, dict(encoder.named_parameters())[conv])
    exported = export_checkpoint(result.checkpoint, tmp_path / "export", variants=("fp32",), progress=False)
    assert exported.variants["fp32"].parity.passed
