"""Write and validate the streaming model ``ser-stream`` of a Triton repository.

Layout, in both runtimes (python-backend code in either)::

    <repo>/ser-stream/config.pbtxt       a ModelConfig message written with text_format
    <repo>/ser-stream/1/model.py         export/served/stream_model.py
    <repo>/ser-stream/1/audio_model.py   export/served/audio_model.py (its BLS code is shared)
    <repo>/ser-stream/1/client/...       the client's contract modules, with client/stream_service.py
    <repo>/ser-stream/1/silero_vad.onnx  the voice-activity detector, from the installed silero-vad package

The config is the sequence batcher's (Oldest strategy: every chunk of a call to one
instance, chunks of different calls batched; START/END/CORRID control inputs, CORRID
UINT64), decoupled (``model_transaction_policy``), with ``max_sequence_idle_microseconds``
equal to the settings' idle timeout so Triton and the model forget an idle call together.
``max_candidate_sequences`` is twice the calls the instances hold, so a refused START
is answered with the model's error instead of waiting in Triton's backlog.
The sha256 of the packaged code and of the detector are parameters; validation
refuses a model whose files drifted from them.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import client as _client_package
from client.contract import ModelContract
from client.errors import ConfigError, ContractError
from client.stream_service import (
    CONTROL_CORRID,
    CONTROL_END,
    CONTROL_START,
    INPUT_PCM,
    INPUT_PCM_S16,
    INPUTS,
    OUTPUTS,
    STREAM_MODEL,
    STREAM_PARAM_PREFIX,
    StreamSettings,
)
from client.vad import VAD_FILENAME, VAD_OFF
from export.audio_repository import (
    AUDIO_MODEL_SOURCE,
    PACKAGED_MODULES,
    PREFERENCE,
    code_sha256,
    inner_model_problems,
    installed_vad_model,
    packaged_code_problems,
    python_model_problems,
    string_parameters,
    vad_file_problems,
    window_models,
)
from export.errors import ExportError, ModelConfigError
from export.pipeline import ensure_writable_dir, install_dir
from export.recipe import sha256_file
from export.repository.config import RUNTIMES
from export.repository.names import CONFIG_FILENAME, VERSION
from export.repository.pbtxt import read_model_config, write_config

STREAM_MODEL_SOURCE = Path(__file__).parent / "served" / "stream_model.py"
STREAM_MODULES = PACKAGED_MODULES + ("stream_service.py",)  # vad.py is among the audio model's
CODE_PARAMETER = STREAM_PARAM_PREFIX + "code_sha256"
VAD_PARAMETER = STREAM_PARAM_PREFIX + "vad_sha256"
INNER_PARAMETER = STREAM_PARAM_PREFIX + "inner_models"
#: Chunks of different calls one ``execute`` takes; their speech windows go to the window model together.
DEFAULT_MAX_BATCH = 16
#: How long the sequence batcher waits to fill a batch of chunks, µs (well under a 100 ms chunk).
DEFAULT_QUEUE_DELAY_US = 2000


@dataclass(frozen=True)
class StreamModelConfig:
    """How the streaming model is written.

    Attributes:
        name: model name in the repository.
        instances: ``instance_group`` count (CPU); each holds up to ``settings.max_calls`` calls.
        max_batch_size: chunks of different calls per ``execute``.
        settings: hop, smoothing, hysteresis, limits, detector (:class:`client.stream_service.StreamSettings`).
        preference: window-model variants in preference order (None: by runtime).
        vad_model: silero-vad's ONNX file (None: the installed ``silero-vad`` package's
            ``silero_vad/data/silero_vad.onnx``); unused with ``settings.vad == "off"``.
    """

    name: str = STREAM_MODEL
    instances: int = 1
    max_batch_size: int = DEFAULT_MAX_BATCH
    settings: StreamSettings = field(default_factory=StreamSettings)
    preference: tuple[str, ...] | None = None
    vad_model: Path | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"name={self.name!r}: need a plain folder name")
        if self.instances < 1 or self.max_batch_size < 1:
            raise ConfigError(f"instances={self.instances}, max_batch_size={self.max_batch_size}: must be >= 1")
        if not isinstance(self.settings, StreamSettings):
            raise ConfigError(f"settings={self.settings!r}: expected a StreamSettings")
        if self.preference is not None:
            object.__setattr__(self, "preference", tuple(self.preference))


def packaged_files(*, vad: Path | None) -> dict[str, Path]:
    """``{path inside 1/: source}``: the model, the audio model's file, the client modules, the detector."""
    root = Path(_client_package.__file__).resolve().parent
    files = {"model.py": STREAM_MODEL_SOURCE, "audio_model.py": AUDIO_MODEL_SOURCE}
    files.update({f"client/{m}": root / m for m in STREAM_MODULES})
    if vad is not None:
        files[VAD_FILENAME] = vad
    return files


