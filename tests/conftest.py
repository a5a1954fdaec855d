"""Test tiers and shared, session-scoped fixtures: small, seeded artifacts built once per run.

Tiers, by folder (each test gets its folder's marker, so ``-m unit`` etc. select a tier):

* ``tests/unit``: neither a server nor training (``make test-fast``);
* ``tests/integration``: starts the real tritonserver;
* ``tests/system``: trains models, or runs torchrun, qemu-user or Prometheus.

A fixture below that starts the server (``triton_server``) or trains (``trained_*``,
``cv_result``, ``exported_trained``, ...) puts the file that uses it in that tier at least.
Sections are owned by parts of the bundle; each builds on real code paths (no mocks
of Triton, ONNX Runtime or the model).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import RAVDESS8

#: The tier folders under tests/, cheapest first; each is also a marker of the same name.
TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test with its tier (its folder); refuse test files that sit in no tier."""
    root = Path(__file__).resolve().parent
    outside = set()
    for item in items:
        try:
            tier = Path(str(item.path)).resolve().relative_to(root).parts[0]
        except ValueError:  # collected from outside tests/ (e.g. a doctest): no tier
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        else:
            outside.add(str(Path(str(item.path)).resolve().relative_to(root.parent)))
    if outside:
        raise pytest.UsageError(f"test files outside tests/{{{','.join(TIERS)}}}/: {sorted(outside)}: "
                                "move each into the tier of what it needs (see tests/conftest.py)")


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    """A scratch folder shared by the whole test session."""
    return tmp_path_factory.mktemp("ser")


# --- models -------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(session_dir) -> Path:
    """An *untrained* tiny wav2vec2 checkpoint (8 RAVDESS labels, 1 s windows at 16 kHz).

    Good for export parity and serving mechanics; not for accuracy claims.
    """
    from training.model import CheckpointInfo, new_model, save_checkpoint

    out = session_dir / "tiny-untrained"
    model = new_model("tiny", labels=RAVDESS8, seed=0)
    info = CheckpointInfo(labels=RAVDESS8, window_samples=16_000, hop_samples=8_000, base="tiny", corpus="none")
    return save_checkpoint(model, out, info)


# --- training ---


@pytest.fixture(scope="session")
def synth_corpus_dir(session_dir) -> Path:
    """A tiny synthetic RAVDESS-layout corpus (training.training_recipes.TEST recipe: 6 actors x 32 clips, 4 emotions, 16 kHz)."""
    from training.synth import synthesize_corpus
    from training.training_recipes import TEST

    return synthesize_corpus(session_dir / "synth-ravdess", **TEST.synth).root


@pytest.fixture(scope="session")
def trained_result(synth_corpus_dir, session_dir):
    """A tiny wav2vec2 trained on :func:`synth_corpus_dir` (TEST recipe; ~20 s on 2 cores), as a TrainResult."""
    from training.train import train
    from training.training_recipes import TEST

    return train(TEST.config(corpus=synth_corpus_dir, out=session_dir / "tiny-trained"), progress=False)


@pytest.fixture(scope="session")
def trained_checkpoint(trained_result, synth_corpus_dir) -> tuple[Path, Path, Path]:
    """``(checkpoint_dir, corpus_dir, manifest_path)`` of a *trained* tiny model.

    The manifest's ``test`` partition holds the held-out actors' clips (paths
    relative to ``corpus_dir``): use them for int8-vs-fp32 agreement checks.
    """
    return trained_result.checkpoint, synth_corpus_dir, trained_result.manifest


#: The synthetic CREMA-D of the tests: 6 actors (1001..1006) x 24 clips, 4 emotions, 16 kHz.
CREMA_TEST_SYNTH = dict(layout="crema-d", actors=6, emotions=("angry", "happy", "sad", "fearful"),
                        sentences=("DFA", "IEO", "WSI", "TSI"), sample_rate=16_000, seed=0)


@pytest.fixture(scope="session")
def crema_corpus_dir(session_dir) -> Path:
    """A tiny synthetic CREMA-D-layout corpus (:data:`CREMA_TEST_SYNTH`: 144 clips, ~5 s to write)."""
    from training.synth import synthesize_corpus

    return synthesize_corpus(session_dir / "synth-crema-d", **CREMA_TEST_SYNTH).root


