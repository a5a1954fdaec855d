"""The streaming model's writer: its config as a ModelConfig message, its packaged files, its validation."""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from client.contract import ModelContract

MODEL = "ser-stream"


def _with_stream_model(repository: Path, tmp_path: Path, runtime: str, **options) -> Path:
    from export.repository import read_model_config
    from export.stream_repository import StreamModelConfig, write_stream_model

    repo = tmp_path / f"repo-{runtime}"
    shutil.copytree(repository, repo)
    params = {k: v.string_value for k, v in read_model_config(repo / "ser_int8").parameters.items()}
    write_stream_model(repo, contract=ModelContract.from_parameters(params), runtime=runtime,
                       config=StreamModelConfig(**options))
    return repo


@pytest.mark.parametrize("runtime", ["portable", "native"])
def test_both_runtimes_get_a_decoupled_sequence_batched_model_with_its_detector(runtime, request, tmp_path):
    from client.audio_service import inner_models_from_parameters
    from client.stream_service import INPUTS, OUTPUTS, StreamSettings
    from export.repository import validate_repository
    from export.stream_repository import installed_vad_model, packaged_files

    repo = _with_stream_model(request.getfixturevalue(f"{runtime}_repository"), tmp_path, runtime)
    configs = validate_repository(repo)
    assert sorted(configs) == [MODEL, "ser_fp32", "ser_int8"]
    msg = configs[MODEL]
    assert text_format.MessageToString(msg) == (repo / MODEL / "config.pbtxt").read_text()
    assert msg.backend == "python" and msg.max_batch_size == 16 and msg.model_transaction_policy.decoupled
    seq = msg.sequence_batching
    assert seq.HasField("oldest") and seq.oldest.max_candidate_sequences == 2 * StreamSettings().max_calls
    assert seq.max_sequence_idle_microseconds == 30_000_000
    assert {c.name: mc.ModelSequenceBatching.Control.Kind.Name(c.control[0].kind) for c in seq.control_input} == {
        "START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END", "CORRID": "CONTROL_SEQUENCE_CORRID"}
    assert [(t.name, mc.DataType.Name(t.data_type), tuple(t.dims)) for t in msg.input] == list(INPUTS)
    assert [t.name for t in msg.input if t.allow_ragged_batch] == ["pcm", "pcm_s16"]
    assert [(t.name, mc.DataType.Name(t.data_type), tuple(t.dims)) for t in msg.output] == list(OUTPUTS)
    params = {k: v.string_value for k, v in msg.parameters.items()}
    order = [m.name for m in inner_models_from_parameters(params, prefix="ser.stream.")]
    assert order == (["ser_int8", "ser_fp32"] if runtime == "portable" else ["ser_fp32", "ser_int8"])
    assert StreamSettings.from_parameters(params) == StreamSettings()
    shipped = sorted(str(p.relative_to(repo / MODEL / "1")) for p in (repo / MODEL / "1").rglob("*") if p.is_file())
    assert shipped == sorted(packaged_files(vad=installed_vad_model()))
    assert (repo / MODEL / "1" / "silero_vad.onnx").read_bytes() == installed_vad_model().read_bytes()


def test_without_the_detector_no_onnx_file_is_shipped(portable_repository, tmp_path):
    from client.stream_service import StreamSettings
    from export.stream_repository import validate_stream_model_dir

    repo = _with_stream_model(portable_repository, tmp_path, "portable", settings=StreamSettings(vad="off"))
    validate_stream_model_dir(repo / MODEL)
    assert not (repo / MODEL / "1" / "silero_vad.onnx").exists()


def test_the_packaged_code_imports_only_what_the_python_backend_has():
    from export.stream_repository import packaged_files

    allowed = {"numpy", "soundfile", "soxr", "onnxruntime", "client", "audio_model", "triton_python_backend_utils",
               "librosa"}  # librosa: client.audio's decoder of other formats from paths; PCM never goes there
    found = set()
    for rel, path in packaged_files(vad=None).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
                if node.module.startswith("client."):
                    assert f"client/{node.module.split('.')[1]}.py" in packaged_files(vad=None), (rel, node.module)
    assert {m for m in found if m not in sys.stdlib_module_names} <= allowed


def test_the_cli_writes_the_streaming_model_with_its_options(exported_tiny, tmp_path):
    from client.stream_service import StreamSettings
    from export.repository import write_repository
    from ser.cli import build_parser

    written = write_repository(exported_tiny, tmp_path / "repo", variants=("int8",), stream_model=True)
    assert [p.name for p in written] == ["ser_int8", MODEL]
    args = build_parser().parse_args(["repository", str(exported_tiny), "--out", str(tmp_path / "cli"), "--variants", "int8",
                                      "--stream-model", "--stream-hop-ms", "250", "--stream-max-calls", "10",
                                      "--stream-idle-timeout-s", "5", "--stream-no-vad", "--stream-instances", "2"])
    assert args.func(args) == 0
    msg = text_format.Parse((tmp_path / "cli" / MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    params = {k: v.string_value for k, v in msg.parameters.items()}
    assert StreamSettings.from_parameters(params) == StreamSettings(hop_ms=250, max_calls=10, idle_timeout_s=5.0, vad="off")
    assert msg.instance_group[0].count == 2 and msg.sequence_batching.oldest.max_candidate_sequences == 40
    assert msg.sequence_batching.max_sequence_idle_microseconds == 5_000_000


def _edit(model_dir: Path, change) -> None:
    msg = text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())
    change(msg)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(msg))


BREAKAGES = {
    "edited packaged file": (lambda m: (m / "1" / "client" / "stream_service.py").write_text("# drifted\n"), "code_sha256"),
    "another detector": (lambda m: (m / "1" / "silero_vad.onnx").write_bytes(b"onnx?"), "silero_vad.onnx"),
    "not decoupled": (lambda m: _edit(m, lambda c: setattr(c.model_transaction_policy, "decoupled", False)), "decoupled"),
    "idle time apart": (lambda m: _edit(m, lambda c: setattr(c.sequence_batching, "max_sequence_idle_microseconds", 1_000_000)),
                        "max_sequence_idle_microseconds"),
    "no sequence batcher": (lambda m: _edit(m, lambda c: c.ClearField("sequence_batching")), "sequence_batching"),
    "unknown window model": (lambda m: _edit(m, lambda c: c.parameters["ser.stream.inner_models"].__setattr__(
        "string_value", '[{"name": "ser_fp64", "max_batch_size": 8}]')), "ser_fp64"),
    "bad setting": (lambda m: _edit(m, lambda c: c.parameters["ser.stream.smoothing"].__setattr__("string_value", "2")), "smoothing"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_streaming_model_is_refused_naming_the_problem(portable_repository, tmp_path, breakage):
    from export.errors import ModelConfigError
    from export.repository import validate_repository
    from export.stream_repository import validate_stream_model_dir

    repo = _with_stream_model(portable_repository, tmp_path, "portable")
    breaking, field = BREAKAGES[breakage]
    breaking(repo / MODEL)
    with pytest.raises(ModelConfigError, match="config.pbtxt") as caught:
        validate_stream_model_dir(repo / MODEL)
    assert field in str(caught.value)
    with pytest.raises(ModelConfigError, match="1 invalid model"):
        validate_repository(repo)


def test_the_writer_refuses_a_default_hop_the_window_cannot_hold(portable_repository, tmp_path):
    from client.errors import ConfigError
    from client.stream_service import StreamSettings

    with pytest.raises(ConfigError, match="hop_ms=2000"):
        _with_stream_model(portable_repository, tmp_path, "portable", settings=StreamSettings(hop_ms=2000))
