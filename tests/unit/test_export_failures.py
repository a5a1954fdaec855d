"""Hostile input to export and repository writing: typed errors naming the input and the reason."""

from __future__ import annotations

import os
import shutil

import pytest

from client.errors import ConfigError
from export.errors import ExportError, ParityError
from training.errors import CheckpointError


def _export(checkpoint, out, **kwargs):
    from export.pipeline import export_checkpoint

    return export_checkpoint(checkpoint, out, progress=False, **kwargs)


def test_a_missing_checkpoint_directory_is_refused_by_name(tmp_path):
    with pytest.raises(CheckpointError, match="no-such-ckpt: no such checkpoint directory"):
        _export(tmp_path / "no-such-ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_directory_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="ser_checkpoint.json"):
        _export(tmp_path / "random", tmp_path / "out")


def test_a_checkpoint_without_weights_is_refused(tiny_checkpoint, tmp_path):
    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="cannot load model weights"):
        _export(broken, tmp_path / "out")


def test_a_file_given_as_checkpoint_is_refused(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\0")
    with pytest.raises(CheckpointError, match="is a file"):
        _export(tmp_path / "model.onnx", tmp_path / "out")


@pytest.mark.parametrize(
    "variants, message",
    [
        (("fp32", "int4"), "variant 'int4': unknown"),
        (("fp32", "bf16"), "variant 'bf16': unknown"),
        (("int8", "int8"), "each variant at most once"),
        ((), "choose at least one"),
    ],
)
def test_unknown_or_repeated_variants_are_refused_before_any_work(tmp_path, variants, message):
    with pytest.raises(ConfigError, match=message):
        _export(tmp_path / "not-even-read", tmp_path / "out", variants=variants)


def test_an_unknown_quantization_preset_is_refused_listing_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"preset 'avx9000'.*dynamic-int8-matmul"):
        _export(tmp_path / "ckpt", tmp_path / "out", preset="avx9000")
    with pytest.raises(ConfigError, match="has no int8"):
        _export(tmp_path / "ckpt", tmp_path / "out", variants=("fp32",), preset="dynamic-int8-matmul")


def test_bad_quantization_and_parity_options_are_refused():
    from export.parity import ParityConfig
    from export.quantize import QuantizationConfig

    with pytest.raises(ConfigError, match="op_types"):
        QuantizationConfig(op_types=("Softmax",))
    with pytest.raises(ConfigError, match="weight_type='int4'"):
        QuantizationConfig(weight_type="int4")
    with pytest.raises(ConfigError, match="conv_as_matmul=True needs 'MatMul'"):
        QuantizationConfig(op_types=("Conv",), conv_as_matmul=True)
    with pytest.raises(ConfigError, match="fuse_attention=True needs 'Attention'"):
        QuantizationConfig(fuse_attention=True)
    with pytest.raises(ConfigError, match="batch_sizes"):
        ParityConfig(batch_sizes=(0,))
    with pytest.raises(ConfigError, match="activation_scales='row' with 'Attention' quantized: QAttention"):
        QuantizationConfig(op_types=("MatMul", "Attention"), fuse_attention=True, activation_scales="row")
    with pytest.raises(ConfigError, match="activation_scales='channel'"):
        QuantizationConfig(activation_scales="channel")
    for name, bad in (("max_batch_size", 0), ("windows", 0), ("batch_atol", 0.0)):
        with pytest.raises(ConfigError, match=name):
            ParityConfig(**{name: bad})
    with pytest.raises(ConfigError, match="min_label_agreement"):
        ParityConfig(min_label_agreement=1.5)