@pytest.fixture(scope="session")
def crema_trained_result(crema_corpus_dir, session_dir):
    """A tiny wav2vec2 trained on :func:`crema_corpus_dir` (TEST recipe with batch 8, crema6; ~20 s on 2 shared cores)."""
    from training.train import train
    from training.training_recipes import TEST

    config = TEST.config(corpus=crema_corpus_dir, layout="crema-d", class_set="crema6", out=session_dir / "tiny-crema",
                         batch_size=8)
    return train(config, progress=False)


@pytest.fixture(scope="session")
def cv_result(synth_corpus_dir, session_dir):
    """:func:`training.cv.run_cv` of 3 folds x 15 steps on :func:`synth_corpus_dir` (mechanics, not accuracy; ~15 s)."""
    from training.cv import run_cv
    from training.training_recipes import TEST

    config = TEST.config(corpus=synth_corpus_dir, out=session_dir / "cv", max_steps=15, val_actors=0)
    return run_cv(config, folds=3, progress=False)


# --- serving ---
# Owner: serving + client (deploy/local_triton.py, client/triton_client.py).
# One real tritonserver per test session (``triton_server``), serving the portable
# repository of the tiny untrained model plus two small python-backend models that
# are deliberately *not* the bundle's (for the client's refusal tests).

_PLAIN_MODEL_PY = '''\
"""Test-only python-backend model: echoes input "x" as output "y"."""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
            for r in requests
        ]
'''


def _write_plain_model(root: Path, name: str, *, parameters: dict[str, str]) -> Path:
    """A python-backend model with tensors ``x`` -> ``y`` (not the bundle's), built as a ModelConfig."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, backend="python", max_batch_size=8)
    config.input.add(name="x", data_type=mc.TYPE_FP32, dims=[4])
    config.output.add(name="y", data_type=mc.TYPE_FP32, dims=[4])
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.py").write_text(_PLAIN_MODEL_PY)
    (root / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return root / name


@pytest.fixture(scope="session")
def served_models(triton_server) -> list[str]:
    """Names of the bundle's models the session server serves (``ser_*``: ``ser_fp32``, ``ser_int8``...)."""
    return sorted(name for name, state in triton_server.models().items() if name.startswith("ser_") and state == "READY")


#: The repository runtimes the suite serves; tests that check what both must do take :func:`runtime_server`.
RUNTIMES = ("portable", "native")


@pytest.fixture(scope="session")
def serving_repository(portable_repository, session_dir) -> Path:
    """A copy of :func:`portable_repository` plus ``no_contract`` and ``wrong_tensors`` test models, and ``ser``.

    ``no_contract`` has no ``ser.*`` parameters; ``wrong_tensors`` has them but
    names its tensors ``x``/``y``. Both must be refused by the client with a ContractError.
    ``ser`` is the server-side audio model (limits :data:`SERVING_AUDIO_LIMITS`) over ``ser_int8``/``ser_fp32``;
    ``ser-vad`` (:data:`SERVING_VAD_MODEL`) the same with the voice-activity gate, one instance.
    """
    return _serving_repository(portable_repository, session_dir / "serving-repository")


@pytest.fixture(scope="session")
def native_serving_repository(native_repository, session_dir) -> Path:
    """:func:`serving_repository`'s models over the *native* window models: ``ser`` reaches them through BLS."""
    return _serving_repository(native_repository, session_dir / "serving-repository-native")


def _serving_repository(window_repository: Path, root: Path) -> Path:
    import shutil

    from client.contract import ModelContract

    shutil.copytree(Path(window_repository), root)
    _write_plain_model(root, "no_contract", parameters={})
    contract = ModelContract(labels=RAVDESS8, window_samples=16_000, hop_samples=8_000, variant="fp32", source="test")
    _write_plain_model(root, "wrong_tensors", parameters=contract.to_parameters())
    _write_audio_model(root)
    _write_audio_model(root, name=SERVING_VAD_MODEL, instances=1, vad=True)
    _write_stream_model(root)
    return root


