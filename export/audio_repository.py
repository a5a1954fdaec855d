"""Write and validate the server-side audio model ``ser`` of a Triton repository.

Layout, in both runtimes (the model is python-backend code in either)::

    <repo>/ser/config.pbtxt              a ModelConfig message written with text_format
    <repo>/ser/1/model.py                export/served/audio_model.py
    <repo>/ser/1/client/{__init__,errors,contract,vad,audio,timeline,audio_service}.py
                                         the audio contract, copied from the installed client package
    <repo>/ser/1/silero_vad.onnx         with the speech gate only: silero-vad, from the installed package

The client modules travel with the model, so the NGC container (which has no
bundle installed) and this host run the same decoding, windowing and aggregation
as the client; their sha256 is the config parameter ``ser.audio.code_sha256`` and
:func:`validate_audio_model_dir` refuses a model whose files drifted from it. The
container still needs the third-party libraries they import (numpy, soundfile,
soxr, and onnxruntime for the speech gate): ``deploy/Dockerfile`` derives that image
from the pinned NGC release. The speech gate's detector and settings are
``ser.audio.vad*`` parameters, its file's sha256 ``ser.audio.vad_sha256``; the gate
needs a 16 kHz contract (silero-vad's rate).

The config carries the window model's contract (``ser.labels``, ``ser.window_samples``...),
the limits (:class:`client.audio_service.AudioLimits`), the head kind and the window
models to send windows to, in preference order: every bundle model of the repository
with the same labels, rate, window and hop; fp16/fp32 first in a native repository (a
GPU node loads one of them), int8 first in a portable one.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import client as _client_package
from client.audio_service import (
    AUDIO_MODEL,
    AUDIO_PARAM_PREFIX,
    HEAD_CATEGORICAL,
    HEAD_PARAMETER,
    HEADS,
    INPUTS,
    OUTPUTS,
    AudioLimits,
    InnerModel,
    SpeechGate,
    inner_models_from_parameters,
    inner_models_to_parameter,
)
from client.contract import INPUT_NAMES, OUTPUT_NAMES, PARAM_PREFIX, ModelContract
from client.errors import ConfigError, ContractError
from client.vad import VAD_FILENAME
from export.errors import ExportError, ModelConfigError
from export.pipeline import ensure_writable_dir, install_dir
from export.recipe import sha256_file
from export.repository.config import RUNTIMES
from export.repository.names import CONFIG_FILENAME, VERSION
from export.repository.pbtxt import read_model_config, write_config

#: The client modules the audio model imports, copied into ``1/client/``.
PACKAGED_MODULES = ("__init__.py", "errors.py", "contract.py", "vad.py", "audio.py", "timeline.py", "audio_service.py")
AUDIO_MODEL_SOURCE = Path(__file__).parent / "served" / "audio_model.py"
#: Window-model variants in preference order, per runtime.
PREFERENCE = {"native": ("fp16", "fp32", "int8"), "portable": ("int8", "fp32", "fp16")}
#: Instances of the audio model: clips decoded at once, each in its own stub process.
DEFAULT_INSTANCES = 4
CODE_PARAMETER = AUDIO_PARAM_PREFIX + "code_sha256"
INNER_PARAMETER = AUDIO_PARAM_PREFIX + "inner_models"
VAD_PARAMETER = AUDIO_PARAM_PREFIX + "vad_sha256"


@dataclass(frozen=True)
class AudioModelConfig:
    """How the audio model is written.

    Attributes:
        name: model name in the repository.
        instances: ``instance_group`` count (CPU): clips decoded concurrently; each keeps
            its windows in flight at the window model, whose batcher merges them.
        limits: what is refused (encoded size, duration, decoded samples, silence).
        preference: window-model variants in preference order (None: by runtime, :data:`PREFERENCE`).
        gate: the voice-activity gate (default off: every window is classified).
        vad_model: silero-vad's ONNX file (None: the installed ``silero-vad`` package's); unused with the gate off.
    """

    name: str = AUDIO_MODEL
    instances: int = DEFAULT_INSTANCES
    limits: AudioLimits = field(default_factory=AudioLimits)
    preference: tuple[str, ...] | None = None
    gate: SpeechGate = field(default_factory=SpeechGate)
    vad_model: Path | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"name={self.name!r}: need a plain folder name")
        if self.instances < 1:
            raise ConfigError(f"instances={self.instances}: must be >= 1")
        if not isinstance(self.limits, AudioLimits):
            raise ConfigError(f"limits={self.limits!r}: expected an AudioLimits")
        if not isinstance(self.gate, SpeechGate):
            raise ConfigError(f"gate={self.gate!r}: expected a SpeechGate")
        if self.preference is not None:
            object.__setattr__(self, "preference", tuple(self.preference))


def packaged_files() -> dict[str, Path]:
    """``{path inside 1/: source file}`` of what the writer copies: the model and the client modules it imports."""
    root = Path(_client_package.__file__).resolve().parent
    files = {"model.py": AUDIO_MODEL_SOURCE}
    files.update({f"client/{m}": root / m for m in PACKAGED_MODULES})
    return files


def installed_vad_model() -> Path:
    """silero-vad's ONNX file from the installed ``silero-vad`` package (the audio and streaming models' detector).

    Raises:
        ExportError: the package is not installed (``pip install silero-vad``, or write the model without a detector).
    """
    try:
        import silero_vad  # noqa: F401 - only its data folder is used; its torch code is never imported
    except ImportError:
        path = None
    else:
        path = Path(silero_vad.__file__).parent / "data" / VAD_FILENAME
    if path is None or not path.is_file():
        raise ExportError("the voice-activity detector needs the silero-vad package (pip install silero-vad), "
                          "or write the model without one (--stream-no-vad; without --audio-vad)")
    return path


def vad_file_problems(version: Path, *, recorded: str | None, parameter: str) -> list[str]:
    """Whether a version folder's detector file is there and hashes to ``recorded``."""
    vad = version / VAD_FILENAME
    if not vad.is_file() or sha256_file(vad) != recorded:
        return [f"{VERSION}/{VAD_FILENAME}: missing or not the file of parameters[{parameter}]"]
    return []