def _code_files() -> list[str]:
    return sorted(packaged_files(vad=None))


def build_stream_model_config(*, contract: ModelContract, inner, config: StreamModelConfig, code: str, vad_sha: str):
    """Fill the streaming model's ``ModelConfig`` message (sequence batching, decoupled, parameters).

    Returns:
        ``tritonclient.grpc.model_config_pb2.ModelConfig``.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    from client.audio_service import inner_models_to_parameter

    msg = mc.ModelConfig(name=config.name, backend="python", max_batch_size=config.max_batch_size)
    for name, dtype, dims in INPUTS:
        msg.input.add(name=name, data_type=mc.DataType.Value(dtype), dims=list(dims), optional=True,
                      allow_ragged_batch=name in (INPUT_PCM, INPUT_PCM_S16))
    for name, dtype, dims in OUTPUTS:
        msg.output.add(name=name, data_type=mc.DataType.Value(dtype), dims=list(dims))
    msg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=config.instances)
    msg.model_transaction_policy.decoupled = True
    seq = msg.sequence_batching
    seq.max_sequence_idle_microseconds = int(config.settings.idle_timeout_s * 1_000_000)
    seq.oldest.max_candidate_sequences = 2 * config.settings.max_calls * config.instances
    seq.oldest.max_queue_delay_microseconds = DEFAULT_QUEUE_DELAY_US
    Kind = mc.ModelSequenceBatching.Control
    for name, kind in ((CONTROL_START, Kind.CONTROL_SEQUENCE_START), (CONTROL_END, Kind.CONTROL_SEQUENCE_END)):
        seq.control_input.add(name=name).control.add(kind=kind, int32_false_true=[0, 1])
    seq.control_input.add(name=CONTROL_CORRID).control.add(kind=Kind.CONTROL_SEQUENCE_CORRID, data_type=mc.TYPE_UINT64)
    served = ModelContract(labels=contract.labels, window_samples=contract.window_samples, sample_rate=contract.sample_rate,
                           hop_samples=contract.hop_samples, variant="stream", source=contract.source)
    params = {**served.to_parameters(), **config.settings.to_parameters(),
              INNER_PARAMETER: inner_models_to_parameter(inner), CODE_PARAMETER: code, VAD_PARAMETER: vad_sha}
    for key, value in params.items():
        msg.parameters[key].string_value = value
    return msg


def write_stream_model(repo_dir: str | Path, *, contract: ModelContract, runtime: str,
                       config: StreamModelConfig | None = None) -> Path:
    """Write (or replace) the streaming model in a repository that holds its window models.

    Staged in a temporary folder inside ``repo_dir``, validated, then renamed into place.

    Raises:
        ExportError: no window model of that contract, or no silero-vad to copy.
        ModelConfigError: the written model failed validation (a bug, reported as such).
    """
    config = config or StreamModelConfig()
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime!r}: expected one of {list(RUNTIMES)}")
    settings = config.settings
    settings.hop_samples(contract)  # the default hop must fit this contract's window
    vad = None if settings.vad == VAD_OFF else (config.vad_model or installed_vad_model())
    repo_dir = Path(repo_dir)
    ensure_writable_dir(repo_dir, what="repository path")
    inner = window_models(repo_dir, contract=contract, preference=config.preference or PREFERENCE[runtime], exclude=config.name)
    if not inner:
        raise ExportError(f"{repo_dir}: no window model with labels {list(contract.labels)} and window "
                          f"{contract.window_samples} to send the streaming model's windows to (write the variants first)")
    with tempfile.TemporaryDirectory(prefix=f".{config.name}.tmp-", dir=repo_dir) as tmp:
        stage = Path(tmp) / config.name
        for rel, source in packaged_files(vad=vad).items():
            (stage / VERSION / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, stage / VERSION / rel)
        message = build_stream_model_config(contract=contract, inner=inner, config=config,
                                            code=code_sha256(stage / VERSION, _code_files()),
                                            vad_sha=sha256_file(vad) if vad is not None else "")
        write_config(message, stage / CONFIG_FILENAME)
        validate_stream_model_dir(stage, name=config.name, repository=repo_dir)
        install_dir(stage, repo_dir / config.name)
    return repo_dir / config.name


def validate_stream_model_dir(model_dir: str | Path, *, name: str | None = None, repository: str | Path | None = None):
    """Parse the streaming model's config back and check it, its files and its window models.

    Checks: ``name`` = folder; python backend, decoupled, ``max_batch_size`` >= 1, KIND_CPU;
    the sequence batcher (Oldest, START/END/CORRID, idle time = the settings' timeout); the
    inputs and outputs of :mod:`client.stream_service`; contract, settings and window-model
    parameters; the packaged code and detector against their sha256.

    Returns:
        The parsed ``ModelConfig``.

    Raises:
        ModelConfigError: naming the config file and every problem.
    """
    from client.audio_service import inner_models_from_parameters

    model_dir = Path(model_dir)
    name = name or model_dir.name
    repository = Path(repository) if repository is not None else model_dir.parent
    msg = read_model_config(model_dir)
    problems = python_model_problems(msg, name)
    if msg.max_batch_size < 1:
        problems.append(f"max_batch_size: {msg.max_batch_size}, expected >= 1 (chunks of several calls per execute)")
    if not msg.model_transaction_policy.decoupled:
        problems.append("model_transaction_policy.decoupled: must be true (a chunk gets zero or more updates)")
    seq = msg.sequence_batching
    controls = {c.name: c.control[0].kind for c in seq.control_input if c.control}
    if not msg.HasField("sequence_batching") or not seq.HasField("oldest") or sorted(controls) != sorted(
            (CONTROL_START, CONTROL_END, CONTROL_CORRID)):
        problems.append("sequence_batching: need the Oldest strategy with control inputs START, END and CORRID")
    got_in = [(t.name, t.data_type, tuple(t.dims), t.optional) for t in msg.input]
    from tritonclient.grpc import model_config_pb2 as mc

    want_in = [(n, mc.DataType.Value(d), tuple(s), True) for n, d, s in INPUTS]
    if got_in != want_in:
        problems.append(f"input: {got_in}, expected {want_in} (all optional)")
    if [(t.name, t.data_type, tuple(t.dims)) for t in msg.output] != [(n, mc.DataType.Value(d), tuple(s)) for n, d, s in OUTPUTS]:
        problems.append("output: not the outputs of client.stream_service.OUTPUTS")
    params = string_parameters(msg)
    contract = settings = None
    try:
        contract = ModelContract.from_parameters(params, model=msg.name)
        settings = StreamSettings.from_parameters(params, model=msg.name)
        inner = inner_models_from_parameters(params, model=msg.name, prefix=STREAM_PARAM_PREFIX)
    except (ConfigError, ContractError) as exc:
        problems.append(f"parameters: {exc}")
        inner = ()
    if settings is not None and seq.max_sequence_idle_microseconds != int(settings.idle_timeout_s * 1_000_000):
        problems.append(f"sequence_batching.max_sequence_idle_microseconds: {seq.max_sequence_idle_microseconds}, "
                        f"expected {STREAM_PARAM_PREFIX}idle_timeout_s in µs (Triton and the model forget a call together)")
    problems += inner_model_problems(inner, contract=contract, repository=repository, parameter=INNER_PARAMETER, model=msg.name)
    version = model_dir / VERSION
    problems += packaged_code_problems(version, _code_files(), recorded=params.get(CODE_PARAMETER, ""), parameter=CODE_PARAMETER)
    if settings is not None and settings.vad != VAD_OFF:
        problems += vad_file_problems(version, recorded=params.get(VAD_PARAMETER), parameter=VAD_PARAMETER)
    if problems:
        raise ModelConfigError(f"{model_dir / CONFIG_FILENAME}: " + "; ".join(problems))
    return msg


def is_stream_model_dir(model_dir: str | Path) -> bool:
    """Whether a model folder holds a streaming model (its config names ``ser.stream.code_sha256``)."""
    try:
        return CODE_PARAMETER in read_model_config(model_dir).parameters
    except ModelConfigError:
        return False


__all__ = [
    "StreamModelConfig",
    "build_stream_model_config",
    "installed_vad_model",
    "is_stream_model_dir",
    "packaged_files",
    "validate_stream_model_dir",
    "write_stream_model",
]