#: Limits of the session server's audio model ``ser``: small, so the hostile-input tests stay cheap.
SERVING_AUDIO_LIMITS = dict(max_bytes=1 << 20, max_duration_s=30.0, max_decoded_samples=1_000_000)
#: The session server's audio model with the voice-activity gate (silero-vad), beside the gateless ``ser``.
SERVING_VAD_MODEL = "ser-vad"


def _write_audio_model(root: Path, *, name: str = "ser", instances: int = 4, vad: bool = False) -> Path:
    """A server-side audio model (export/audio_repository.py) over the copied ``ser_*`` models: ``ser``, or the gated one."""
    from client.audio_service import AudioLimits, SpeechGate
    from client.contract import ModelContract
    from export.audio_repository import AudioModelConfig, write_audio_model
    from export.repository import read_model_config

    params = {k: v.string_value for k, v in read_model_config(root / "ser_int8").parameters.items()}
    contract = ModelContract.from_parameters(params)
    # fp32 first: its answers equal the client-side path's within 1e-4 whatever windows share a batch
    # (dynamic int8 quantizes with one scale per batch, so its scores move a little with the batch's company).
    return write_audio_model(root, contract=contract, runtime="portable",
                             config=AudioModelConfig(name=name, instances=instances, limits=AudioLimits(**SERVING_AUDIO_LIMITS),
                                                     preference=("fp32", "int8"),
                                                     gate=SpeechGate(vad="silero" if vad else "off")))


#: Settings of the session server's streaming model ``ser-stream``: small limits and a short idle time,
#: so the hostile-input and clean-up tests stay cheap.
SERVING_STREAM_SETTINGS = dict(max_calls=6, max_call_s=30.0, idle_timeout_s=3.0, max_chunk_s=5.0)


def _write_stream_model(root: Path) -> Path:
    """The streaming model ``ser-stream`` (export/stream_repository.py) over the copied ``ser_*`` models, fp32 first."""
    from client.contract import ModelContract
    from client.stream_service import StreamSettings
    from export.repository import read_model_config
    from export.stream_repository import StreamModelConfig, write_stream_model

    params = {k: v.string_value for k, v in read_model_config(root / "ser_int8").parameters.items()}
    config = StreamModelConfig(settings=StreamSettings(**SERVING_STREAM_SETTINGS), preference=("fp32", "int8"))
    return write_stream_model(root, contract=ModelContract.from_parameters(params), runtime="portable", config=config)


@pytest.fixture(scope="session")
def triton_server(serving_repository, session_dir):
    """The real tritonserver (bundled in nvidia-pytriton) serving :func:`serving_repository` on free loopback ports.

    Yields a started :class:`deploy.local_triton.LocalTriton` (``grpc_url``,
    ``http_url``, ``metrics_url``); stopped, with its stubs and shm regions
    removed, at the end of the session. Log: ``<session_dir>/triton-serving.log``.
    """
    from deploy.local_triton import LocalTriton

    with LocalTriton(serving_repository, startup_timeout_s=120, log_path=session_dir / "triton-serving.log") as server:
        yield server


@pytest.fixture(scope="session")
def native_triton_server(native_serving_repository, session_dir):
    """:func:`triton_server` for :func:`native_serving_repository`: window models on Triton's ONNX Runtime backend."""
    from deploy.local_triton import LocalTriton

    with LocalTriton(native_serving_repository, startup_timeout_s=120,
                     log_path=session_dir / "triton-serving-native.log") as server:
        yield server


