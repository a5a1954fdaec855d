"""ONNX export, parity, int8 quantization and recipes (export/)."""

from __future__ import annotations

import json
import platform
import shutil
from collections import Counter

import numpy as np
import pytest

from client.contract import INPUT_NAMES, OUTPUT_NAMES

W = 16_000  # tiny_checkpoint's window


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_fp32_onnx_matches_pytorch_on_full_and_padded_windows(exported_tiny, tiny_checkpoint):
    from export.onnx_export import load_classifier
    from export.parity import ParityConfig, check_onnx_parity

    classifier, info = load_classifier(tiny_checkpoint)
    report = check_onnx_parity(
        classifier, exported_tiny / "fp32" / "model.onnx", window_samples=info.window_samples,
        config=ParityConfig(batch_sizes=(1, 2, 5), seed=11),
    )
    assert report.max_abs_logit_diff <= 1e-4
    assert report.windows == 8 and report.min_num_samples < W // 2  # padded windows were compared


def test_fp32_onnx_matches_pytorch_for_explicit_lengths_down_to_a_tenth_of_a_window(exported_tiny, tiny_checkpoint):
    import torch

    from export.onnx_export import load_classifier

    classifier, _ = load_classifier(tiny_checkpoint)
    rng = np.random.default_rng(3)
    lengths = np.array([[W], [W - 1], [12_345], [8_000], [1_600]], dtype=np.int64)
    x = (0.1 * rng.standard_normal((5, W))).astype(np.float32)
    x[np.arange(W)[None, :] >= lengths] = 0.0
    with torch.no_grad():
        ref = classifier(torch.from_numpy(x), torch.from_numpy(lengths))[0].numpy()
    got = _session(exported_tiny / "fp32" / "model.onnx").run(["logits"], {"waveform": x, "num_samples": lengths})[0]
    assert np.abs(got - ref).max() <= 1e-4


