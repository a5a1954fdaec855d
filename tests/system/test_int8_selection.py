"""Choosing the int8 preset per model, and the CPU classes it was verified on (export/int8_selection.py)."""

from __future__ import annotations

import json
import platform
import shutil

import pytest

from client.errors import ConfigError
from export.errors import ParityError

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-x86_64") is None or platform.machine() != "x86_64",
    reason="needs qemu-user's qemu-x86_64 on an x86-64 host (make test installs it when run as root)")


def _drift(fp32, name, tmp_path, window):
    from export.parity import ParityConfig, compare_variants
    from export.quantize import QUANTIZATION_PRESETS, quantize_int8

    path = quantize_int8(fp32, tmp_path / f"{name}.onnx", config=QUANTIZATION_PRESETS[name])
    return compare_variants(fp32, path, window_samples=window, config=ParityConfig(prob_atol=1.0)).max_abs_prob_diff


def test_the_first_preset_that_passes_is_kept_and_the_refused_ones_are_recorded_with_their_reason(exported_tiny, tmp_path):
    from export.cpu_class import cpu_class
    from export.int8_selection import choose_int8
    from export.parity import ParityConfig
    from export.quantize import QUANTIZATION_PRESETS
    from export.recipe import ExportRecord

    fp32 = exported_tiny / "fp32" / "model.onnx"
    window = ExportRecord.read(exported_tiny / "fp32" / "recipe.json").contract.window_samples
    # Two presets whose drift differs on this model; a tolerance between them refuses one and admits the other.
    a, b = "dynamic-int8-matmul-per-channel", "dynamic-int8-matmul-avx2"
    drift = {n: _drift(fp32, n, tmp_path, window) for n in (a, b)}
    worse, better = sorted(drift, key=drift.get, reverse=True)
    assert drift[worse] > drift[better] > 0, drift
    tolerance = (drift[worse] + drift[better]) / 2
    choice = choose_int8(fp32, tmp_path / "chosen.onnx", window_samples=window,
                         candidates=[(worse, QUANTIZATION_PRESETS[worse]), (better, QUANTIZATION_PRESETS[better])],
                         parity=ParityConfig(prob_atol=tolerance, min_label_agreement=0.0))
    assert choice.preset == better and choice.config == QUANTIZATION_PRESETS[better]
    assert [a.preset for a in choice.attempts] == [worse, better]
    refused = choice.attempts[0].to_json()
    assert not refused["passed"] and f"> {tolerance:g}" in refused["refused_because"]
    assert choice.attempts[1].to_json()["passed"] and choice.verified_classes == (cpu_class(),)
    assert choice.report.max_abs_prob_diff == pytest.approx(drift[better], abs=1e-6)


def test_a_named_preset_that_fails_is_an_error_not_a_silent_substitute(exported_tiny, tmp_path):
    from export.parity import ParityConfig

    strict = ParityConfig(prob_atol=1e-7)  # no int8 model is this close to fp32
    out = tmp_path / "export"
    with pytest.raises(ParityError, match=r"int8 vs fp32 ONNX on \w+: .*max \|Δprobability\|") as info:
        _export_with(exported_tiny, out, "dynamic-int8-compact", strict)
    assert "preset " not in str(info.value)  # one preset asked for, one preset's mismatches: no fallback list
    assert not (out / "int8").exists()  # nothing half-written


def _export_with(exported_tiny, out, preset, parity):
    from export.pipeline import export_checkpoint
    from export.recipe import ExportRecord

    checkpoint = ExportRecord.read(exported_tiny / "fp32" / "recipe.json").source_checkpoint
    return export_checkpoint(checkpoint, out, preset=preset, parity=parity, progress=False)


def test_when_every_preset_fails_the_error_lists_each_one_and_why(exported_tiny, tmp_path):
    from export.parity import ParityConfig
    from export.quantize import INT8_PRESET_ORDER

    with pytest.raises(ParityError) as info:
        _export_with(exported_tiny, tmp_path / "export", None, ParityConfig(prob_atol=1e-7))
    message = str(info.value)
    assert all(f"preset {name} refused on " in message for name in INT8_PRESET_ORDER[:2]), message