@pytest.fixture(scope="module")
def two_servers(portable_repository):
    """Two real tritonservers of the tiny :func:`portable_repository`, on fixed free ports (a restart keeps the address).

    Module-scoped, never the session's: the tests that take them stop, kill and restart them
    (``exit_timeout_s=2``: a stop is quick).
    """
    from deploy.local_triton import LocalTriton, free_ports

    servers = []
    try:
        for _ in range(2):
            http, grpc, metrics = free_ports(3)
            servers.append(LocalTriton(portable_repository, http_port=http, grpc_port=grpc, metrics_port=metrics,
                                       startup_timeout_s=120, exit_timeout_s=2).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> str:
    """Each repository runtime in turn (``portable``, ``native``): a test taking it runs once per runtime."""
    return request.param


@pytest.fixture
def runtime_server(runtime, request):
    """The session server of :func:`runtime`: :func:`triton_server` or :func:`native_triton_server` (both stay up)."""
    return request.getfixturevalue("triton_server" if runtime == "portable" else "native_triton_server")


@pytest.fixture
def runtime_models(runtime_server) -> list[str]:
    """:func:`served_models` of :func:`runtime_server`."""
    return sorted(name for name, state in runtime_server.models().items() if name.startswith("ser_") and state == "READY")


@pytest.fixture
def runtime_repository(runtime, request) -> Path:
    """The tiny model's repository of :func:`runtime` (``ser_fp32``, ``ser_int8``): read-only."""
    return request.getfixturevalue(f"{runtime}_repository")


@pytest.fixture(scope="session")
def serving_clips(session_dir) -> dict[str, Path]:
    """Seeded audio files for client tests.

    Keys: ``short`` (0.6 s mono 16 kHz PCM_16), ``long`` (2.3 s stereo 22.05 kHz
    float: resampled, 4 windows), ``very_long`` (6.2 s mono 16 kHz: 12 windows,
    more than one request of max_batch_size 8), ``empty`` (0 bytes), ``garbage``
    (random bytes named .wav), ``silent`` (0.5 s of zeros).
    """
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(1234)
    out = session_dir / "serving-clips"
    out.mkdir()

    def voice(seconds: float, sr: int, f0: float) -> np.ndarray:
        t = np.arange(int(seconds * sr)) / sr
        pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
        y = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / sr) + 0.01 * rng.standard_normal(t.size)
        return y.astype(np.float32)

    clips = {
        "short": out / "short.wav",
        "long": out / "long.wav",
        "very_long": out / "very_long.flac",
        "empty": out / "empty.wav",
        "garbage": out / "garbage.wav",
        "silent": out / "silent.wav",
    }
    sf.write(clips["short"], voice(0.6, 16_000, 180.0), 16_000, subtype="PCM_16")
    stereo = np.stack([voice(2.3, 22_050, 220.0), voice(2.3, 22_050, 150.0)], axis=1)
    sf.write(clips["long"], stereo, 22_050, subtype="FLOAT")
    sf.write(clips["very_long"], voice(6.2, 16_000, 120.0), 16_000)
    clips["empty"].write_bytes(b"")
    clips["garbage"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    sf.write(clips["silent"], np.zeros(8_000, dtype=np.float32), 16_000)
    return clips


# --- export ---
# Owner: export (export/pipeline.py, export/repository/). Session-scoped: the tiny
# untrained checkpoint is exported once (fp32 + int8, ~2 s) and both repository
# runtimes are written from that one export.


@pytest.fixture(scope="session")
def exported_tiny_result(tiny_checkpoint, session_dir):
    """:class:`export.pipeline.ExportResult` of :func:`tiny_checkpoint` exported to fp32 + int8."""
    from export.pipeline import export_checkpoint

    return export_checkpoint(tiny_checkpoint, session_dir / "export-tiny", variants=("fp32", "int8"), progress=False)


@pytest.fixture(scope="session")
def exported_tiny(exported_tiny_result) -> Path:
    """Export directory of the tiny model: ``<dir>/{fp32,int8}/{model.onnx,recipe.json}``. Treat as read-only."""
    return exported_tiny_result.out_dir


@pytest.fixture(scope="session")
def portable_repository(exported_tiny, session_dir) -> Path:
    """Portable (python backend + ONNX Runtime) Triton repository with ``ser_fp32`` and ``ser_int8``.

    What the local tritonserver serves. Treat as read-only (copy it to change it).
    """
    from export.repository import write_repository

    root = session_dir / "repository-portable"
    write_repository(exported_tiny, root, runtime="portable", variants=("fp32", "int8"))
    return root


@pytest.fixture(scope="session")
def native_repository(exported_tiny, session_dir) -> Path:
    """Native (``onnxruntime_onnx``) Triton repository with ``ser_fp32`` (KIND_AUTO) and ``ser_int8`` (KIND_CPU).

    Served here by Triton's ONNX Runtime backend that ``make venv`` builds. Treat as read-only.
    """
    from export.repository import write_repository

    root = session_dir / "repository-native"
    write_repository(exported_tiny, root, runtime="native", variants=("fp32", "int8"))
    return root


@pytest.fixture(scope="session")
def exported_trained(trained_checkpoint, session_dir) -> Path:
    """Export directory of the *trained* tiny model with every variant: ``fp32``, ``int8`` (default preset), ``fp16``."""
    from export.pipeline import export_checkpoint

    checkpoint, _, _ = trained_checkpoint
    out = session_dir / "export-trained-all"
    export_checkpoint(checkpoint, out, variants=("fp32", "int8", "fp16"), progress=False)
    return out


@pytest.fixture(scope="session")
def held_out_clips(trained_checkpoint):
    """``(loaded clips, CheckpointInfo)``: the trained model's test split, decoded once (training.data.load_clips)."""
    from training.data import load_clips
    from training.folds import read_manifest
    from training.model import CheckpointInfo

    checkpoint, corpus, manifest = trained_checkpoint
    info = CheckpointInfo.load(checkpoint)
    clips = read_manifest(manifest, root=corpus).test
    return load_clips(clips, labels=info.labels, sample_rate=info.sample_rate), info


@pytest.fixture(scope="session")
def quant_report(exported_trained, trained_checkpoint, session_dir):
    """:class:`export.report.QuantReport` of :func:`exported_trained` on the trained model's test split."""
    from export.report import ReportConfig, quantization_report

    _, corpus, manifest = trained_checkpoint
    return quantization_report(exported_trained, manifest=manifest, roots=corpus, out_dir=session_dir / "quant-report",
                               config=ReportConfig(warmup=1, repeat=3, threads=1))


# --- Hugging Face checkpoints ---
# Owner: model import (training/hf_import.py). Tiny models of each family, built from a
# config with random weights (no hub here), saved as a user's fine-tuned checkpoint is:
# ``save_pretrained`` plus a ``preprocessor_config.json``.

#: Family -> (config class, shape options, the feature extractor's do_normalize, return_attention_mask).
#: Between them the four cover every combination of normalisation and attention mask.
HF_FAMILIES = {
    "wav2vec2": ("Wav2Vec2Config", dict(feat_extract_norm="group", do_stable_layer_norm=False), True, False),
    "hubert": ("HubertConfig", dict(feat_extract_norm="group", do_stable_layer_norm=False), False, False),
    "wavlm": ("WavLMConfig", dict(feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=16,
                                  max_bucket_distance=64), False, True),
    "data2vec-audio": ("Data2VecAudioConfig", dict(num_conv_pos_embeddings=5, conv_pos_kernel_size=5), True, True),
}
HF_LABELS = ("angry", "happy", "neutral", "sad")


def build_tiny_hf_checkpoint(family: str, folder: Path, *, labels=HF_LABELS, seed: int = 0, **config_options) -> Path:
    """Save a tiny random ``<Family>ForSequenceClassification`` and its feature extractor config into ``folder``.

    The head's weights are scaled up so that its answers are decisive (not near-uniform).
    """
    import torch
    import transformers
    from transformers import AutoModelForAudioClassification, Wav2Vec2FeatureExtractor

    config_class, shape, normalize, mask = HF_FAMILIES[family]
    options = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, classifier_proj_size=16,
                   num_labels=len(labels), id2label=dict(enumerate(labels)),
                   label2id={lab: i for i, lab in enumerate(labels)})
    options.update(shape)
    if family == "data2vec-audio":
        options.pop("num_conv_pos_embedding_groups")
    options.update(config_options)
    torch.manual_seed(seed)
    model = AutoModelForAudioClassification.from_config(getattr(transformers, config_class)(**options)).eval()
    with torch.no_grad():
        model.projector.weight.mul_(8.0)
        model.classifier.weight.mul_(8.0)
    model.save_pretrained(str(folder))
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=normalize,
                             return_attention_mask=mask).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def hf_checkpoints(session_dir) -> dict[str, Path]:
    """``{family: folder}`` of tiny Hugging Face checkpoints (:data:`HF_FAMILIES`). Treat as read-only."""
    return {family: build_tiny_hf_checkpoint(family, session_dir / "hf" / family) for family in HF_FAMILIES}
