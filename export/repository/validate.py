"""Checks of written models against their graphs and files.

Each ``config.pbtxt`` is parsed back and compared with its ONNX graph, labels, runtime
files, warmup files and recipe checksums (:func:`validate_model_dir`); a repository's
bundle models are checked together (:func:`validate_repository`).
"""

from __future__ import annotations

from pathlib import Path

from client.contract import (
    INPUT_NAMES,
    LABELS_FILENAME,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    PARAM_PREFIX,
    ModelContract,
)
from client.errors import ContractError
from export.errors import ExportError, ModelConfigError
from export.onnx_export import read_signature
from export.recipe import MODEL_FILENAME, sha256_file
from export.repository.config import CPU_VARIANTS
from export.repository.names import (
    CONFIG_FILENAME,
    INTER_THREADS_PARAMETER,
    MODEL_PREFIX,
    PYTHON_MODEL_FILENAME,
    RECIPE_PARAMETERS,
    THREADS_PARAMETER,
    VERSION,
    WARMUP_DIR,
)
from export.repository.pbtxt import read_model_config


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
    for key in (THREADS_PARAMETER, INTER_THREADS_PARAMETER):
        threads = params.get(key)
        if threads is not None and not (threads.isdigit() and int(threads) > 0):
            problems.append(f"parameters[{key}]: {threads!r} is not a positive integer")
    problems += _native_problems(msg, sig, params, model_dir)
    return problems


def _native_problems(msg, sig, params: dict[str, str], model_dir: Path) -> list[str]:
    """Instance kind vs variant, GPU accelerators, warmup samples and version policy, as ``field: reason``."""
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as mc

    problems = []
    kinds = {mc.ModelInstanceGroup.Kind.Name(g.kind) for g in msg.instance_group}
    variant = params.get(PARAM_PREFIX + "variant", "")
    if msg.platform == "onnxruntime_onnx" and variant in CPU_VARIANTS and kinds - {"KIND_CPU"}:
        problems.append(f"instance_group.kind: {sorted(kinds)}, but {variant} (dynamic int8) runs on the CPU only; use KIND_CPU")
    accelerators = msg.optimization.execution_accelerators.gpu_execution_accelerator
    if accelerators and not kinds <= {"KIND_GPU", "KIND_AUTO"}:
        problems.append(f"optimization.execution_accelerators.gpu_execution_accelerator: set, but instance_group.kind is {sorted(kinds)}")
    for acc in accelerators:
        field = f"gpu_execution_accelerator[{acc.name}]"
        if acc.name not in ("tensorrt", "cuda"):
            problems.append(f"{field}.name: {acc.name!r}, expected 'tensorrt' or 'cuda'")
        if acc.name != "tensorrt":
            continue
        precision = acc.parameters.get("precision_mode", "FP32")
        if precision not in ("FP32", "FP16"):
            problems.append(f"{field}.parameters[precision_mode]: {precision!r}, expected FP32 or FP16 (INT8 needs a calibrated QDQ model)")
        workspace = acc.parameters.get("max_workspace_size_bytes", "1")
        if not workspace.isdigit() or int(workspace) < 1:
            problems.append(f"{field}.parameters[max_workspace_size_bytes]: {workspace!r} is not a positive integer")
        if acc.parameters.get("trt_engine_cache_enable", "false") not in ("true", "false"):
            problems.append(f"{field}.parameters[trt_engine_cache_enable]: must be 'true' or 'false'")
    if msg.HasField("version_policy"):
        policy = msg.version_policy
        if policy.HasField("latest") and policy.latest.num_versions < 1:
            problems.append(f"version_policy.latest.num_versions: {policy.latest.num_versions}, must be >= 1")
        if policy.HasField("specific") and any(not (model_dir / str(v)).is_dir() for v in policy.specific.versions):
            problems.append(f"version_policy.specific.versions: {list(policy.specific.versions)} names a missing version folder")
    graph = {**sig.inputs}
    for warm in msg.model_warmup:
        field = f"model_warmup[{warm.name}]"
        if not 0 < warm.batch_size <= max(msg.max_batch_size, 1):
            problems.append(f"{field}.batch_size: {warm.batch_size}, outside 1..max_batch_size={msg.max_batch_size}")
        if sorted(warm.inputs) != sorted(graph):
            problems.append(f"{field}.inputs: {sorted(warm.inputs)}, but {MODEL_FILENAME} takes {sorted(graph)}")
        for name, spec in warm.inputs.items():
            g = graph.get(name)
            if g is None:
                continue
            dtype = mc.DataType.Name(spec.data_type)
            if dtype != g.data_type:
                problems.append(f"{field}.inputs[{name}].data_type: {dtype}, but {MODEL_FILENAME} has {g.data_type}")
            if list(spec.dims) != list(g.shape[1:]):
                problems.append(f"{field}.inputs[{name}].dims: {list(spec.dims)}, but {MODEL_FILENAME} has {list(g.shape[1:])}")
            source = spec.WhichOneof("input_data_type")
            if source is None:
                problems.append(f"{field}.inputs[{name}]: no data (zero_data, random_data or input_data_file)")
            elif source == "input_data_file":
                path = model_dir / WARMUP_DIR / spec.input_data_file
                itemsize = {"TYPE_FP32": 4, "TYPE_INT64": 8}.get(dtype, 0)
                if not path.is_file():
                    problems.append(f"{field}.inputs[{name}].input_data_file: {WARMUP_DIR}/{spec.input_data_file} is missing")
                elif itemsize and path.stat().st_size != itemsize * int(np.prod(list(spec.dims))):
                    problems.append(f"{field}.inputs[{name}].input_data_file: {path.stat().st_size} bytes, expected {itemsize * int(np.prod(list(spec.dims)))}")
                elif name == INPUT_NAMES[1] and not 0 < int(np.frombuffer(path.read_bytes(), "<i8").min()) <= sig.window_samples:
                    problems.append(f"{field}.inputs[{name}].input_data_file: num_samples outside 1..W={sig.window_samples}")
    return problems


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
    """Validate every bundle model (``ser_*`` folders, audio models such as ``ser``, streaming models such as ``ser-stream``).

    Other models (not written by this bundle) are not checked.

    Returns:
        ``{model name: ModelConfig}``.

    Raises:
        ModelConfigError: no bundle model, or listing every invalid one.
    """
    repo_dir = Path(repo_dir)
    if not repo_dir.is_dir():
        raise ModelConfigError(f"{repo_dir}: no such repository directory")
    # imported here: export.audio_repository and export.stream_repository import this package
    from export.audio_repository import is_audio_model_dir, validate_audio_model_dir
    from export.stream_repository import is_stream_model_dir, validate_stream_model_dir

    models = sorted(p for p in repo_dir.iterdir() if p.is_dir() and p.name.startswith(MODEL_PREFIX)
                    and not is_stream_model_dir(p))
    if not models:
        raise ModelConfigError(f"{repo_dir}: no {MODEL_PREFIX}* model folders")
    configs, errors = {}, []
    for model in models:
        try:
            configs[model.name] = validate_model_dir(model, check_sha=check_sha)
        except ModelConfigError as exc:
            errors.append(str(exc))
    for model in sorted(p for p in repo_dir.iterdir() if p.is_dir() and p not in models):
        if is_audio_model_dir(model):
            check = validate_audio_model_dir
        elif is_stream_model_dir(model):
            check = validate_stream_model_dir
        else:
            continue
        try:
            configs[model.name] = check(model)
        except ModelConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ModelConfigError(f"{repo_dir}: {len(errors)} invalid model(s): " + " | ".join(errors))
    return configs