def test_attention_is_exported_eager_without_the_sdpa_nan_guard_and_the_model_is_left_as_it_was(tiny_checkpoint, tmp_path):
    import onnx

    from export.onnx_export import OnnxExportConfig, export_onnx, load_classifier

    classifier, info = load_classifier(tiny_checkpoint)
    trained_with = classifier.model.config._attn_implementation
    assert trained_with == "sdpa"  # transformers' default: what the guard is about
    export_onnx(classifier, tmp_path / "eager.onnx", window_samples=info.window_samples)
    assert classifier.model.config._attn_implementation == trained_with
    export_onnx(classifier, tmp_path / "sdpa.onnx", window_samples=info.window_samples,
                config=OnnxExportConfig(eager_attention=False))
    ops = {name: Counter(n.op_type for n in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node) for name in ("eager", "sdpa")}
    layers = classifier.model.config.num_hidden_layers
    # One IsNaN in both: the graph's own guard on the waveform (a NaN/Inf window answers NaN, training/model.py).
    assert ops["sdpa"]["IsNaN"] == layers + 1 and ops["eager"]["IsNaN"] == 1
    assert ops["eager"]["Softmax"] == ops["sdpa"]["Softmax"]
    x = (0.1 * np.random.default_rng(4).standard_normal((2, W))).astype(np.float32)
    n = np.array([[W], [W // 3]], dtype=np.int64)
    x[1, W // 3:] = 0.0
    eager, sdpa = (_session(tmp_path / f"{name}.onnx").run(["logits"], {"waveform": x, "num_samples": n})[0] for name in ("eager", "sdpa"))
    assert np.abs(eager - sdpa).max() <= 1e-5


def test_exported_graph_has_exactly_the_named_tensors_and_only_a_dynamic_batch(exported_tiny):
    from export.onnx_export import read_signature

    for variant in ("fp32", "int8"):
        sig = read_signature(exported_tiny / variant / "model.onnx")
        assert tuple(sig.inputs) == INPUT_NAMES and tuple(sig.outputs) == OUTPUT_NAMES
        assert {n: (s.data_type, s.shape) for n, s in {**sig.inputs, **sig.outputs}.items()} == {
            "waveform": ("TYPE_FP32", (-1, W)),
            "num_samples": ("TYPE_INT64", (-1, 1)),
            "logits": ("TYPE_FP32", (-1, 8)),
            "probabilities": ("TYPE_FP32", (-1, 8)),
        }
        session = _session(exported_tiny / variant / "model.onnx")
        for batch in (1, 5):
            x = np.zeros((batch, W), dtype=np.float32)
            x[:, :800] = np.sin(np.arange(800) / 7.0)
            logits, probs = session.run(None, {"waveform": x, "num_samples": np.full((batch, 1), 800, np.int64)})
            assert logits.shape == probs.shape == (batch, 8)
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_models_are_single_files_with_no_external_data(exported_tiny):
    import onnx

    for variant in ("fp32", "int8"):
        folder = exported_tiny / variant
        assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "recipe.json"]
        model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        assert not [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert not [p for p in exported_tiny.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_int8_is_smaller_and_quantizes_matmuls_per_row_but_never_uses_conv_integer(exported_tiny):
    import onnx

    fp32, int8 = exported_tiny / "fp32" / "model.onnx", exported_tiny / "int8" / "model.onnx"
    assert int8.stat().st_size < 0.8 * fp32.stat().st_size
    ops = Counter(n.op_type for n in onnx.load(str(int8)).graph.node)
    # Per-row activation scales (batch-invariant): attention stays unfused (QAttention takes one scale per tensor)
    # and no per-tensor DynamicQuantizeLinear is left; the grouped positional conv stays Conv.
    assert ops["MatMulInteger"] >= 10 and ops["QAttention"] == 0 and ops["DynamicQuantizeLinear"] == 0
    assert ops["ReduceMax"] == ops["ReduceMin"] >= 10 and ops["ConvInteger"] == 0 and ops["Conv"] == 1


def test_int8_probabilities_stay_close_to_fp32_and_labels_flip_only_on_near_ties(exported_tiny):
    """Untrained tiny: probabilities are near uniform, so top-1 labels are near ties.

    If every probability moves by at most ε, a label can only flip where fp32's
    top-1/top-2 margin is below 2ε. So on this model the meaningful int8 check is
    max |Δp| (≤ 1e-3; measured ~1e-4) plus "no flip outside a 2·max|Δp| margin";
    the label-agreement figure itself needs a trained model (next test).
    """
    from export.parity import ParityConfig, check_variant_agreement, make_parity_batches

    fp32, int8 = exported_tiny / "fp32" / "model.onnx", exported_tiny / "int8" / "model.onnx"
    config = ParityConfig(windows=32, seed=7, prob_atol=1e-3, min_label_agreement=1.0)
    report = check_variant_agreement(fp32, int8, window_samples=W, config=config)
    assert report.windows == 32 and report.max_abs_prob_diff <= 1e-3
    ref_s, q_s = _session(fp32), _session(int8)
    for x, n in make_parity_batches(W, batch_sizes=(8, 8, 8, 8), seed=7):
        ref = ref_s.run(["probabilities"], {"waveform": x, "num_samples": n})[0]
        got = q_s.run(["probabilities"], {"waveform": x, "num_samples": n})[0]
        top2 = np.sort(ref, axis=1)[:, -2:]
        flipped = ref.argmax(1) != got.argmax(1)
        assert (top2[flipped, 1] - top2[flipped, 0] < 2 * report.max_abs_prob_diff).all()


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_held_out_clips_of_a_trained_model(trained_checkpoint, session_dir):
    from client.audio import load_audio, make_windows
    from export.parity import ParityConfig, check_variant_agreement
    from export.pipeline import export_checkpoint
    from training.folds import read_manifest
    from training.model import CheckpointInfo

    checkpoint, corpus, manifest = trained_checkpoint
    result = export_checkpoint(checkpoint, session_dir / "export-trained", progress=False)
    info = CheckpointInfo.load(checkpoint)
    held_out = read_manifest(manifest, root=corpus).test
    assert len(held_out) >= 16
    hop = info.contract().hop_samples
    windows = [make_windows(load_audio(c.path), window_samples=info.window_samples, hop_samples=hop)
               for c in held_out]
    waves = np.concatenate([w.waveforms for w in windows])
    counts = np.concatenate([w.num_samples for w in windows]).reshape(-1, 1)
    batches = [(waves[i:i + 8], counts[i:i + 8]) for i in range(0, len(waves), 8)]
    report = check_variant_agreement(
        result.out_dir / "fp32" / "model.onnx", result.out_dir / "int8" / "model.onnx",
        window_samples=info.window_samples, batches=batches,
        config=ParityConfig(prob_atol=0.05, min_label_agreement=0.95),
    )
    assert report.label_agreement >= 0.95, report  # raw agreement: no near-tie excuse
    assert report.max_abs_prob_diff <= 0.05


def test_recipe_round_trips_and_names_the_right_checksums(exported_tiny, tiny_checkpoint, tmp_path):
    from client.contract import ModelContract
    from export.cpu_class import cpu_class
    from export.recipe import ExportRecord, sha256_file

    for variant in ("fp32", "int8"):
        path = exported_tiny / variant / "recipe.json"
        recipe = ExportRecord.read(path)
        assert recipe.variant == variant
        assert recipe.model_sha256 == sha256_file(exported_tiny / variant / "model.onnx")
        assert recipe.source_sha256 == sha256_file(tiny_checkpoint / "model.safetensors")
        assert recipe.source_checkpoint == str(tiny_checkpoint.resolve())
        assert set(recipe.versions) == {"torch", "transformers", "onnx", "onnxruntime", "opset"}
        extra = {"verified_cpu_classes": cpu_class()} if variant == "int8" else {}
        assert recipe.contract == ModelContract(labels=recipe.contract.labels, window_samples=W, hop_samples=8_000,
                                                variant=variant, source=tiny_checkpoint.name, extra=extra)
        assert all(report["passed"] for report in recipe.parity.values())
        assert ExportRecord.read(recipe.write(tmp_path / f"{variant}.json")) == recipe
        assert ExportRecord.from_json(json.loads(path.read_text())) == recipe
    int8 = ExportRecord.read(exported_tiny / "int8" / "recipe.json")
    assert int8.preset == "dynamic-int8-convmatmul" and int8.options["quantization"]["op_types"] == ["MatMul"]
    assert int8.options["quantization"]["activation_scales"] == "row"
    assert int8.options["quantization"]["conv_weight_storage"] == "int8" and "preset_evidence" not in int8.options
    assert int8.options["preset_selection"] == [{**int8.options["preset_selection"][0], "preset": int8.preset, "passed": True}]
    assert int8.options["reference_sha256"] == ExportRecord.read(exported_tiny / "fp32" / "recipe.json").model_sha256
    assert set(int8.parity) == {"int8_vs_fp32", "fp32_vs_pytorch"}
    # Every variant was checked alone and batched (the fp32 file against itself).
    fp32_batched = ExportRecord.read(exported_tiny / "fp32" / "recipe.json").parity["fp32_batch_invariance"]
    assert fp32_batched["batch_sizes"] == [1, 8] and fp32_batched["windows"] == 320
    assert int8.parity["int8_vs_fp32"]["max_batch_dependence"] <= 1e-5


def test_re_export_replaces_stale_files_and_int8_only_keeps_fp32_out(tiny_checkpoint, tmp_path):
    from export.pipeline import export_checkpoint

    out = tmp_path / "export"
    (out / "int8").mkdir(parents=True)
    (out / "int8" / "stale.txt").write_text("from an older export")
    (out / "fp32").mkdir()
    (out / "fp32" / "keep.txt").write_text("not requested, not touched")
    result = export_checkpoint(tiny_checkpoint, out, variants=("int8",), progress=False)
    assert result.fp32_reference_only and list(result.variants) == ["int8"]
    assert sorted(p.name for p in (out / "int8").iterdir()) == ["model.onnx", "recipe.json"]
    assert (out / "fp32" / "keep.txt").is_file() and not (out / "fp32" / "model.onnx").exists()
    assert sorted(p.name for p in out.iterdir()) == ["fp32", "int8"]


def test_quantization_presets_resolve_to_configs_and_custom_configs_are_named_custom():
    from export.quantize import (
        DEFAULT_PRESET,
        QUANTIZATION_PRESETS,
        QuantizationConfig,
        resolve_preset,
    )

    name, config = resolve_preset()
    assert name == DEFAULT_PRESET and config.op_types == ("MatMul",) and config.weight_type == "qint8"
    assert config.per_channel and config.conv_as_matmul and not config.fuse_attention and config.reduce_range
    assert config.activation_scales == "row"
    assert all(isinstance(c, QuantizationConfig) for c in QUANTIZATION_PRESETS.values())
    from export.quantize import PRESET_EVIDENCE

    assert set(PRESET_EVIDENCE) == set(QUANTIZATION_PRESETS)  # every preset says why it exists
    assert resolve_preset(config=QuantizationConfig(per_channel=True))[0] == "custom"
    assert QuantizationConfig.from_json(config.to_json()) == config


def test_default_int8_weights_are_exact_on_avx2_cpus_and_the_vnni_preset_is_marked_otherwise(exported_tiny, tmp_path):
    """AVX2-only CPUs sum two u8*s8 products into int16 (vpmaddubsw): |w| <= 64 cannot saturate, 127 can.

    Full 8-bit per-channel weights measured max |dp| 0.062 and a label flip on an AVX2-only CI host
    (and under ``qemu-x86_64 -cpu Haswell``) where a VNNI host saw 0.008.
    """
    from export.quantize import (
        AVX2_SAFE_S8_WEIGHT,
        QUANTIZATION_PRESETS,
        integer_weights,
        quantize_int8,
    )
    from export.recipe import ExportRecord

    assert 2 * 255 * AVX2_SAFE_S8_WEIGHT <= 2**15 - 1 < 2 * 255 * (AVX2_SAFE_S8_WEIGHT + 1)
    default = integer_weights(exported_tiny / "int8" / "model.onnx")
    assert default.gemms >= 10 and 32 < default.s8_max_abs <= AVX2_SAFE_S8_WEIGHT and default.avx2_exact
    assert ExportRecord.read(exported_tiny / "int8" / "recipe.json").options["integer_weights"] == default.to_json()

    fp32 = exported_tiny / "fp32" / "model.onnx"
    vnni = integer_weights(quantize_int8(fp32, tmp_path / "vnni.onnx",
                                         config=QUANTIZATION_PRESETS["dynamic-int8-convmatmul-vnni"]))
    assert vnni.gemms == default.gemms and vnni.s8_max_abs == 127 and not vnni.avx2_exact
    u8 = integer_weights(quantize_int8(fp32, tmp_path / "u8.onnx", config=QUANTIZATION_PRESETS["dynamic-int8-matmul-avx2"]))
    assert u8.s8_max_abs == 0 and u8.u8_weights == u8.gemms > 0 and u8.avx2_exact


def test_vnni_is_read_from_the_cpu_flags_and_a_host_without_them_counts_as_saturating(tmp_path):
    from export.cpu_class import cpu_class, cpu_flags, cpu_has_vnni
    from export.quantize import QUANTIZATION_PRESETS, VNNI_ONLY_PRESETS

    epyc = tmp_path / "epyc"
    epyc.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n")
    xeon = tmp_path / "xeon"
    xeon.write_text("processor\t: 0\nflags\t\t: avx2 avx512f avx512_vnni amx_int8\n")
    alder = tmp_path / "alder"
    alder.write_text("flags\t: avx2 avx_vnni\n")
    assert cpu_flags(epyc) == {"fpu", "sse2", "avx", "avx2", "fma"} and not cpu_has_vnni(cpu_flags(epyc))
    assert cpu_has_vnni(cpu_flags(xeon)) and cpu_has_vnni(cpu_flags(alder))
    assert [cpu_class(cpu_flags(f)) for f in (epyc, xeon, alder)] == ["avx2", "amx", "vnni"]
    assert cpu_class(frozenset({"neon", "asimd"})) == "other"
    assert cpu_flags(tmp_path / "absent") == frozenset() and not cpu_has_vnni(frozenset())
    assert set(VNNI_ONLY_PRESETS) <= set(QUANTIZATION_PRESETS)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None or platform.machine() != "x86_64",
                    reason="needs qemu-user's qemu-x86_64 on an x86-64 host (make test installs it when run as root)")
def test_the_default_int8_model_keeps_its_agreement_on_an_emulated_avx2_only_cpu(exported_trained, tmp_path):
    """ONNX Runtime picks its int8 GEMM by CPU: ``qemu-x86_64 -cpu Haswell`` reports AVX2 without VNNI.

    There, full 8-bit s8 weights saturate (the -vnni preset: max |dp| 0.062 and a flipped label on
    the export's own seeded batches, as on the AVX2-only CI host that failed), 7-bit ones cannot.
    Both go through the check ``ser repository --verify-cpu-class avx2`` runs (only the candidate
    under qemu, on the mixed batches; fp32 and batch dependence natively).
    """
    from export.isa_check import compare_on_class
    from export.parity import ParityConfig
    from export.quantize import QUANTIZATION_PRESETS, quantize_int8
    from export.recipe import ExportRecord

    fp32, default = exported_trained / "fp32" / "model.onnx", exported_trained / "int8" / "model.onnx"
    vnni = quantize_int8(fp32, tmp_path / "vnni.onnx", config=QUANTIZATION_PRESETS["dynamic-int8-convmatmul-vnni"])
    window = ExportRecord.read(exported_trained / "int8" / "recipe.json").contract.window_samples
    got = {name: compare_on_class(fp32, path, window_samples=window, target="avx2", config=ParityConfig())
           for name, path in (("default", default), ("vnni", vnni))}
    tolerance = ParityConfig().prob_atol  # what the export itself demands of int8
    assert got["default"].max_abs_prob_diff <= tolerance and got["default"].label_agreement == 1.0, got
    # The emulation really took the AVX2 path: the full-range weights, closer to fp32 where nothing saturates
    # (0.008 vs 0.019 on a VNNI host), are the ones that drift here.
    assert got["vnni"].max_abs_prob_diff > 2 * got["default"].max_abs_prob_diff, got


def test_fp16_keeps_fp32_inputs_outputs_and_normalisation_and_halves_the_weights(exported_trained):
    import onnx

    from export.onnx_export import read_signature

    fp32, fp16 = exported_trained / "fp32" / "model.onnx", exported_trained / "fp16" / "model.onnx"
    sig = read_signature(fp16)
    assert {n: s.data_type for n, s in {**sig.inputs, **sig.outputs}.items()} == {
        "waveform": "TYPE_FP32", "num_samples": "TYPE_INT64", "logits": "TYPE_FP32", "probabilities": "TYPE_FP32"}
    assert fp16.stat().st_size < 0.7 * fp32.stat().st_size
    graph = onnx.load(str(fp16)).graph
    dtypes = {t.name: t.data_type for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    matmul_weights = [n.input[1] for n in graph.node if n.op_type == "MatMul" and n.input[1] in dtypes]
    assert matmul_weights and all(dtypes[w] == onnx.TensorProto.FLOAT16 for w in matmul_weights)
    for node in graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            x = producers.get(node.input[0])
            assert x is not None and x.op_type == "Cast" and x.attribute[0].i == onnx.TensorProto.FLOAT, node.name
            assert all(dtypes.get(i, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for i in node.input[1:])


def test_fp16_matches_fp32_on_seeded_windows_within_its_own_tolerance_and_its_recipe_round_trips(exported_trained, tmp_path):
    from export.fp16 import Fp16Config
    from export.parity import ParityConfig, check_variant_agreement
    from export.recipe import ExportRecord, sha256_file

    recipe = ExportRecord.read(exported_trained / "fp16" / "recipe.json")
    config = ParityConfig(batch_sizes=(1, 8), prob_atol=ParityConfig().fp16_prob_atol)
    report = check_variant_agreement(exported_trained / "fp32" / "model.onnx", exported_trained / "fp16" / "model.onnx",
                                     window_samples=recipe.contract.window_samples, config=config)
    assert report.max_abs_prob_diff <= 0.01 and report.label_agreement >= 0.95
    assert recipe.variant == "fp16" and recipe.preset is None and recipe.contract.variant == "fp16"
    assert recipe.model_sha256 == sha256_file(exported_trained / "fp16" / "model.onnx")
    assert Fp16Config.from_json(recipe.options["fp16"]) == Fp16Config()
    assert recipe.options["converter"].startswith("onnxconverter-common")
    assert recipe.options["reference_sha256"] == ExportRecord.read(exported_trained / "fp32" / "recipe.json").model_sha256
    assert recipe.parity["fp16_vs_fp32"]["passed"] and ExportRecord.read(recipe.write(tmp_path / "r.json")) == recipe


def test_the_default_compact_preset_stores_conv_weights_int8_that_onnx_runtime_folds_back_to_fp32(exported_tiny, tmp_path):
    import onnx
    import onnxruntime as ort

    from export.quantize import QUANTIZATION_PRESETS, quantize_int8

    path = quantize_int8(exported_tiny / "fp32" / "model.onnx", tmp_path / "compact.onnx",
                         config=QUANTIZATION_PRESETS["dynamic-int8-compact"])
    default = quantize_int8(exported_tiny / "fp32" / "model.onnx", tmp_path / "matmul.onnx",
                            config=QUANTIZATION_PRESETS["dynamic-int8-matmul"])
    assert path.stat().st_size < default.stat().st_size
    graph = onnx.load(str(path)).graph
    dtypes = {t.name: t.data_type for t in graph.initializer}
    producers = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(c.input[1] not in dtypes and producers[c.input[1]] == "Mul" for c in convs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "folded.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    folded = onnx.load(str(tmp_path / "folded.onnx")).graph
    assert not [n.name for n in folded.node if n.name.endswith(("__to_fp32", "__rescale"))]  # computed once, at load
    x = np.zeros((2, W), np.float32)
    x[:, :4000] = np.sin(np.arange(4000) / 9.0)
    feeds = {"waveform": x, "num_samples": np.array([[4000], [4000]], np.int64)}
    np.testing.assert_allclose(session.run(["probabilities"], feeds)[0], _session(default).run(["probabilities"], feeds)[0], atol=2e-3)


def _conv_graph(path, *, window: int = 400):
    """A graph shaped like wav2vec2's feature encoder head.

    A 1-channel conv (kept), then k=3/s=2 with bias and k=2/s=2 without, plus a grouped
    conv that must be left alone.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w0, b0 = rng.standard_normal((12, 1, 10)).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    w1, b1 = rng.standard_normal((6, 12, 3)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    w2 = rng.standard_normal((6, 6, 2)).astype(np.float32)
    w3 = rng.standard_normal((6, 3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["h0"], strides=[5], name="first"),
        helper.make_node("Conv", ["h0", "w1", "b1"], ["h1"], strides=[2], name="k3s2"),
        helper.make_node("Conv", ["h1", "w2"], ["h2"], strides=[2], name="k2s2"),
        helper.make_node("Conv", ["h2", "w3"], ["y"], group=2, pads=[2, 1], name="grouped"),
    ]
    graph = helper.make_graph(
        nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, window])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for a, n in ((w0, "w0"), (b0, "b0"), (w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("window", [400, 401, 417, 1000])
def test_convs_rewritten_as_matmul_compute_exactly_what_the_convs_did_at_any_length(tmp_path, window):
    import onnx

    from export.conv_rewrite import convs_to_matmul

    src = _conv_graph(tmp_path / "conv.onnx", window=window)
    done = convs_to_matmul(src, tmp_path / "mm.onnx")
    assert done.rewritten == 3  # only the grouped conv stays Conv
    # The 1-channel conv (k=10/s=5: two blocks of 5 taps, concatenated: 10 values per frame <= 12 outputs)
    # is one MatMul computed in fp32, not quantized; its bias is a row of the weight times a column of ones.
    assert done.fp32_matmuls == ("first__as_matmul/matmul_all",)
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "mm.onnx")).graph.node)
    # k3s2: 1 block + 1 strided tap summed; k2s2: 1 block. Wide blocks are reshapes, never an im2col Concat.
    assert ops["Conv"] == 1 and ops["MatMul"] == 4 and ops["Reshape"] == 4 and ops["Concat"] == 1 and ops["Pad"] == 1
    x = np.random.default_rng(1).standard_normal((3, 1, window)).astype(np.float32)
    want = _session(src).run(None, {"x": x})[0]
    got = _session(tmp_path / "mm.onnx").run(None, {"x": x})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_convs_of_unknown_length_are_left_as_conv(tmp_path):
    """Without a static length the block reshapes cannot be written: the graph keeps its Conv nodes."""
    import onnx

    from export.conv_rewrite import convs_to_matmul

    src = _conv_graph(tmp_path / "conv.onnx", window="time")  # a symbolic length
    done = convs_to_matmul(src, tmp_path / "mm.onnx")
    assert done.rewritten == 0 and done.fp32_matmuls == ()
    assert Counter(n.op_type for n in onnx.load(str(tmp_path / "mm.onnx")).graph.node)["Conv"] == 4


def test_attention_fusion_makes_one_attention_node_per_layer_and_computes_what_the_graph_did(exported_tiny, tmp_path):
    import onnx

    from export.attention_fusion import fuse_attention
    from export.onnx_export import META_ATTENTION_HEADS, META_HIDDEN_SIZE, read_metadata

    fp32 = exported_tiny / "fp32" / "model.onnx"
    assert read_metadata(onnx.load(str(fp32))) == {META_ATTENTION_HEADS: "2", META_HIDDEN_SIZE: "64"}  # tiny
    assert fuse_attention(fp32, tmp_path / "fused.onnx") == 2  # tiny has two encoder layers
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node)
    # The optimizer's SkipLayerNormalization (slow on CPU) is split back into Add + LayerNormalization.
    assert ops["Attention"] == 2 and ops["SkipLayerNormalization"] == 0 and ops["Softmax"] == 1  # the output's only
    assert ops["LayerNormalization"] == Counter(n.op_type for n in onnx.load(str(fp32)).graph.node)["LayerNormalization"]
    lengths = np.array([[W], [W // 2], [W // 10]], dtype=np.int64)
    x = (0.1 * np.random.default_rng(6).standard_normal((3, W))).astype(np.float32)
    x[np.arange(W)[None, :] >= lengths] = 0.0
    feeds = {"waveform": x, "num_samples": lengths}
    want, got = (_session(p).run(["logits"], feeds)[0] for p in (fp32, tmp_path / "fused.onnx"))
    assert np.abs(got - want).max() <= 1e-5  # padded windows included: the mask survives the fusion


def test_the_conv_as_matmul_preset_quantizes_the_feature_encoder_with_matmul_integer(exported_tiny, tmp_path):
    import onnx

    from export.quantize import QUANTIZATION_PRESETS, quantize_int8

    fp32 = onnx.load(str(exported_tiny / "fp32" / "model.onnx")).graph
    plain_convs = [n for n in fp32.node if n.op_type == "Conv"
                   and not any(a.name == "group" and a.i > 1 for a in n.attribute)]
    path = quantize_int8(exported_tiny / "fp32" / "model.onnx", tmp_path / "cm.onnx",
                         config=QUANTIZATION_PRESETS["dynamic-int8-convmatmul"])
    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["Conv"] == Counter(n.op_type for n in fp32.node)["Conv"] - len(plain_convs)  # only the grouped conv is left
    first = plain_convs[0].name  # reads the raw waveform: its MatMuls stay fp32
    assert [n.op_type for n in graph.node if n.name.startswith(f"{first}__as_matmul/matmul")] == ["MatMul"]
    quantized = {n.name.split("__as_matmul")[0] for n in graph.node
                 if "__as_matmul" in n.name and n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")}
    assert quantized == {n.name for n in plain_convs[1:]}