def test_an_out_dir_that_is_a_file_or_under_a_file_is_refused(tiny_checkpoint, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(ExportError, match="blocker: output directory exists and is a file"):
        _export(tiny_checkpoint, blocker)
    with pytest.raises(ExportError, match="cannot create the output directory"):
        _export(tiny_checkpoint, blocker / "sub")


def test_a_variant_path_clashing_with_a_file_is_refused(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "int8").write_text("not a folder")
    with pytest.raises(ExportError, match=r"int8: exists and is not a directory"):
        _export(tiny_checkpoint, out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_an_unwritable_out_dir_is_refused(tiny_checkpoint, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(ExportError, match="not writable"):
            _export(tiny_checkpoint, out)
    finally:
        out.chmod(0o700)


def test_a_failed_export_lists_every_mismatch_and_keeps_the_previous_good_export(tiny_checkpoint, exported_tiny, tmp_path):
    from export.parity import ParityConfig
    from export.recipe import sha256_file

    out = tmp_path / "export"
    shutil.copytree(exported_tiny, out)
    before = {v: sha256_file(out / v / "model.onnx") for v in ("fp32", "int8")}
    impossible = ParityConfig(batch_sizes=(1, 3), logit_atol=1e-30)
    with pytest.raises(ParityError) as caught:
        _export(tiny_checkpoint, out, parity=impossible)
    assert len(caught.value.mismatches) == 4  # every window of every batch, not just the first
    assert "fp32 ONNX vs PyTorch: 4 mismatch(es)" in str(caught.value) and "num_samples=" in str(caught.value)
    assert {v: sha256_file(out / v / "model.onnx") for v in ("fp32", "int8")} == before
    assert sorted(p.name for p in out.iterdir()) == ["fp32", "int8"], "temporary folders left behind"


def test_int8_beyond_its_tolerance_is_a_parity_error(exported_tiny):
    from export.parity import ParityConfig, check_variant_agreement

    with pytest.raises(ParityError, match=r"int8 vs fp32.*max \|Δprobability\|"):
        check_variant_agreement(exported_tiny / "fp32" / "model.onnx", exported_tiny / "int8" / "model.onnx",
                                window_samples=16_000, config=ParityConfig(windows=4, prob_atol=1e-9),
                                what="int8 vs fp32")


# --- repository writer ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"runtime": "docker"}, "runtime='docker'"),
        ({"max_batch_size": 0}, "max_batch_size=0"),
        ({"preferred_batch_sizes": (16,)}, r"preferred_batch_sizes=\[16\]"),
        ({"instances": 0}, "instances=0"),
        ({"intra_op_threads": 0}, "intra_op_threads=0"),
    ],
)
def test_bad_repository_options_are_refused(exported_tiny, tmp_path, options, message):
    from export.repository import write_repository

    with pytest.raises(ConfigError, match=message):
        write_repository(exported_tiny, tmp_path / "repo", **options)
    assert not (tmp_path / "repo").exists()


def test_a_missing_export_or_variant_is_refused(exported_tiny, tmp_path):
    from export.repository import write_repository

    with pytest.raises(ExportError, match="no such export directory"):
        write_repository(tmp_path / "nothing", tmp_path / "repo")
    partial = tmp_path / "partial"
    shutil.copytree(exported_tiny / "fp32", partial / "fp32")
    with pytest.raises(ExportError, match=r"no exported 'int8' model.*available: \['fp32'\]"):
        write_repository(partial, tmp_path / "repo")


def test_a_model_file_that_is_not_the_one_its_recipe_describes_is_refused(exported_tiny, tmp_path):
    from export.repository import write_repository

    tampered = tmp_path / "tampered"
    shutil.copytree(exported_tiny, tampered)
    shutil.copyfile(tampered / "fp32" / "model.onnx", tampered / "int8" / "model.onnx")
    with pytest.raises(ExportError, match="does not match its recipe"):
        write_repository(tampered, tmp_path / "repo", variants=("int8",))


def test_a_repository_path_that_is_a_file_is_refused(exported_tiny, tmp_path):
    from export.repository import write_repository

    (tmp_path / "repo").write_text("a file")
    with pytest.raises(ExportError, match="repository path exists and is a file"):
        write_repository(exported_tiny, tmp_path / "repo")


def test_a_malformed_recipe_is_refused(tmp_path):
    from export.recipe import ExportRecord

    (tmp_path / "recipe.json").write_text("{not json")
    with pytest.raises(ExportError, match="not JSON"):
        ExportRecord.read(tmp_path / "recipe.json")
    (tmp_path / "recipe.json").write_text('{"variant": "int8"}')
    with pytest.raises(ConfigError, match="missing or malformed field"):
        ExportRecord.read(tmp_path / "recipe.json")


def test_a_graph_without_the_bundle_interface_is_refused_listing_every_deviation(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from export.onnx_export import check_graph

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16_000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16_000])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "foreign.onnx")
    with pytest.raises(ExportError) as caught:
        check_graph(tmp_path / "foreign.onnx", window_samples=16_000, num_labels=8)
    text = str(caught.value)
    assert "foreign.onnx: graph does not have the bundle's interface" in text
    assert "inputs are ['x'], expected ['waveform', 'num_samples']" in text and "outputs are ['y']" in text
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match="garbage.onnx"):
        check_graph(tmp_path / "garbage.onnx", window_samples=16_000)


def test_the_conv_rewrite_refuses_a_file_that_is_not_onnx_and_writes_nothing(tmp_path):
    from export.conv_rewrite import convs_to_matmul

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00not a protobuf at all" * 10)
    with pytest.raises(ExportError, match=r"model.onnx: not a readable ONNX model"):
        convs_to_matmul(bad, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_the_integer_weight_check_refuses_a_file_that_is_not_onnx_by_name(tmp_path):
    from export.quantize import integer_weights

    bad = tmp_path / "int8.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 20)
    with pytest.raises(ExportError, match=r"int8.onnx: not a readable ONNX model"):
        integer_weights(bad)
    with pytest.raises(ExportError, match=r"missing.onnx: not a readable ONNX model"):
        integer_weights(tmp_path / "missing.onnx")


def test_the_attention_fusion_refuses_a_graph_without_the_attention_metadata_and_writes_nothing(exported_tiny, tmp_path):
    """A graph not written by export_onnx does not say its head count: refused by name, not guessed."""
    import onnx

    from export.attention_fusion import fuse_attention
    from export.quantize import QUANTIZATION_PRESETS, quantize_int8

    model = onnx.load(str(exported_tiny / "fp32" / "model.onnx"))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ExportError, match=r"bare.onnx: no ser.num_attention_heads, ser.hidden_size metadata"):
        fuse_attention(bare, tmp_path / "fused.onnx")
    with pytest.raises(ExportError, match="ser.num_attention_heads"):
        quantize_int8(bare, tmp_path / "int8.onnx", config=QUANTIZATION_PRESETS["dynamic-int8-convmatmul-qattention"])  # it fuses attention
    assert not (tmp_path / "fused.onnx").exists() and not (tmp_path / "int8.onnx").exists()