def code_sha256(version_dir: Path, relative: list[str] | None = None) -> str:
    """sha256 over the packaged files of a version folder (each as ``path NUL bytes NUL``, sorted by path)."""
    digest = hashlib.sha256()
    for rel in sorted(relative or packaged_files()):
        digest.update(rel.encode() + b"\0" + (version_dir / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def string_parameters(msg) -> dict[str, str]:
    """``{key: string_value}`` of a ModelConfig message's parameters."""
    return {k: v.string_value for k, v in msg.parameters.items()}


def same_audio_contract(a: ModelContract, b: ModelContract) -> bool:
    """Whether two contracts cut and label audio alike (labels, rate, window, hop)."""
    return (a.labels, a.sample_rate, a.window_samples, a.hop_samples) == (b.labels, b.sample_rate, b.window_samples, b.hop_samples)


def window_models(repo_dir: Path, *, contract: ModelContract, preference: tuple[str, ...], exclude: str = "") -> list[InnerModel]:
    """The repository's window models serving ``contract``, in ``preference`` order of their variant.

    A window model is any model whose config takes ``waveform``/``num_samples`` and gives
    ``logits``/``probabilities`` with the bundle's contract parameters; others are ignored.
    """
    found: list[tuple[int, str, InnerModel]] = []
    for model_dir in sorted(p for p in Path(repo_dir).iterdir() if (p / CONFIG_FILENAME).is_file() and p.name != exclude):
        try:
            msg = read_model_config(model_dir)
            theirs = ModelContract.from_parameters(string_parameters(msg), model=model_dir.name)
        except (ModelConfigError, ContractError):
            continue
        if sorted(t.name for t in msg.input) != sorted(INPUT_NAMES) or sorted(t.name for t in msg.output) != sorted(OUTPUT_NAMES):
            continue
        if msg.max_batch_size < 1 or not same_audio_contract(theirs, contract):
            continue
        rank = preference.index(theirs.variant) if theirs.variant in preference else len(preference)
        found.append((rank, model_dir.name, InnerModel(model_dir.name, int(msg.max_batch_size))))
    return [m for _, _, m in sorted(found, key=lambda t: (t[0], t[1]))]


def build_audio_model_config(*, contract: ModelContract, inner: list[InnerModel], config: AudioModelConfig, code: str,
                             vad_sha: str = ""):
    """Fill the audio model's ``ModelConfig`` message.

    Args:
        contract: the window models' contract (labels, rate, window, hop).
        inner: window models in preference order.
        config: name, instances, limits, gate.
        code: sha256 of the packaged files (:func:`code_sha256`).
        vad_sha: sha256 of the detector file (with the gate on).

    Returns:
        ``tritonclient.grpc.model_config_pb2.ModelConfig``.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    msg = mc.ModelConfig(name=config.name, backend="python", max_batch_size=0)
    for name, dtype, dims in INPUTS:
        msg.input.add(name=name, data_type=mc.DataType.Value(dtype), dims=list(dims), optional=True)
    for name, dtype, dims in OUTPUTS:
        msg.output.add(name=name, data_type=mc.DataType.Value(dtype), dims=list(dims))
    msg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=config.instances)
    served = ModelContract(labels=contract.labels, window_samples=contract.window_samples, sample_rate=contract.sample_rate,
                           hop_samples=contract.hop_samples, variant="audio", source=contract.source)
    params = {**served.to_parameters(), **config.limits.to_parameters(), **config.gate.to_parameters(),
              HEAD_PARAMETER: HEAD_CATEGORICAL, INNER_PARAMETER: inner_models_to_parameter(inner), CODE_PARAMETER: code}
    if config.gate.on:
        params[VAD_PARAMETER] = vad_sha
    for key, value in params.items():
        msg.parameters[key].string_value = value
    return msg


def write_audio_model(repo_dir: str | Path, *, contract: ModelContract, runtime: str, config: AudioModelConfig | None = None) -> Path:
    """Write (or replace) the audio model in a repository that holds its window models.

    Staged in a temporary folder inside ``repo_dir``, validated, then renamed into place.

    Args:
        repo_dir: the repository (its window models already written).
        contract: the contract of the window models to use.
        runtime: ``portable`` or ``native`` (the window-model preference).
        config: name, instances, limits, preference, gate.

    Returns:
        The model directory.

    Raises:
        ConfigError: the gate on a contract whose rate is not 16 kHz.
        ExportError: no window model of that contract in the repository, or no silero-vad to copy.
        ModelConfigError: the written model failed validation (a bug, reported as such).
    """
    config = config or AudioModelConfig()
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime!r}: expected one of {list(RUNTIMES)}")
    config.gate.check_rate(contract.sample_rate)
    vad = (config.vad_model or installed_vad_model()) if config.gate.on else None
    repo_dir = Path(repo_dir)
    ensure_writable_dir(repo_dir, what="repository path")
    inner = window_models(repo_dir, contract=contract, preference=config.preference or PREFERENCE[runtime], exclude=config.name)
    if not inner:
        raise ExportError(f"{repo_dir}: no window model with labels {list(contract.labels)} and window "
                          f"{contract.window_samples} to send the audio model's windows to (write the variants first)")
    target = repo_dir / config.name
    with tempfile.TemporaryDirectory(prefix=f".{config.name}.tmp-", dir=repo_dir) as tmp:
        stage = Path(tmp) / config.name
        for rel, source in packaged_files().items():
            (stage / VERSION / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, stage / VERSION / rel)
        if vad is not None:
            shutil.copyfile(vad, stage / VERSION / VAD_FILENAME)
        message = build_audio_model_config(contract=contract, inner=inner, config=config, code=code_sha256(stage / VERSION),
                                           vad_sha=sha256_file(vad) if vad is not None else "")
        write_config(message, stage / CONFIG_FILENAME)
        validate_audio_model_dir(stage, name=config.name, repository=repo_dir)
        install_dir(stage, target)
    return target


def _io_problems(msg, mc) -> list[str]:
    problems = []
    for kind, declared, expected in (("input", msg.input, INPUTS), ("output", msg.output, OUTPUTS)):
        got = [(t.name, mc.DataType.Name(t.data_type), tuple(t.dims)) for t in declared]
        if got != [(n, d, tuple(s)) for n, d, s in expected]:
            problems.append(f"{kind}: {got}, expected {[(n, d, tuple(s)) for n, d, s in expected]}")
    if any(not t.optional for t in msg.input):
        problems.append(f"input: {[t.name for t in msg.input if not t.optional]} must be optional (audio xor pcm + sample_rate)")
    return problems


def validate_audio_model_dir(model_dir: str | Path, *, name: str | None = None, repository: str | Path | None = None):
    """Parse the audio model's config back and check it, its files and its window models.

    Checks: field names and enums; ``name`` = folder; python backend, ``max_batch_size`` 0,
    KIND_CPU instances; the inputs and outputs of :mod:`client.audio_service` (all inputs
    optional); the contract, limits, head and window-model parameters; that every window
    model named is in ``repository`` (default: the model's parent) with the same contract
    and ``max_batch_size``; the packaged files and their ``ser.audio.code_sha256``.

    Returns:
        The parsed ``ModelConfig``.

    Raises:
        ModelConfigError: naming the config file and every problem.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    model_dir = Path(model_dir)
    name = name or model_dir.name
    repository = Path(repository) if repository is not None else model_dir.parent
    msg = read_model_config(model_dir)
    problems = python_model_problems(msg, name)
    if msg.max_batch_size != 0:
        problems.append(f"max_batch_size: {msg.max_batch_size}, expected 0 (one clip per request; windows are batched at the window model)")
    if not msg.instance_group or any(g.kind != mc.ModelInstanceGroup.KIND_CPU or g.count < 1 for g in msg.instance_group):
        problems.append("instance_group: need KIND_CPU instances with count >= 1 (decoding runs on the CPU)")
    problems += _io_problems(msg, mc)
    params = string_parameters(msg)
    contract = None
    try:
        contract = ModelContract.from_parameters(params, model=msg.name)
    except ContractError as exc:
        problems.append(f"parameters: {exc}")
    try:
        AudioLimits.from_parameters(params, model=msg.name)
    except ConfigError as exc:
        problems.append(f"parameters: {exc}")
    try:
        gate = SpeechGate.from_parameters(params, model=msg.name)
        if contract is not None:
            gate.check_rate(contract.sample_rate)
    except ConfigError as exc:
        problems.append(f"parameters: {exc}")
    else:
        if gate.on:
            problems += vad_file_problems(model_dir / VERSION, recorded=params.get(VAD_PARAMETER), parameter=VAD_PARAMETER)
    if params.get(HEAD_PARAMETER) not in HEADS:
        problems.append(f"parameters[{HEAD_PARAMETER}]: {params.get(HEAD_PARAMETER)!r}, expected one of {list(HEADS)}")
    try:
        inner = inner_models_from_parameters(params, model=msg.name)
    except ConfigError as exc:
        problems.append(f"parameters: {exc}")
        inner = ()
    problems += inner_model_problems(inner, contract=contract, repository=repository, parameter=INNER_PARAMETER, model=msg.name)
    problems += packaged_code_problems(model_dir / VERSION, list(packaged_files()), recorded=params.get(CODE_PARAMETER, ""),
                                       parameter=CODE_PARAMETER)
    if problems:
        raise ModelConfigError(f"{model_dir / CONFIG_FILENAME}: " + "; ".join(problems))
    return msg


def python_model_problems(msg, name: str) -> list[str]:
    """What a bundle python-backend model's config gets wrong in its name (= folder) and backend."""
    problems = []
    if msg.name != name:
        problems.append(f"name: {msg.name!r}, but the folder is {name!r} (Triton requires them equal)")
    if msg.backend != "python" or msg.platform:
        problems.append(f"backend/platform: {msg.backend!r}/{msg.platform!r}, expected the python backend")
    return problems


def inner_model_problems(inner, *, contract: ModelContract | None, repository: Path, parameter: str, model: str) -> list[str]:
    """What is wrong with the window models a python-backend model names: missing, another contract or max_batch_size.

    Args:
        inner: the :class:`InnerModel` s named in ``parameter``.
        contract: the naming model's contract (None: it did not parse; only presence and batch size are checked).
        repository: where the window models must be.
        parameter: the config parameter that names them (for the messages).
        model: the naming model's name (for the messages).
    """
    problems = []
    for window_model in inner:
        field_name = f"parameters[{parameter}][{window_model.name}]"
        if not (repository / window_model.name / CONFIG_FILENAME).is_file():
            problems.append(f"{field_name}: no such model in {repository}")
            continue
        theirs = read_model_config(repository / window_model.name)
        if theirs.max_batch_size != window_model.max_batch_size:
            problems.append(f"{field_name}: max_batch_size {window_model.max_batch_size}, but its config says {theirs.max_batch_size}")
        try:
            their_contract = ModelContract.from_parameters(string_parameters(theirs), model=window_model.name)
        except ContractError as exc:
            problems.append(f"{field_name}: {exc}")
            continue
        if contract is not None and not same_audio_contract(contract, their_contract):
            problems.append(f"{field_name}: its labels/rate/window/hop differ from {PARAM_PREFIX}* of {model!r}")
    return problems


def packaged_code_problems(version: Path, relative: list[str], *, recorded: str, parameter: str) -> list[str]:
    """Whether the packaged files ``relative`` of a version folder are all there and hash to ``recorded``."""
    missing = [rel for rel in relative if not (version / rel).is_file()]
    if missing:
        return [f"{VERSION}/: missing packaged files {missing}"]
    if code_sha256(version, relative) != recorded:
        return [f"parameters[{parameter}]: {recorded[:12]}… is not the sha256 of the "
                f"packaged files in {VERSION}/ (edited after writing? write the model again)"]
    return []


def is_audio_model_dir(model_dir: str | Path) -> bool:
    """Whether a model folder holds an audio model (its config names the ``ser.audio.head`` parameter)."""
    try:
        return HEAD_PARAMETER in read_model_config(model_dir).parameters
    except ModelConfigError:
        return False


def installed_code_matches(model_dir: str | Path) -> bool:
    """Whether the packaged client modules of a written model equal the installed client package's."""
    version = Path(model_dir) / VERSION
    return all((version / rel).read_bytes() == src.read_bytes() for rel, src in packaged_files().items())


__all__ = [
    "AudioModelConfig",
    "build_audio_model_config",
    "code_sha256",
    "inner_model_problems",
    "installed_code_matches",
    "installed_vad_model",
    "is_audio_model_dir",
    "packaged_code_problems",
    "packaged_files",
    "python_model_problems",
    "same_audio_contract",
    "string_parameters",
    "vad_file_problems",
    "validate_audio_model_dir",
    "window_models",
    "write_audio_model",
]
