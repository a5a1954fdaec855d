"""Triton repositories (export/repository/) and the generic python-backend model (export/served/window_model.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from client.contract import ModelContract

W = 16_000
MODELS = ("ser_fp32", "ser_int8")


def _parse(model_dir: Path):
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


@pytest.fixture(params=["portable", "native"])
def repository(request) -> Path:
    return request.getfixturevalue(f"{request.param}_repository")


def test_both_runtimes_write_configs_that_round_trip_and_match_the_graph(repository):
    from export.onnx_export import read_signature
    from export.repository import validate_repository

    assert sorted(p.name for p in repository.iterdir()) == list(MODELS)
    configs = validate_repository(repository)
    for name in MODELS:
        model = repository / name
        msg = _parse(model)
        assert configs[name] == msg
        assert text_format.MessageToString(msg) == (model / "config.pbtxt").read_text()
        sig = read_signature(model / "1" / "model.onnx")
        assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in msg.input] == [
            (s.name, s.data_type, list(s.shape[1:])) for s in sig.inputs.values()
        ] == [("waveform", "TYPE_FP32", [W]), ("num_samples", "TYPE_INT64", [1])]
        assert [(t.name, list(t.dims), t.label_filename) for t in msg.output] == [
            ("logits", [8], "labels.txt"), ("probabilities", [8], "")
        ]
        labels = (model / "labels.txt").read_text().splitlines()
        assert len(labels) == 8 and msg.max_batch_size == 8
        assert list(msg.dynamic_batching.preferred_batch_size) == [4, 8]
        assert msg.dynamic_batching.max_queue_delay_microseconds == 2000


def test_native_runtime_serves_int8_on_cpu_and_fp32_wherever_the_node_has_a_device(native_repository):
    fp32, int8 = _parse(native_repository / "ser_fp32"), _parse(native_repository / "ser_int8")
    for msg in (fp32, int8):
        assert msg.platform == "onnxruntime_onnx" and msg.backend == "onnxruntime"
        assert not (native_repository / msg.name / "1" / "model.py").exists()
        # No thread constant: the server's shared pool is sized from the node it lands on.
        assert "intra_op_thread_count" not in msg.parameters
    assert [g.kind for g in int8.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    # KIND_AUTO: GPU instances where the node has a GPU, CPU instances on a CPU-only node (it starts on both).
    assert [g.kind for g in fp32.instance_group] == [mc.ModelInstanceGroup.KIND_AUTO]
    assert fp32.parameters["ser.placement"].string_value.startswith("auto:")
    assert int8.parameters["ser.placement"].string_value.startswith("cpu:")


@pytest.mark.parametrize(("placement", "kind"), [("gpu", "KIND_GPU"), ("cpu", "KIND_CPU"), ("auto", "KIND_AUTO")])
def test_native_placement_can_be_overridden_and_int8_stays_on_the_cpu(placement, kind):
    from export.repository import RepositoryConfig

    config = RepositoryConfig(runtime="native", placement=placement)
    assert config.kind("fp32") == config.kind("fp16") == kind and config.kind("int8") == "KIND_CPU"
    assert RepositoryConfig(runtime="portable", placement=placement).kind("fp32") == "KIND_CPU"


def test_an_explicit_thread_count_is_written_for_cpu_and_auto_instances(exported_tiny, tmp_path):
    from export.repository import write_repository

    write_repository(exported_tiny, tmp_path / "repo", runtime="native", variants=("fp32", "int8"), intra_op_threads=3)
    for name in ("ser_fp32", "ser_int8"):
        assert _parse(tmp_path / "repo" / name).parameters["intra_op_thread_count"].string_value == "3"


def test_served_configs_carry_no_path_of_the_machine_that_wrote_them(native_repository, portable_repository, exported_tiny):
    machine_paths = {str(Path(exported_tiny).resolve().parent), str(Path.home())}
    for repo in (native_repository, portable_repository):
        for name in MODELS:
            text = (Path(repo) / name / "config.pbtxt").read_text()
            assert not [p for p in machine_paths if p in text], f"{name} config names a local path"
            assert _parse(Path(repo) / name).parameters["ser.source"].string_value == "tiny-untrained"


def test_portable_runtime_ships_the_generic_python_model_beside_model_onnx(portable_repository):
    from export import cpu_class
    from export.served import window_model as triton_python_model

    source = Path(triton_python_model.__file__).read_bytes()
    for name in MODELS:
        msg = _parse(portable_repository / name)
        assert msg.backend == "python" and not msg.platform
        assert [g.kind for g in msg.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        # __pycache__ appears once a server has imported model.py from this (shared) repository
        shipped = sorted(p.name for p in (portable_repository / name / "1").iterdir() if p.name != "__pycache__")
        assert shipped == ["cpu_class.py", "model.onnx", "model.py"]  # model.py imports cpu_class beside it
        assert (portable_repository / name / "1" / "cpu_class.py").read_bytes() == Path(cpu_class.__file__).read_bytes()
        assert (portable_repository / name / "1" / "model.py").read_bytes() == source


def test_config_parameters_carry_the_contract_and_the_recipe_checksums(portable_repository, exported_tiny):
    from export.recipe import ExportRecord, sha256_file

    for variant in ("fp32", "int8"):
        model = portable_repository / f"ser_{variant}"
        params = {k: v.string_value for k, v in _parse(model).parameters.items()}
        contract = ModelContract.from_parameters(params)
        recipe = ExportRecord.read(exported_tiny / variant / "recipe.json")
        assert contract.labels == recipe.contract.labels == tuple((model / "labels.txt").read_text().split())
        assert (contract.window_samples, contract.hop_samples, contract.variant) == (W, 8_000, variant)
        assert contract.extra["model_sha256"] == recipe.model_sha256 == sha256_file(model / "1" / "model.onnx")
        assert contract.extra["source_sha256"] == recipe.source_sha256
        assert contract.extra["recipe_sha256"] == sha256_file(exported_tiny / variant / "recipe.json")


def _edit(model: Path, change) -> None:
    msg = _parse(model)
    change(msg)
    (model / "config.pbtxt").write_text(text_format.MessageToString(msg))


BREAKAGES = {
    "misspelled field": (lambda m: (m / "config.pbtxt").write_text((m / "config.pbtxt").read_text().replace("max_batch_size", "max_batch")), "max_batch"),
    "wrong dtype": (lambda m: _edit(m, lambda c: setattr(c.input[1], "data_type", mc.TYPE_INT32)), "input[num_samples].data_type"),
    "dims mismatch": (lambda m: _edit(m, lambda c: c.input[0].dims.__setitem__(0, 8_000)), "input[waveform].dims"),
    "missing parameter": (lambda m: _edit(m, lambda c: c.parameters.pop("ser.labels")), "ser.labels"),
    "missing recipe checksum": (lambda m: _edit(m, lambda c: c.parameters.pop("ser.recipe_sha256")), "ser.recipe_sha256"),
    "labels count": (lambda m: (m / "labels.txt").write_text("a\nb\nc\n"), "labels.txt"),
    "no label_filename": (lambda m: _edit(m, lambda c: c.output[0].ClearField("label_filename")), "output[logits].label_filename"),
    "renamed output": (lambda m: _edit(m, lambda c: setattr(c.output[1], "name", "probs")), "output[probs]"),
    "name not folder": (lambda m: _edit(m, lambda c: setattr(c, "name", "other")), "name:"),
    "zero max batch": (lambda m: _edit(m, lambda c: setattr(c, "max_batch_size", 0)), "max_batch_size"),
    "swapped model file": (lambda m: shutil.copyfile(m.parent.parent / "ser_fp32_src" / "1" / "model.onnx", m / "1" / "model.onnx"), "model_sha256"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_config_is_refused_naming_the_field(portable_repository, tmp_path, breakage):
    from export.errors import ModelConfigError
    from export.repository import validate_model_dir, validate_repository

    repo = tmp_path / "repo"
    model = repo / "ser_int8"
    shutil.copytree(portable_repository / "ser_int8", model)
    shutil.copytree(portable_repository / "ser_fp32", tmp_path / "ser_fp32_src")
    validate_model_dir(model)  # valid before the edit
    breaking, field = BREAKAGES[breakage]
    breaking(model)
    with pytest.raises(ModelConfigError, match="config.pbtxt") as caught:
        validate_model_dir(model)
    assert field in str(caught.value)
    with pytest.raises(ModelConfigError, match="1 invalid model"):
        validate_repository(repo)


# --- native configs for GPU nodes: fp16 on KIND_GPU (TensorRT), int8 on KIND_CPU, from a bench file ---


def _bench_file(path: Path) -> Path:
    """A ``ser bench --json``-shaped file made of real :class:`export.bench.Cell` records."""
    from export.bench import Cell

    def cell(runner, device, batch, times):
        return Cell(shape="xlsr-large", runner=runner, batch=batch, device=device, status="measured", times_ms=times).to_json()

    cells = [
        cell("torch-fp16", "cuda", 1, (18.0, 19.0, 20.0)), cell("torch-fp16", "cuda", 8, (20.0, 21.0, 22.0)),
        cell("torch-fp32", "cuda", 1, (19.0, 19.5, 20.0)), cell("torch-fp32", "cuda", 8, (24.0, 24.5, 25.0)),
        cell("ort-int8:dynamic-int8-matmul", "cpu", 1, (76.0, 77.0, 78.0)),
        cell("ort-int8:dynamic-int8-matmul", "cpu", 8, (560.0, 566.0, 580.0)),
        cell("torch-fp32", "cpu", 8, (1.0, 1.0, 1.0)),  # a CPU cell: must not stand for the GPU fp32 model
    ]
    path.write_text(json.dumps({"format": 1, "shapes": {"xlsr-large": {"gflop_per_clip": 91.0}}, "cells": cells}))
    return path


@pytest.fixture(scope="module")
def native_gpu_repository(tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """``(repository, bench file)``: native fp32 + int8 + fp16 of the tiny model, batching from a bench file."""
    from export.pipeline import export_checkpoint
    from export.repository import write_repository

    root = tmp_path_factory.mktemp("native-gpu")
    export_checkpoint(tiny_checkpoint, root / "export", variants=("fp32", "int8", "fp16"), progress=False)
    bench = _bench_file(root / "bench.json")
    write_repository(root / "export", root / "repo", runtime="native", variants=("fp32", "int8", "fp16"), bench=bench)
    return root / "repo", bench


def test_native_gpu_configs_round_trip_and_match_the_graph(native_gpu_repository):
    from export.onnx_export import read_signature
    from export.repository import validate_repository

    repo, _ = native_gpu_repository
    configs = validate_repository(repo)
    assert sorted(configs) == ["ser_fp16", "ser_fp32", "ser_int8"]
    for name, msg in configs.items():
        text = (repo / name / "config.pbtxt").read_text()
        assert text_format.MessageToString(text_format.Parse(text, mc.ModelConfig())) == text
        sig = read_signature(repo / name / "1" / "model.onnx")
        assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in msg.input] == [
            (s.name, s.data_type, list(s.shape[1:])) for s in sig.inputs.values()]
        assert msg.version_policy.latest.num_versions == 1
        for warm in msg.model_warmup:  # a real-shaped sample: graph dtypes and dims, num_samples = W
            assert {k: (mc.DataType.Name(v.data_type), list(v.dims)) for k, v in warm.inputs.items()} == {
                s.name: (s.data_type, list(s.shape[1:])) for s in sig.inputs.values()}
            assert warm.inputs["waveform"].random_data and 1 <= warm.batch_size <= msg.max_batch_size
            raw = (repo / name / "warmup" / warm.inputs["num_samples"].input_data_file).read_bytes()
            assert np.frombuffer(raw, "<i8").tolist() == [W]
        assert [w.batch_size for w in msg.model_warmup] == sorted({1, max(msg.dynamic_batching.preferred_batch_size)})


def test_fp16_is_a_tensorrt_fp16_gpu_model_and_int8_a_cpu_model(native_gpu_repository):
    repo, _ = native_gpu_repository
    fp16, fp32, int8 = (_parse(repo / f"ser_{v}") for v in ("fp16", "fp32", "int8"))
    assert [g.kind for g in fp16.instance_group] == [g.kind for g in fp32.instance_group] == [mc.ModelInstanceGroup.KIND_AUTO]
    (trt,) = fp16.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and dict(trt.parameters) == {
        "precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "true", "trt_engine_cache_path": "/tmp/ser-trt-engines"}
    assert fp32.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["precision_mode"] == "FP32"
    assert [g.kind for g in int8.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert not int8.optimization.execution_accelerators.gpu_execution_accelerator
    assert "intra_op_thread_count" not in int8.parameters
    assert int8.parameters["inter_op_thread_count"].string_value == "1"
    assert fp16.parameters["ser.variant"].string_value == "fp16"


def test_batching_figures_come_from_the_bench_file(native_gpu_repository):
    from export.repository import QUEUE_DELAY_FRACTION

    repo, bench = native_gpu_repository
    fp16, fp32, int8 = (_parse(repo / f"ser_{v}") for v in ("fp16", "fp32", "int8"))
    # GPU: batch 8 is 8x the clips/s of batch 1, so it is preferred; wait a quarter of a batch-1 call (19 ms)
    assert (fp16.max_batch_size, list(fp16.dynamic_batching.preferred_batch_size)) == (8, [8])
    assert fp16.dynamic_batching.max_queue_delay_microseconds == round(QUEUE_DELAY_FRACTION * 19_000)
    assert fp32.dynamic_batching.max_queue_delay_microseconds == round(QUEUE_DELAY_FRACTION * 19_500)
    # CPU int8: batch 1 already gives >= 90 % of batch 8's clips/s, so nothing to wait for
    assert list(int8.dynamic_batching.preferred_batch_size) == [1] and int8.dynamic_batching.max_queue_delay_microseconds == 0
    for msg, runner in ((fp16, "torch-fp16"), (fp32, "torch-fp32"), (int8, "ort-int8:dynamic-int8-matmul")):
        assert msg.parameters["batching_source"].string_value.startswith(f"{bench.name} xlsr-large {runner}:")


NATIVE_BREAKAGES = {
    "int8 on a GPU": ("ser_int8", lambda c: setattr(c.instance_group[0], "kind", mc.ModelInstanceGroup.KIND_GPU), "runs on the CPU only"),
    "int8 TensorRT precision": ("ser_fp16", lambda c: c.optimization.execution_accelerators.gpu_execution_accelerator[0]
                                .parameters.__setitem__("precision_mode", "INT8"), "precision_mode"),
    "accelerator on a CPU model": ("ser_int8", lambda c: c.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt"),
                                   "gpu_execution_accelerator"),
    "warmup dims": ("ser_fp16", lambda c: c.model_warmup[0].inputs["waveform"].dims.__setitem__(0, 123), "model_warmup[real_shaped_batch_1].inputs[waveform].dims"),
    "warmup batch": ("ser_fp16", lambda c: setattr(c.model_warmup[0], "batch_size", 64), "batch_size"),
    "warmup missing input": ("ser_fp32", lambda c: c.model_warmup[0].inputs.pop("num_samples"), "inputs"),
    "warmup file": ("ser_fp16", lambda c: setattr(c.model_warmup[0].inputs["num_samples"], "input_data_file", "nope"), "warmup/nope is missing"),
    "version policy": ("ser_fp16", lambda c: setattr(c.version_policy.latest, "num_versions", 0), "version_policy"),
}


@pytest.mark.parametrize("breakage", sorted(NATIVE_BREAKAGES))
def test_a_broken_native_config_is_refused_naming_the_field(native_gpu_repository, tmp_path, breakage):
    from export.errors import ModelConfigError
    from export.repository import validate_model_dir

    repo, _ = native_gpu_repository
    name, change, field = NATIVE_BREAKAGES[breakage]
    model = tmp_path / name
    shutil.copytree(repo / name, model)
    validate_model_dir(model)
    _edit(model, change)
    with pytest.raises(ModelConfigError, match="config.pbtxt") as caught:
        validate_model_dir(model)
    assert field in str(caught.value)


# --- the python-backend model's batching, with a real ONNX Runtime session ------------------


@pytest.fixture(scope="module")
def python_model(portable_repository):
    """``(session, spec)`` as the python-backend model builds them from its config (JSON form) and model.onnx."""
    from export.served.window_model import check_against_session, make_session, parse_model_config

    model = portable_repository / "ser_fp32"
    config_json = json_format.MessageToDict(_parse(model), preserving_proto_field_name=True)
    spec = parse_model_config(json.dumps(config_json))
    session = make_session(model / "1" / "model.onnx", intra_op_threads=1)
    check_against_session(spec, session, model="ser_fp32")
    return session, spec


def _requests(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for b in sizes:
        n = rng.integers(800, W + 1, size=(b, 1)).astype(np.int64)
        x = (0.2 * rng.standard_normal((b, W))).astype(np.float32)
        x[np.arange(W)[None, :] >= n] = 0.0
        out.append({"waveform": x, "num_samples": n})
    return out


def test_python_model_reads_names_dtypes_and_dims_from_its_config(python_model):
    _, spec = python_model
    assert [(s.name, s.dtype, s.dims) for s in spec.inputs] == [
        ("waveform", np.dtype(np.float32), (W,)), ("num_samples", np.dtype(np.int64), (1,))
    ]
    assert [s.name for s in spec.outputs] == ["logits", "probabilities"] and spec.max_batch_size == 8


def test_batching_gives_the_same_outputs_for_concatenated_and_one_by_one_requests(python_model):
    from export.served.window_model import run_batched

    session, spec = python_model
    requests = _requests([1, 3, 1, 2])
    together = run_batched(session, requests, spec=spec)
    alone = [run_batched(session, [r], spec=spec)[0] for r in requests]
    assert len(together) == len(requests)
    for req, t, a in zip(requests, together, alone, strict=True):
        assert t["logits"].shape == (req["waveform"].shape[0], 8)
        for name in ("logits", "probabilities"):
            np.testing.assert_allclose(t[name], a[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"waveform": np.zeros((1, 100), np.float32), "num_samples": np.ones((1, 1), np.int64)}, "shape [1, 100]"),
        ({"waveform": np.zeros((1, W), np.float64), "num_samples": np.ones((1, 1), np.int64)}, "dtype float64"),
        ({"waveform": np.zeros((1, W), np.float32), "num_samples": None}, "missing input 'num_samples'"),
        ({"waveform": np.zeros((2, W), np.float32), "num_samples": np.ones((1, 1), np.int64)}, "batch 1"),
        ({"waveform": np.zeros((9, W), np.float32), "num_samples": np.ones((9, 1), np.int64)}, "max_batch_size=8"),
    ],
    ids=["wrong-shape", "wrong-dtype", "missing-input", "ragged-batch", "over-max-batch"],
)
def test_a_bad_request_gets_its_own_error_and_the_others_are_answered(python_model, bad, message):
    from export.served.window_model import RequestError, run_batched

    session, spec = python_model
    good = _requests([2, 1], seed=5)
    results = run_batched(session, [good[0], bad, good[1]], spec=spec)
    assert isinstance(results[1], RequestError) and message in str(results[1])
    reference = run_batched(session, good, spec=spec)
    for got, ref in zip((results[0], results[2]), reference, strict=True):
        np.testing.assert_allclose(got["probabilities"], ref["probabilities"], atol=1e-6)


def test_python_model_refuses_a_config_that_does_not_match_the_onnx_graph(python_model, portable_repository):
    from export.served.window_model import check_against_session, parse_model_config

    session, _ = python_model
    config = json_format.MessageToDict(_parse(portable_repository / "ser_fp32"), preserving_proto_field_name=True)
    config["input"][0]["dims"] = [8_000]
    config["output"][1]["name"] = "probs"
    with pytest.raises(ValueError) as caught:
        check_against_session(parse_model_config(config), session, model="ser_fp32")
    text = str(caught.value)
    assert "input 'waveform': config dims [8000] != ONNX dims [16000]" in text
    assert "'probs' does not exist" in text and "'probabilities' is not declared" in text
    config["max_batch_size"] = 0
    with pytest.raises(ValueError, match="max_batch_size=0"):
        parse_model_config(config)
