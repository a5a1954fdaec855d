"""The server-side audio model offline: its pipeline, timeline, limits, and the repository writer (both runtimes).

Against the real server: tests/test_audio_service_server.py; hostile input: tests/test_audio_service_failures.py.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from client.contract import ModelContract

LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
CONTRACT = ModelContract(labels=LABELS, window_samples=16_000, hop_samples=8_000)


def _voice(seconds: float, sr: int, f0: float = 180.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t)) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _wav_bytes(y: np.ndarray, sr: int, tmp_path: Path, name: str = "clip.wav", subtype: str = "PCM_16") -> bytes:
    path = tmp_path / name
    sf.write(path, y, sr, subtype=subtype)
    return path.read_bytes()


# --- the timeline ---------------------------------------------------------------------------


def test_the_segments_tile_the_clip_and_split_at_the_middle_of_the_overlap():
    from client.timeline import build_timeline

    # 2.3 s at 16 kHz cut by make_windows: starts 0, 0.5, 1.0 and 1.3 (aligned to the end)
    offsets, counts = np.array([0, 8000, 16000, 20800]), np.full(4, 16000)
    scores = np.eye(8, dtype=np.float32)[[4, 4, 2, 2]] * 0.9 + 0.0125
    tl = build_timeline(offsets, counts, scores, labels=LABELS, sample_rate=16_000)
    assert [(s.label, s.start_s, s.end_s) for s in tl.segments] == [("angry", 0.0, 1.25), ("happy", 1.25, 2.3)]
    assert tl.duration_s == 2.3 and list(tl.start_s) == [0.0, 0.5, 1.0, 1.3] and list(tl.end_s) == [1.0, 1.5, 2.0, 2.3]
    one = build_timeline([0], [9600], scores[:1], labels=LABELS, sample_rate=16_000)
    assert [(s.label, s.start_s, s.end_s) for s in one.segments] == [("angry", 0.0, 0.6)]


def test_a_prediction_has_the_timeline_of_its_windows():
    from client.audio import make_windows
    from client.timeline import build_timeline, timeline_of
    from client.triton_client import Prediction

    w = make_windows(_voice(3.1, 16_000), window_samples=16_000, hop_samples=8_000)
    probs = np.random.default_rng(0).dirichlet(np.ones(8), size=len(w)).astype(np.float32)
    pred = Prediction(source="x", label="calm", confidence=0.5, probabilities={lab: 0.125 for lab in LABELS},
                      window_probabilities=probs, latency_s=0.0, window_offsets=w.offsets, window_num_samples=w.num_samples)
    tl = timeline_of(pred, sample_rate=16_000)
    ref = build_timeline(w.offsets, w.num_samples, probs, labels=LABELS, sample_rate=16_000, total_samples=49_600)
    assert tl.segments == ref.segments and tl.duration_s == pytest.approx(3.1)
    assert tl.segments[0].start_s == 0.0 and tl.segments[-1].end_s == pytest.approx(3.1)
    assert all(a.end_s == b.start_s and a.label != b.label for a, b in zip(tl.segments, tl.segments[1:], strict=False))


# --- the pipeline, with the real window model in ONNX Runtime ----------------------------------


@pytest.fixture(scope="module")
def window_model(exported_tiny):
    from export.served.window_model import make_session

    session = make_session(Path(exported_tiny) / "fp32" / "model.onnx", intra_op_threads=1)
    return lambda x, n: session.run(["probabilities"], {"waveform": x, "num_samples": n.reshape(-1, 1)})[0]


def test_bytes_in_answer_out_equals_the_clients_own_path(window_model, tmp_path):
    from client.audio import aggregate, load_audio, make_windows
    from client.audio_service import AudioLimits, answer, clip_from_bytes

    stereo = np.stack([_voice(2.3, 22_050, 220.0), _voice(2.3, 22_050, 150.0, seed=1)], axis=1)
    data = _wav_bytes(stereo, 22_050, tmp_path, subtype="FLOAT")
    clip = clip_from_bytes(data, contract=CONTRACT, limits=AudioLimits())
    got = answer(clip, window_model(clip.windows.waveforms, clip.windows.num_samples), contract=CONTRACT, timeline=True)
    y = load_audio(tmp_path / "clip.wav")
    w = make_windows(y, window_samples=16_000, hop_samples=8_000)
    expected = aggregate(window_model(w.waveforms, w.num_samples), w.num_samples)
    np.testing.assert_array_equal(got.scores, expected)
    assert got.label == LABELS[int(np.argmax(expected))] and got.names == LABELS
    assert got.duration_s == pytest.approx(y.size / 16_000) and len(got.timeline) == len(w) == 4
    tensors = got.tensors()
    assert tensors["label"].tolist() == [got.label.encode()] and tensors["window_scores"].shape == (4, 8)
    assert tensors["segment_end_s"][-1] == pytest.approx(got.duration_s)
    assert set(answer(clip, window_model(clip.windows.waveforms, clip.windows.num_samples), contract=CONTRACT).tensors()) == {
        "label", "names", "scores", "duration_s"}


def test_pcm_in_is_resampled_like_the_client_does(window_model):
    from client.audio import load_audio, make_windows
    from client.audio_service import AudioLimits, clip_from_pcm

    y = _voice(1.7, 44_100)
    clip = clip_from_pcm(y, 44_100, contract=CONTRACT, limits=AudioLimits())
    ref = make_windows(load_audio(y, sample_rate=44_100), window_samples=16_000, hop_samples=8_000)
    np.testing.assert_array_equal(clip.windows.waveforms, ref.waveforms)
    assert clip.total_samples == round(1.7 * 16_000) and list(clip.windows.offsets) == [0, 8_000, 11_200]


def test_the_limits_round_trip_through_config_parameters_and_refuse_nonsense():
    from client.audio_service import AudioLimits
    from client.errors import ConfigError

    limits = AudioLimits(max_bytes=1234, max_duration_s=12.5, max_decoded_samples=99, silence_peak=0.001)
    params = limits.to_parameters()
    assert params["ser.audio.max_bytes"] == "1234" and params["ser.audio.max_duration_s"] == "12.5"
    assert AudioLimits.from_parameters(params) == limits
    assert AudioLimits.from_parameters({}) == AudioLimits()
    for bad in ({"ser.audio.max_bytes": "ten"}, {"ser.audio.max_bytes": "0"}, {"ser.audio.max_duration_s": "-1"}):
        with pytest.raises(ConfigError, match="model 'ser'"):
            AudioLimits.from_parameters(bad)
    with pytest.raises(ConfigError, match="max_bytes"):
        AudioLimits(max_bytes=True)


def test_a_server_message_maps_back_to_the_typed_audio_error_naming_the_file():
    from client.audio_service import audio_error_from_message, error_message
    from client.errors import AudioTooLargeError, SilentAudioError

    server = error_message(SilentAudioError("audio", "peak 0.00e+00 < 0.0001"))
    assert server == "SilentAudioError: audio: audio is silent (peak 0.00e+00 < 0.0001)"
    err = audio_error_from_message(f"model 'ser' at h:1: infer failed (INVALID_ARGUMENT: {server})", source="a.wav")
    assert isinstance(err, SilentAudioError) and str(err) == "a.wav: audio is silent (peak 0.00e+00 < 0.0001)"
    big = audio_error_from_message(error_message(AudioTooLargeError("pcm", "9 samples > 8")), source="<array>")
    assert isinstance(big, AudioTooLargeError) and str(big) == "<array>: audio is larger than the allowed maximum (9 samples > 8)"
    assert audio_error_from_message("BadRequest: send exactly one of 'audio'", source="x") is None


# --- the repository writer, both runtimes ----------------------------------------------------


def _with_audio_model(repository: Path, tmp_path: Path, runtime: str, **options) -> Path:
    from export.audio_repository import AudioModelConfig, write_audio_model
    from export.repository import read_model_config

    repo = tmp_path / f"repo-{runtime}"
    shutil.copytree(repository, repo)
    params = {k: v.string_value for k, v in read_model_config(repo / "ser_int8").parameters.items()}
    write_audio_model(repo, contract=ModelContract.from_parameters(params), runtime=runtime, config=AudioModelConfig(**options))
    return repo


@pytest.mark.parametrize("runtime", ["portable", "native"])
def test_both_runtimes_get_the_audio_model_with_the_installed_audio_contract_packaged(runtime, request, tmp_path):
    from client.audio_service import INPUTS, OUTPUTS, inner_models_from_parameters
    from export.audio_repository import PACKAGED_MODULES, installed_code_matches, packaged_files
    from export.repository import validate_repository

    repo = _with_audio_model(request.getfixturevalue(f"{runtime}_repository"), tmp_path, runtime)
    configs = validate_repository(repo)
    assert sorted(configs) == ["ser", "ser_fp32", "ser_int8"]
    msg = configs["ser"]
    assert text_format.MessageToString(msg) == (repo / "ser" / "config.pbtxt").read_text()
    assert msg.backend == "python" and msg.max_batch_size == 0 and not msg.HasField("dynamic_batching")
    assert [(g.kind, g.count) for g in msg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 4)]
    assert [(t.name, mc.DataType.Name(t.data_type), tuple(t.dims), t.optional) for t in msg.input] == [
        (n, d, s, True) for n, d, s in INPUTS]
    assert [(t.name, mc.DataType.Name(t.data_type), tuple(t.dims)) for t in msg.output] == list(OUTPUTS)
    params = {k: v.string_value for k, v in msg.parameters.items()}
    assert ModelContract.from_parameters(params).labels == LABELS and params["ser.audio.head"] == "categorical"
    order = [m.name for m in inner_models_from_parameters(params)]
    assert order == (["ser_int8", "ser_fp32"] if runtime == "portable" else ["ser_fp32", "ser_int8"])
    shipped = sorted(str(p.relative_to(repo / "ser" / "1")) for p in (repo / "ser" / "1").rglob("*.py"))
    assert shipped == sorted(["model.py", *(f"client/{m}" for m in PACKAGED_MODULES)]) == sorted(packaged_files())
    assert installed_code_matches(repo / "ser"), "the packaged audio contract is not the installed client's"


def test_the_packaged_code_is_what_the_model_imports_even_where_the_client_is_installed(portable_repository, tmp_path):
    repo = _with_audio_model(portable_repository, tmp_path, "portable")
    model_py = repo / "ser" / "1" / "model.py"
    code = f"import runpy; runpy.run_path({str(model_py)!r}); import client.audio; print(client.audio.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == repo / "ser" / "1" / "client" / "audio.py"


def test_the_packaged_code_imports_only_the_standard_library_numpy_soundfile_soxr_and_onnxruntime():
    from export.audio_repository import packaged_files

    # onnxruntime: client.vad.open_vad (the speech gate's silero-vad), imported only when the gate is on
    allowed = {"numpy", "soundfile", "soxr", "onnxruntime", "client", "triton_python_backend_utils"}
    found, fallback = set(), set()
    for rel, path in packaged_files().items():
        tree = ast.parse(path.read_text())
        # librosa reads other formats from *paths* (client.audio._decode_fallback); encoded bytes never go there
        in_fallback = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "_decode_fallback"
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            names = set()
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = {node.module.split(".")[0]}
                if node.module.startswith("client."):
                    assert f"client/{node.module.split('.')[1]}.py" in packaged_files(), f"{rel} imports {node.module}, not packaged"
            (fallback if id(node) in in_fallback else found).update(names)
    third_party = {m for m in found if m not in sys.stdlib_module_names}
    assert third_party <= allowed, third_party - allowed
    assert {"numpy", "soundfile", "soxr"} <= third_party
    assert {m for m in fallback if m not in sys.stdlib_module_names} == {"librosa"}


def test_write_repository_writes_the_audio_model_on_request_and_the_cli_passes_its_options(exported_tiny, tmp_path):
    from client.audio_service import AudioLimits
    from export.repository import write_repository
    from ser.cli import build_parser

    written = write_repository(exported_tiny, tmp_path / "repo", runtime="native", variants=("int8",), audio_model=True)
    assert [p.name for p in written] == ["ser_int8", "ser"]
    assert not (tmp_path / "plain").exists()
    assert [p.name for p in write_repository(exported_tiny, tmp_path / "plain", variants=("int8",))] == ["ser_int8"]
    args = build_parser().parse_args(["repository", str(exported_tiny), "--out", str(tmp_path / "cli"), "--audio-model",
                                      "--audio-instances", "2", "--audio-max-bytes", "4096", "--audio-max-duration-s", "20"])
    assert args.func(args) == 0
    params = {k: v.string_value for k, v in text_format.Parse((tmp_path / "cli" / "ser" / "config.pbtxt").read_text(),
                                                               mc.ModelConfig()).parameters.items()}
    assert AudioLimits.from_parameters(params) == AudioLimits(max_bytes=4096, max_duration_s=20.0)


BREAKAGES = {
    "edited packaged file": (lambda m: (m / "1" / "client" / "audio.py").write_text("# drifted\n"), "ser.audio.code_sha256"),
    "missing packaged file": (lambda m: (m / "1" / "client" / "timeline.py").unlink(), "missing packaged files"),
    "unknown window model": (lambda m: _edit(m, lambda c: c.parameters["ser.audio.inner_models"].__setattr__(
        "string_value", '[{"name": "ser_fp64", "max_batch_size": 8}]')), "ser_fp64"),
    "batching at the audio model": (lambda m: _edit(m, lambda c: setattr(c, "max_batch_size", 8)), "max_batch_size"),
    "required input": (lambda m: _edit(m, lambda c: setattr(c.input[0], "optional", False)), "must be optional"),
    "regression head": (lambda m: _edit(m, lambda c: c.parameters["ser.audio.head"].__setattr__("string_value", "regression")), "ser.audio.head"),
    "bad limit": (lambda m: _edit(m, lambda c: c.parameters["ser.audio.max_bytes"].__setattr__("string_value", "-5")), "max_bytes"),
}


def _edit(model_dir: Path, change) -> None:
    msg = text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())
    change(msg)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(msg))


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_audio_model_is_refused_naming_the_problem(portable_repository, tmp_path, breakage):
    from export.audio_repository import validate_audio_model_dir
    from export.errors import ModelConfigError
    from export.repository import validate_repository

    repo = _with_audio_model(portable_repository, tmp_path, "portable")
    validate_audio_model_dir(repo / "ser")
    breaking, field = BREAKAGES[breakage]
    breaking(repo / "ser")
    with pytest.raises(ModelConfigError, match="config.pbtxt") as caught:
        validate_audio_model_dir(repo / "ser")
    assert field in str(caught.value)
    with pytest.raises(ModelConfigError, match="1 invalid model"):
        validate_repository(repo)


def test_the_writer_refuses_a_repository_without_a_window_model_of_the_contract(tmp_path):
    from export.audio_repository import write_audio_model
    from export.errors import ExportError

    (tmp_path / "repo").mkdir()
    with pytest.raises(ExportError, match="no window model with labels"):
        write_audio_model(tmp_path / "repo", contract=CONTRACT, runtime="portable")


# --- the speech gate (silero-vad in ONNX Runtime, as the model runs it) -------------------------


def test_a_window_without_scores_is_a_no_speech_segment_of_the_timeline():
    from client.timeline import build_timeline

    offsets, counts = np.array([0, 8000, 16000, 24000]), np.full(4, 16000)
    scores = np.eye(8, dtype=np.float32)[[0, 4, 4, 0]]
    scores[[0, 3]] = np.nan  # held back by the gate
    tl = build_timeline(offsets, counts, scores, labels=LABELS, sample_rate=16_000)
    assert [(s.label, s.start_s, s.end_s) for s in tl.segments] == [
        ("no_speech", 0.0, 0.75), ("angry", 0.75, 1.75), ("no_speech", 1.75, 2.5)]


def test_the_clips_scores_aggregate_the_speech_windows_only_and_its_timeline_keeps_every_window():
    from client.audio import aggregate, make_windows
    from client.audio_service import Clip, answer

    y = _voice(2.5, 16_000)
    w = make_windows(y, window_samples=16_000, hop_samples=8_000)
    clip = Clip(windows=w, total_samples=y.size, sample_rate=16_000, samples=y)
    speech = np.array([False, True, True, False])
    rows = np.random.default_rng(0).dirichlet(np.ones(8), size=2).astype(np.float32)
    got = answer(clip, rows, contract=CONTRACT, timeline=True, speech=speech)
    np.testing.assert_allclose(got.scores, aggregate(rows, w.num_samples[speech]), atol=1e-7)
    assert np.isnan(got.timeline.scores[[0, 3]]).all() and (got.timeline.scores[[1, 2]] == rows).all()
    labels = [s.label for s in got.timeline.segments]
    assert labels[0] == labels[-1] == "no_speech" and "no_speech" not in labels[1:-1]


@pytest.fixture(scope="module")
def silero():
    from client.vad import open_vad
    from export.audio_repository import installed_vad_model

    return open_vad(installed_vad_model())


def test_a_clip_without_speech_is_refused_naming_the_speech_found_and_what_a_window_needs(silero):
    from client.audio_service import (
        AudioLimits,
        SpeechGate,
        audio_error_from_message,
        clip_from_pcm,
        error_message,
        speech_windows,
    )
    from client.errors import NoSpeechError

    quiet = (0.003 * np.random.default_rng(0).standard_normal(40_000)).astype(np.float32)  # not silent, no speech
    clip = clip_from_pcm(quiet, 16_000, contract=CONTRACT, limits=AudioLimits())
    with pytest.raises(NoSpeechError) as caught:
        speech_windows(clip, silero, SpeechGate(vad="silero"), name="pcm")
    assert re.fullmatch(r"pcm: no speech in the audio \(at most \d+ ms of speech in one of 4 windows; a window needs 200 ms, "
                       r"ser.audio.vad_min_speech_ms\)", str(caught.value))
    back = audio_error_from_message(f"infer failed (INVALID_ARGUMENT: {error_message(caught.value)})", source="q.wav")
    assert isinstance(back, NoSpeechError) and str(back) == str(caught.value).replace("pcm:", "q.wav:", 1)


def test_the_gate_settings_round_trip_through_config_parameters_and_refuse_nonsense():
    from client.audio_service import SpeechGate
    from client.errors import ConfigError

    gate = SpeechGate(vad="silero", vad_threshold=0.6, vad_min_speech_ms=120)
    assert SpeechGate.from_parameters(gate.to_parameters()) == gate and not SpeechGate().on
    for bad in (dict(vad="on"), dict(vad_threshold=1.0), dict(vad_min_speech_ms=-1)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            SpeechGate(**bad)
    with pytest.raises(ConfigError, match="ser.audio.vad_threshold"):
        SpeechGate.from_parameters({"ser.audio.vad_threshold": "loud"})


def test_with_the_gate_the_writer_ships_silero_and_records_its_sha256_and_settings(portable_repository, tmp_path):
    from client.audio_service import SpeechGate
    from export.audio_repository import installed_vad_model, validate_audio_model_dir
    from export.recipe import sha256_file as file_sha256

    repo = _with_audio_model(portable_repository, tmp_path, "portable", gate=SpeechGate(vad="silero"))
    params = {k: v.string_value for k, v in validate_audio_model_dir(repo / "ser").parameters.items()}
    assert (repo / "ser" / "1" / "silero_vad.onnx").read_bytes() == installed_vad_model().read_bytes()
    assert params["ser.audio.vad_sha256"] == file_sha256(installed_vad_model())
    assert SpeechGate.from_parameters(params) == SpeechGate(vad="silero")
    plain = _with_audio_model(portable_repository, tmp_path / "plain", "portable")
    assert not (plain / "ser" / "1" / "silero_vad.onnx").exists()
    assert read_params(plain)["ser.audio.vad"] == "off" and "ser.audio.vad_sha256" not in read_params(plain)


def read_params(repo: Path) -> dict[str, str]:
    msg = text_format.Parse((repo / "ser" / "config.pbtxt").read_text(), mc.ModelConfig())
    return {k: v.string_value for k, v in msg.parameters.items()}


@pytest.mark.parametrize("breakage", ["drifted", "missing"])
def test_a_gated_model_whose_detector_drifted_or_went_missing_is_refused(portable_repository, tmp_path, breakage):
    from client.audio_service import SpeechGate
    from export.audio_repository import validate_audio_model_dir
    from export.errors import ModelConfigError

    repo = _with_audio_model(portable_repository, tmp_path, "portable", gate=SpeechGate(vad="silero"))
    onnx = repo / "ser" / "1" / "silero_vad.onnx"
    if breakage == "drifted":
        onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    else:
        onnx.unlink()
    with pytest.raises(ModelConfigError, match=r"1/silero_vad.onnx: missing or not the file of parameters\[ser.audio.vad_sha256\]"):
        validate_audio_model_dir(repo / "ser")


def test_the_writer_refuses_the_gate_on_a_model_not_at_16_khz_naming_the_rate(tmp_path):
    from client.audio_service import SpeechGate
    from client.errors import ConfigError
    from export.audio_repository import AudioModelConfig, write_audio_model

    (tmp_path / "repo").mkdir()
    contract = ModelContract(labels=LABELS, window_samples=8_000, hop_samples=4_000, sample_rate=8_000)
    with pytest.raises(ConfigError, match=r"sample rate 8000 Hz: the voice-activity gate \(silero-vad\) needs a model of 16000 Hz"):
        write_audio_model(tmp_path / "repo", contract=contract, runtime="portable",
                          config=AudioModelConfig(gate=SpeechGate(vad="silero")))
    assert list((tmp_path / "repo").iterdir()) == []


def test_the_cli_writes_the_gated_audio_model_with_audio_vad(exported_tiny, tmp_path):
    from client.audio_service import SpeechGate
    from ser.cli import build_parser

    args = build_parser().parse_args(["repository", str(exported_tiny), "--out", str(tmp_path / "cli"), "--variants", "int8",
                                      "--audio-model", "--audio-vad"])
    assert args.func(args) == 0
    assert SpeechGate.from_parameters(read_params(tmp_path / "cli")) == SpeechGate(vad="silero")
    assert (tmp_path / "cli" / "ser" / "1" / "silero_vad.onnx").is_file()


@pytest.mark.parametrize("flag, needs", [("--audio-vad", "--audio-model"), ("--stream-no-vad", "--stream-model")])
def test_a_model_option_without_its_model_is_refused_and_nothing_is_written(exported_tiny, tmp_path, flag, needs):
    from tests.helpers import assert_one_line_error, ser

    out = tmp_path / "repo"
    proc = ser("repository", str(exported_tiny), "--out", str(out), "--variants", "int8", flag)
    assert_one_line_error(proc, flag, f"add {needs}")
    assert not out.exists()
