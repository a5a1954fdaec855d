"""``ser repository``: an export directory -> a Triton model repository, validated.

Layout (Triton's, exactly)::

    <repo>/ser_<variant>/config.pbtxt     a ModelConfig message written with text_format
    <repo>/ser_<variant>/labels.txt       one label per line, logit order
    <repo>/ser_<variant>/1/model.onnx
    <repo>/ser_<variant>/1/model.py       portable runtime only: export/triton_python_model.py

Two runtimes from one builder (DESIGN.md, "Two runtimes for one repository"):

* ``native``: ``platform: "onnxruntime_onnx"`` (Triton's onnxruntime backend, NGC
  container); ``int8`` on ``KIND_CPU`` with ``intra_op_thread_count``, ``fp32``
  on ``KIND_GPU`` (ORT's CUDA provider does not run ``MatMulInteger``).
* ``portable``: ``backend: "python"`` on ``KIND_CPU``, the generic ONNX Runtime
  model of :mod:`export.triton_python_model` (any tritonserver, this machine).

Configs are never string templates: :func:`build_model_config` fills a
``tritonclient.grpc.model_config_pb2.ModelConfig`` from the ONNX graph and the
recipe, and every written model is parsed back and checked against its graph
by :func:`validate_model_dir` before it replaces anything.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from client.contract import (
    INPUT_NAMES,
    LABELS_FILENAME,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    PARAM_PREFIX,
    ModelContract,
)
from client.errors import ConfigError, ContractError, ExportError, ModelConfigError
from export.onnx_export import read_signature
from export.pipeline import ensure_writable_dir, install_dir
from export.recipe import MODEL_FILENAME, RECIPE_FILENAME, Recipe, sha256_file

RUNTIMES = ("portable", "native")
CONFIG_FILENAME = "config.pbtxt"
PYTHON_MODEL_FILENAME = "model.py"
VERSION = "1"
MODEL_PREFIX = "ser_"
#: Config parameter of ONNX Runtime's intra-op threads (Triton onnxruntime backend's key; the python model reads it too).
THREADS_PARAMETER = "intra_op_thread_count"
#: intra_op_thread_count written for native CPU instances when none is given.
DEFAULT_NATIVE_CPU_THREADS = 4
#: Parameters (after :data:`client.contract.PARAM_PREFIX`) linking a served model to its recipe.
RECIPE_PARAMETERS = ("recipe_sha256", "model_sha256", "source_sha256")
#: Variants served on the CPU by the native runtime (dynamic int8 does not run on ORT's CUDA EP).
CPU_VARIANTS = ("int8",)
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")


def model_name(variant: str) -> str:
    """Repository name of a variant's model: ``ser_<variant>``."""
    return f"{MODEL_PREFIX}{variant}"


def _default_preferred(max_batch_size: int) -> tuple[int, ...]:
    sizes = [b for b in (2, 4, 8, 16, 32, 64, 128, 256) if b <= max_batch_size]
    if max_batch_size not in sizes:
        sizes.append(max_batch_size)
    return tuple(sizes[-2:])