def test_the_recipe_and_the_served_config_carry_the_cpu_classes_the_int8_model_was_verified_on(exported_tiny, portable_repository):
    from export.cpu_class import VERIFIED_CLASSES_PARAMETER, cpu_class
    from export.quantize import INT8_PRESET_ORDER
    from export.recipe import ExportRecord
    from export.repository import read_model_config

    recipe = ExportRecord.read(exported_tiny / "int8" / "recipe.json")
    assert recipe.contract.extra["verified_cpu_classes"] == cpu_class()
    selection = recipe.options["preset_selection"]
    assert selection[-1]["preset"] == recipe.preset and selection[-1]["passed"]
    assert recipe.preset == INT8_PRESET_ORDER[0], selection  # the default passes on the test model
    # What the rewrites did is recorded (how much depends on the family: docs/corpora-and-checkpoints.md).
    rewrites = recipe.options["graph_rewrites"]
    assert set(rewrites) == {"convs_as_matmul", "attention_fused"} and rewrites["convs_as_matmul"] >= 1, rewrites
    config = read_model_config(portable_repository / "ser_int8")
    assert config.parameters[VERIFIED_CLASSES_PARAMETER].string_value == cpu_class()
    assert (portable_repository / "ser_int8" / "1" / "cpu_class.py").is_file()
    assert VERIFIED_CLASSES_PARAMETER not in read_model_config(portable_repository / "ser_fp32").parameters


def test_the_served_model_warns_once_on_a_cpu_class_it_was_not_verified_on():
    from export.cpu_class import unverified_warning

    epyc = frozenset({"sse2", "avx", "avx2", "fma"})
    xeon = frozenset({"avx2", "avx512f", "avx512_vnni"})
    assert unverified_warning("ser_int8", "vnni", xeon) is None
    assert unverified_warning("ser_int8", "vnni,avx2", epyc) is None
    assert unverified_warning("ser_int8", "", epyc) is None  # nothing recorded (fp32, older exports): no claim
    warning = unverified_warning("ser_int8", "vnni", epyc)
    assert warning and "'ser_int8'" in warning and "vnni" in warning and "'avx2'" in warning and "\n" not in warning


def test_cpu_classes_that_cannot_be_checked_here_are_refused_with_the_reason(exported_tiny, tmp_path):
    from export.cpu_class import cpu_class
    from export.isa_check import compare_on_class, emulator_command
    from export.pipeline import ExportConfig

    with pytest.raises(ConfigError, match="'arm'"):
        emulator_command("arm")
    with pytest.raises(ConfigError, match="concerns the int8 variant"):
        ExportConfig(variants=("fp32",), verify_cpu_classes=("avx2",))
    other = "amx" if cpu_class() != "amx" else "vnni"
    fp32 = exported_tiny / "fp32" / "model.onnx"
    with pytest.raises(ConfigError, match=f"{other}.*cannot be emulated"):
        compare_on_class(fp32, exported_tiny / "int8" / "model.onnx", window_samples=16_000, target=other)


@needs_qemu
def test_ser_repository_verifies_the_int8_model_on_emulated_avx2_and_records_it(exported_tiny, tmp_path):
    from export.cpu_class import VERIFIED_CLASSES_PARAMETER, cpu_class
    from export.repository import read_model_config, write_repository

    written = write_repository(exported_tiny, tmp_path / "repo", variants=("int8",), verify_cpu_classes=("avx2",))
    classes = read_model_config(written[0]).parameters[VERIFIED_CLASSES_PARAMETER].string_value.split(",")
    assert classes == list(dict.fromkeys([cpu_class(), "avx2"]))
    recipe = json.loads((written[0] / "recipe.json").read_text())
    assert recipe["contract"]["extra"]["verified_cpu_classes"] == cpu_class()  # provenance stays as exported


def test_the_real_server_logs_one_warning_when_an_int8_model_runs_on_a_class_it_was_not_verified_on(exported_tiny, tmp_path):
    from deploy.local_triton import LocalTriton
    from export.cpu_class import CPU_CLASSES, VERIFIED_CLASSES_PARAMETER, cpu_class
    from export.repository import read_model_config, write_config, write_repository

    elsewhere = next(c for c in CPU_CLASSES if c != cpu_class())
    model_dir = write_repository(exported_tiny, tmp_path / "repo", variants=("int8",))[0]
    config = read_model_config(model_dir)
    config.parameters[VERIFIED_CLASSES_PARAMETER].string_value = elsewhere
    write_config(config, model_dir / "config.pbtxt")
    log = tmp_path / "triton.log"
    with LocalTriton(tmp_path / "repo", log_path=log, startup_timeout_s=120):
        pass
    warnings = [line for line in log.read_text().splitlines() if "was verified on CPU class" in line]
    assert len(warnings) == 1, log.read_text()[-3000:]
    assert f"'{cpu_class()}'" in warnings[0] and elsewhere in warnings[0] and "'ser_int8'" in warnings[0]
