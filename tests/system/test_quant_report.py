"""Every variant and preset measured on held-out clips of a trained model, and the quantization report (export/report.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from client.errors import ConfigError
from export.errors import ExportError
from export.quantize import QUANTIZATION_PRESETS


def _scores(path, held_out_clips):
    from training.evaluate import onnx_window_scorer, score_clips

    loaded, info = held_out_clips
    return score_clips(onnx_window_scorer(path, threads=1), loaded, labels=info.labels,
                       window_samples=info.window_samples, hop_samples=info.hop_samples or info.window_samples // 2)


@pytest.fixture(scope="module")
def fp32_scores(exported_trained, held_out_clips):
    return _scores(exported_trained / "fp32" / "model.onnx", held_out_clips)


#: The export's fallback for models whose conv encoder does not stand int8. On this model it is the closest to fp32
#: of all presets (max |Δp| 0.0014 over the held-out clips) yet flips two near ties (fp32 margins 0.0009 and 0.0012)
#: toward the true label, so agreement and accuracy are not its measure: drift and what flips are (test below).
NEAR_TIE_PRESETS = ("dynamic-int8-transformer",)


@pytest.mark.parametrize("preset", sorted(set(QUANTIZATION_PRESETS) - set(NEAR_TIE_PRESETS)))
def test_every_int8_preset_agrees_with_fp32_on_the_held_out_split(preset, exported_trained, held_out_clips, fp32_scores, tmp_path):
    from export.cpu_class import cpu_has_vnni
    from export.quantize import VNNI_ONLY_PRESETS, quantize_int8

    if preset in VNNI_ONLY_PRESETS and not cpu_has_vnni():
        pytest.skip(f"{preset} is for CPUs with VNNI or AMX, and this one has neither "
                    "(its drift on AVX2-only CPUs is tested under emulation in tests/system/test_export.py)")
    int8 = quantize_int8(exported_trained / "fp32" / "model.onnx", tmp_path / "int8.onnx", config=QUANTIZATION_PRESETS[preset])
    scores = _scores(int8, held_out_clips)
    assert len(scores.label_ids) >= 16
    agreement = float((scores.predictions == fp32_scores.predictions).mean())
    assert agreement >= 0.99, (preset, agreement)
    assert abs(scores.accuracy - fp32_scores.accuracy) <= 0.005, (preset, scores.accuracy, fp32_scores.accuracy)


@pytest.mark.parametrize("preset", NEAR_TIE_PRESETS)
def test_the_transformer_preset_stays_within_a_hundredth_of_fp32_and_flips_only_near_ties(preset, exported_trained,
                                                                                         held_out_clips, fp32_scores, tmp_path):
    from export.quantize import quantize_int8

    int8 = quantize_int8(exported_trained / "fp32" / "model.onnx", tmp_path / "int8.onnx", config=QUANTIZATION_PRESETS[preset])
    scores = _scores(int8, held_out_clips)
    drift = np.abs(scores.probabilities - fp32_scores.probabilities).max(axis=1)
    assert drift.max() <= 0.005, (preset, float(drift.max()))  # a tenth of the export's tolerance
    top2 = np.sort(fp32_scores.probabilities, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    flips = np.flatnonzero(scores.predictions != fp32_scores.predictions)
    # Only clips fp32 itself cannot tell apart (top-1/top-2 within 0.2 points) may flip, at most two of them.
    assert len(flips) <= 2 and (margin[flips] < 0.002).all(), (preset, flips, margin[flips], drift[flips])
    assert float((scores.predictions == fp32_scores.predictions).mean()) >= 0.95


def test_fp16_agrees_with_fp32_on_the_held_out_split_within_its_own_tolerance(exported_trained, held_out_clips, fp32_scores):
    from export.parity import ParityConfig
    from export.recipe import ExportRecord

    scores = _scores(exported_trained / "fp16" / "model.onnx", held_out_clips)
    assert float((scores.predictions == fp32_scores.predictions).mean()) >= 0.99
    assert abs(scores.accuracy - fp32_scores.accuracy) <= 0.005
    assert np.abs(scores.probabilities - fp32_scores.probabilities).max() <= ParityConfig().fp16_prob_atol
    recipe = ExportRecord.read(exported_trained / "fp16" / "recipe.json")
    assert recipe.parity["fp16_vs_fp32"]["tolerances"]["prob_atol"] == ParityConfig().fp16_prob_atol


def test_the_report_names_each_file_with_its_checksum_and_size(quant_report, exported_trained):
    from export.recipe import ExportRecord, sha256_file

    assert [line.variant for line in quant_report.lines] == ["fp32", "int8", "fp16"]
    fp32_size = (exported_trained / "fp32" / "model.onnx").stat().st_size
    for line in quant_report.lines:
        path = exported_trained / line.variant / "model.onnx"
        assert line.model_path == str(path)
        assert line.model_sha256 == sha256_file(path) == ExportRecord.read(path.with_name("recipe.json")).model_sha256
        assert line.size_bytes == path.stat().st_size
        assert line.size_vs_fp32 == pytest.approx(line.size_bytes / fp32_size)
        assert set(line.latency_ms) == {1, 8}
        assert all(lat["runs"] == 3 and 0 < lat["median"] <= lat["p95"] for lat in line.latency_ms.values())
    assert quant_report.line("int8").preset == "dynamic-int8-convmatmul"


def test_the_reports_accuracy_and_agreement_are_those_of_the_named_files(quant_report, held_out_clips, fp32_scores):
    from training.metrics import Metrics

    assert quant_report.labelled and quant_report.clips == len(held_out_clips[0])
    for line in quant_report.lines:
        scores = _scores(line.model_path, held_out_clips)
        metrics = Metrics.from_confusion(scores.confusion(), labels=scores.labels)
        assert line.accuracy == pytest.approx(scores.accuracy, abs=1e-12)
        assert line.weighted_f1 == pytest.approx(metrics.weighted_f1, abs=1e-12)
        assert line.label_agreement == pytest.approx(float((scores.predictions == fp32_scores.predictions).mean()))
        assert line.max_abs_prob_diff == pytest.approx(float(np.abs(scores.probabilities - fp32_scores.probabilities).max()), abs=1e-6)
    assert quant_report.line("fp32").label_agreement == 1.0 and quant_report.line("fp32").max_abs_prob_diff == 0.0


def test_the_report_files_hold_the_same_numbers_and_a_confusion_matrix_per_variant(quant_report, session_dir):
    out = session_dir / "quant-report"
    data = json.loads((out / "report.json").read_text())
    assert data == json.loads(json.dumps(quant_report.to_json()))
    markdown = (out / "report.md").read_text()
    for line in quant_report.lines:
        assert line.model_sha256 in markdown and f"{line.size_bytes / 1e6:.2f}" in markdown
        assert f"{line.label_agreement:.3f}" in markdown and f"{100 * line.accuracy:.1f}%" in markdown
        counts = json.loads((out / line.confusion["json"]).read_text())["counts"]
        assert int(np.sum(counts)) == quant_report.clips
        assert np.trace(counts) == round(line.accuracy * quant_report.clips)
        assert (out / line.confusion["counts"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_audio_folder_without_corpus_names_is_scored_unlabelled(exported_trained, trained_checkpoint, tmp_path):
    from export.report import ReportConfig, quantization_report
    from training.folds import read_manifest

    _, corpus, manifest = trained_checkpoint
    folder = tmp_path / "audio"
    folder.mkdir()
    for i, clip in enumerate(read_manifest(manifest, root=corpus).test[:3]):
        shutil.copyfile(clip.path, folder / f"upload_{i}.wav")
    report = quantization_report(exported_trained, audio_dir=folder, out_dir=tmp_path / "report",
                                 config=ReportConfig(variants=("fp32", "int8"), batch_sizes=(1,), warmup=0, repeat=1, threads=1))
    assert report.clips == 3 and not report.labelled and report.partition == ""
    assert all(line.accuracy is None and not line.confusion for line in report.lines)
    assert "unlabelled" in (tmp_path / "report" / "report.md").read_text()


def test_bad_report_requests_are_refused_by_name(exported_trained, tmp_path):
    from export.report import ReportConfig, quantization_report

    with pytest.raises(ConfigError, match="fp32 must be included"):
        ReportConfig(variants=("int8",))
    with pytest.raises(ConfigError, match="threads=0"):
        ReportConfig(threads=0)
    with pytest.raises(ConfigError, match="not both"):
        quantization_report(exported_trained, manifest=tmp_path / "m.json", audio_dir=tmp_path)
    only_int8 = tmp_path / "export"
    shutil.copytree(exported_trained / "int8", only_int8 / "int8")
    with pytest.raises(ExportError, match="no fp32 variant"):
        quantization_report(only_int8, audio_dir=tmp_path)