@dataclass(frozen=True)
class RepositoryConfig:
    """How the repository is written.

    Attributes:
        runtime: ``portable`` (python backend + ONNX Runtime) or ``native`` (onnxruntime backend).
        variants: exported variants to serve (``ser_<variant>`` each).
        max_batch_size: largest batch Triton forms (> 0).
        preferred_batch_sizes: dynamic batcher targets (default: the two largest
            powers of two up to ``max_batch_size``, e.g. ``(4, 8)``).
        max_queue_delay_us: how long the dynamic batcher waits to fill a batch (µs).
        instances: model instances per device.
        intra_op_threads: ONNX Runtime threads per CPU instance (``None``: native
            writes 4, portable lets the model pick ``min(4, cpu_count)``).
    """

    runtime: str = "portable"
    variants: tuple[str, ...] = ("fp32", "int8")
    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] | None = None
    max_queue_delay_us: int = 2000
    instances: int = 1
    intra_op_threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.variants, str):
            object.__setattr__(self, "variants", (self.variants,))
        object.__setattr__(self, "variants", tuple(self.variants))
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime={self.runtime!r}: expected one of {list(RUNTIMES)}")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants={list(self.variants)}: need at least one, each at most once")
        if self.max_batch_size <= 0:
            raise ConfigError(f"max_batch_size={self.max_batch_size}: must be > 0 (the model batches on its first axis)")
        if self.preferred_batch_sizes is None:
            object.__setattr__(self, "preferred_batch_sizes", _default_preferred(self.max_batch_size))
        object.__setattr__(self, "preferred_batch_sizes", tuple(int(b) for b in self.preferred_batch_sizes))
        bad = [b for b in self.preferred_batch_sizes if not 0 < b <= self.max_batch_size]
        if bad:
            raise ConfigError(f"preferred_batch_sizes={list(self.preferred_batch_sizes)}: {bad} outside 1..max_batch_size={self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"max_queue_delay_us={self.max_queue_delay_us}: must be >= 0")
        if self.instances < 1:
            raise ConfigError(f"instances={self.instances}: must be >= 1")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ConfigError(f"intra_op_threads={self.intra_op_threads}: must be >= 1 (or None for the runtime's default)")

    def kind(self, variant: str) -> str:
        """Instance kind of a variant: ``KIND_CPU`` or ``KIND_GPU``."""
        if self.runtime == "portable" or variant in CPU_VARIANTS:
            return "KIND_CPU"
        return "KIND_GPU"


def build_model_config(*, name: str, recipe: Recipe, recipe_sha256: str, model_path: str | Path, config: RepositoryConfig):
    """Fill a ``ModelConfig`` message from the ONNX graph and the recipe.

    Args:
        name: model name (``ser_<variant>``).
        recipe: the variant's recipe (contract, checksums).
        recipe_sha256: sha256 of the ``recipe.json`` file served beside the model.
        model_path: the ``model.onnx`` it serves (its graph gives names, dtypes, dims).
        config: runtime, batching and instances.

    Returns:
        ``tritonclient.grpc.model_config_pb2.ModelConfig``.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    sig = read_signature(model_path)
    msg = mc.ModelConfig(name=name, max_batch_size=config.max_batch_size)
    if config.runtime == "native":
        msg.platform = "onnxruntime_onnx"
        msg.backend = "onnxruntime"
    else:
        msg.backend = "python"
    for tensor in sig.inputs.values():
        msg.input.add(name=tensor.name, data_type=mc.DataType.Value(tensor.data_type), dims=list(tensor.shape[1:]))
    for tensor in sig.outputs.values():
        out = msg.output.add(name=tensor.name, data_type=mc.DataType.Value(tensor.data_type), dims=list(tensor.shape[1:]))
        if tensor.name == OUTPUT_LOGITS:
            out.label_filename = LABELS_FILENAME
    msg.dynamic_batching.preferred_batch_size.extend(config.preferred_batch_sizes)
    msg.dynamic_batching.max_queue_delay_microseconds = config.max_queue_delay_us
    kind = config.kind(recipe.variant)
    msg.instance_group.add(kind=mc.ModelInstanceGroup.Kind.Value(kind), count=config.instances)
    contract = ModelContract.from_json(
        {**recipe.contract.to_json(), "extra": {
            **dict(recipe.contract.extra),
            "recipe_sha256": recipe_sha256,
            "model_sha256": recipe.model_sha256,
            "source_sha256": recipe.source_sha256,
        }}
    )
    for key, value in contract.to_parameters().items():
        msg.parameters[key].string_value = value
    threads = config.intra_op_threads
    if kind == "KIND_CPU" and config.runtime == "native" and threads is None:
        threads = DEFAULT_NATIVE_CPU_THREADS
    if threads is not None and kind == "KIND_CPU":
        msg.parameters[THREADS_PARAMETER].string_value = str(threads)
    return msg


def write_config(message, path: str | Path) -> Path:
    """Write a ModelConfig message as protobuf text format."""
    from google.protobuf import text_format

    Path(path).write_text(text_format.MessageToString(message))
    return Path(path)


def write_repository(
    export_dir: str | Path,
    repo_dir: str | Path,
    *,
    runtime: str = "portable",
    variants: Sequence[str] = ("fp32", "int8"),
    max_batch_size: int = 8,
    max_queue_delay_us: int = 2000,
    preferred_batch_sizes: Sequence[int] | None = None,
    instances: int = 1,
    intra_op_threads: int | None = None,
) -> list[Path]:
    """Write ``ser_<variant>`` models from an export directory into a Triton repository.

    Each model is staged in a temporary folder inside ``repo_dir``, validated
    (:func:`validate_model_dir`) and only then renamed into place, replacing an
    older model of the same name; other models in ``repo_dir`` are left alone.

    Args:
        export_dir: written by :func:`export.pipeline.export_checkpoint`.
        repo_dir: repository root (created if missing).
        runtime: ``portable`` or ``native``.
        variants: which exported variants to serve.
        max_batch_size: Triton ``max_batch_size``.
        max_queue_delay_us: dynamic batcher queue delay (µs).
        preferred_batch_sizes: dynamic batcher preferred sizes (default ``(4, 8)`` for 8).
        instances: instances per device.
        intra_op_threads: ONNX Runtime threads per CPU instance.

    Returns:
        The written model directories, in ``variants`` order.

    Raises:
        ConfigError: bad option. ExportError: missing/stale export, unusable ``repo_dir``.
        ModelConfigError: a generated config failed validation (a bug, reported as such).
    """
    config = RepositoryConfig(
        runtime=runtime,
        variants=tuple(variants),
        max_batch_size=max_batch_size,
        preferred_batch_sizes=tuple(preferred_batch_sizes) if preferred_batch_sizes is not None else None,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        intra_op_threads=intra_op_threads,
    )
    export_dir, repo_dir = Path(export_dir), Path(repo_dir)
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir}: no such export directory (run `ser export` first)")
    recipes = {}
    for variant in config.variants:
        folder = export_dir / variant
        if not (folder / MODEL_FILENAME).is_file() or not (folder / RECIPE_FILENAME).is_file():
            available = sorted(p.name for p in export_dir.iterdir() if (p / MODEL_FILENAME).is_file())
            raise ExportError(f"{folder}: no exported {variant!r} model ({MODEL_FILENAME} + {RECIPE_FILENAME}); available: {available}")
        recipe = Recipe.read(folder / RECIPE_FILENAME)
        if recipe.variant != variant:
            raise ExportError(f"{folder / RECIPE_FILENAME}: describes variant {recipe.variant!r}, not {variant!r}")
        recipe.verify_model(folder / MODEL_FILENAME)  # refuse a model.onnx that is not the one the recipe describes
        recipes[variant] = recipe
    ensure_writable_dir(repo_dir, what="repository path")

    written = []
    for variant in config.variants:
        name = model_name(variant)
        target = repo_dir / name
        if target.exists() and not target.is_dir():
            raise ExportError(f"{target}: exists and is not a directory")
        source = export_dir / variant
        with tempfile.TemporaryDirectory(prefix=f".{name}.tmp-", dir=repo_dir) as tmp:
            stage = Path(tmp) / name
            (stage / VERSION).mkdir(parents=True)
            shutil.copyfile(source / MODEL_FILENAME, stage / VERSION / MODEL_FILENAME)
            shutil.copyfile(source / RECIPE_FILENAME, stage / RECIPE_FILENAME)
            if config.runtime == "portable":
                shutil.copyfile(PYTHON_MODEL_SOURCE, stage / VERSION / PYTHON_MODEL_FILENAME)
            (stage / LABELS_FILENAME).write_text("\n".join(recipes[variant].contract.labels) + "\n")
            message = build_model_config(
                name=name,
                recipe=recipes[variant],
                recipe_sha256=sha256_file(stage / RECIPE_FILENAME),
                model_path=stage / VERSION / MODEL_FILENAME,
                config=config,
            )
            write_config(message, stage / CONFIG_FILENAME)
            validate_model_dir(stage, name=name)
            install_dir(stage, target)
        written.append(target)
    return written


def _field_problems(msg, sig, labels: list[str] | None, model_dir: Path) -> list[str]:
    """Every way ``msg`` deviates from the graph ``sig`` and the bundle's rules, as ``field: reason``."""
    from tritonclient.grpc import model_config_pb2 as mc

    problems = []
    if msg.max_batch_size <= 0:
        problems.append(f"max_batch_size: {msg.max_batch_size}, must be > 0 (the graph has a dynamic batch axis)")
    for kind, declared, graph, names in (("input", msg.input, sig.inputs, INPUT_NAMES), ("output", msg.output, sig.outputs, OUTPUT_NAMES)):
        got = [t.name for t in declared]
        if sorted(got) != sorted(names):
            problems.append(f"{kind}: names {got}, expected {list(names)}")
        for t in declared:
            field = f"{kind}[{t.name}]"
            g = graph.get(t.name)
            if g is None:
                problems.append(f"{field}: no such tensor in {MODEL_FILENAME} (it has {list(graph)})")
                continue
            dtype = mc.DataType.Name(t.data_type)
            if dtype != g.data_type:
                problems.append(f"{field}.data_type: {dtype}, but {MODEL_FILENAME} has {g.data_type}")
            if not g.shape or g.shape[0] != -1:
                problems.append(f"{field}: {MODEL_FILENAME} shape {list(g.shape)} has no dynamic batch axis")
            elif list(t.dims) != list(g.shape[1:]):
                problems.append(f"{field}.dims: {list(t.dims)}, but {MODEL_FILENAME} has {list(g.shape[1:])} (batch axis excluded)")
            if t.name == OUTPUT_LOGITS:
                if t.label_filename != LABELS_FILENAME:
                    problems.append(f"{field}.label_filename: {t.label_filename!r}, expected {LABELS_FILENAME!r}")
                if labels is not None and list(t.dims) != [len(labels)]:
                    problems.append(f"{field}.dims: {list(t.dims)}, but {LABELS_FILENAME} has {len(labels)} labels")
    if msg.backend == "python":
        if not (model_dir / VERSION / PYTHON_MODEL_FILENAME).is_file():
            problems.append(f"backend: 'python' but {VERSION}/{PYTHON_MODEL_FILENAME} is missing")
        if any(g.kind != mc.ModelInstanceGroup.KIND_CPU for g in msg.instance_group):
            problems.append("instance_group.kind: the portable python model runs ONNX Runtime on the CPU; use KIND_CPU")
    elif msg.platform != "onnxruntime_onnx" or msg.backend not in ("", "onnxruntime"):
        problems.append(f"platform/backend: {msg.platform!r}/{msg.backend!r}, expected backend 'python' or platform 'onnxruntime_onnx'")
    if not msg.HasField("dynamic_batching"):
        problems.append("dynamic_batching: missing (requests would not be merged)")
    else:
        bad = [b for b in msg.dynamic_batching.preferred_batch_size if not 0 < b <= msg.max_batch_size]
        if bad:
            problems.append(f"dynamic_batching.preferred_batch_size: {bad} outside 1..max_batch_size={msg.max_batch_size}")
    if any(g.count < 1 for g in msg.instance_group):
        problems.append("instance_group.count: must be >= 1")
    params = {k: v.string_value for k, v in msg.parameters.items()}
    try:
        contract = ModelContract.from_parameters(params, model=msg.name)
    except ContractError as exc:
        problems.append(f"parameters: {exc}")
    else:
        if sig.inputs.get(INPUT_NAMES[0]) is not None and contract.window_samples != sig.window_samples:
            problems.append(f"parameters[{PARAM_PREFIX}window_samples]: {contract.window_samples}, but {MODEL_FILENAME} takes {sig.window_samples}")
        if labels is not None and list(contract.labels) != labels:
            problems.append(f"parameters[{PARAM_PREFIX}labels]: {list(contract.labels)} != {LABELS_FILENAME} {labels}")
    for key in RECIPE_PARAMETERS:
        value = params.get(PARAM_PREFIX + key, "")
        if len(value) != 64:
            problems.append(f"parameters[{PARAM_PREFIX}{key}]: missing or not a sha256 ({value!r})")
    threads = params.get(THREADS_PARAMETER)
    if threads is not None and not (threads.isdigit() and int(threads) > 0):
        problems.append(f"parameters[{THREADS_PARAMETER}]: {threads!r} is not a positive integer")
    return problems


def read_model_config(model_dir: str | Path):
    """Parse ``<model_dir>/config.pbtxt`` into a ``model_config_pb2.ModelConfig`` (field names and enums only).

    Raises:
        ModelConfigError: the file is missing or does not parse; names the file.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    path = Path(model_dir) / CONFIG_FILENAME
    if not path.is_file():
        raise ModelConfigError(f"{path}: no {CONFIG_FILENAME} (not a model of a Triton repository)")
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelConfigError(f"{path}: not a valid Triton ModelConfig: {exc}") from None


def validate_model_dir(model_dir: str | Path, *, name: str | None = None, check_sha: bool = True):
    """Parse a model's ``config.pbtxt`` back and check it against its ONNX graph and files.

    Checks: text-format field names and enums (ModelConfig), ``name`` = folder,
    tensor names/data types/dims vs ``1/model.onnx``, a dynamic batch axis,
    ``label_filename`` and ``labels.txt`` (C lines), runtime files, dynamic
    batching, the ``ser.*`` contract parameters and recipe checksums (and, with
    ``check_sha``, that ``ser.model_sha256`` is the served file's).

    Args:
        model_dir: ``<repo>/<model>``.
        name: the expected model name (default: the folder's name).
        check_sha: hash ``1/model.onnx`` and compare with ``ser.model_sha256``.

    Returns:
        The parsed ``ModelConfig``.

    Raises:
        ModelConfigError: naming the config file and every bad field.
    """
    model_dir = Path(model_dir)
    name = name or model_dir.name
    path = model_dir / CONFIG_FILENAME
    msg = read_model_config(model_dir)
    problems = []
    if msg.name != name:
        problems.append(f"name: {msg.name!r}, but the folder is {name!r} (Triton requires them equal)")
    onnx_path = model_dir / VERSION / MODEL_FILENAME
    try:
        sig = read_signature(onnx_path)
    except ExportError as exc:
        raise ModelConfigError(f"{path}: cannot check against {onnx_path}: {exc}") from None
    labels_path = model_dir / LABELS_FILENAME
    labels = None
    if not labels_path.is_file():
        problems.append(f"output[{OUTPUT_LOGITS}].label_filename: {LABELS_FILENAME} is missing")
    else:
        labels = [line for line in labels_path.read_text().splitlines() if line.strip()]
    problems += _field_problems(msg, sig, labels, model_dir)
    if check_sha and not problems:
        expected = msg.parameters[PARAM_PREFIX + "model_sha256"].string_value
        if sha256_file(onnx_path) != expected:
            problems.append(f"parameters[{PARAM_PREFIX}model_sha256]: {expected[:12]}… is not the sha256 of {VERSION}/{MODEL_FILENAME}")
    if problems:
        raise ModelConfigError(f"{path}: " + "; ".join(problems))
    return msg


def validate_repository(repo_dir: str | Path, *, check_sha: bool = True) -> dict[str, object]:
    """Validate every bundle model (``ser_*`` folders) in a repository.

    Other models (not written by this bundle) are not checked.

    Returns:
        ``{model name: ModelConfig}``.

    Raises:
        ModelConfigError: no bundle model, or listing every invalid one.
    """
    repo_dir = Path(repo_dir)
    if not repo_dir.is_dir():
        raise ModelConfigError(f"{repo_dir}: no such repository directory")
    models = sorted(p for p in repo_dir.iterdir() if p.is_dir() and p.name.startswith(MODEL_PREFIX))
    if not models:
        raise ModelConfigError(f"{repo_dir}: no {MODEL_PREFIX}* model folders")
    configs, errors = {}, []
    for model in models:
        try:
            configs[model.name] = validate_model_dir(model, check_sha=check_sha)
        except ModelConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ModelConfigError(f"{repo_dir}: {len(errors)} invalid model(s): " + " | ".join(errors))
    return configs
