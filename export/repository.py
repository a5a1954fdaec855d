"""``ser repository``: an export directory -> a Triton model repository, validated.

Layout (Triton's, exactly)::

    <repo>/ser_<variant>/config.pbtxt     a ModelConfig message written with text_format
    <repo>/ser_<variant>/labels.txt       one label per line, logit order
    <repo>/ser_<variant>/1/model.onnx
    <repo>/ser_<variant>/1/model.py       portable runtime only: export/triton_python_model.py
    <repo>/ser_<variant>/1/cpu_class.py   portable runtime only: export/cpu_class.py (imported by model.py)

Two runtimes from one builder (docs/serving-and-repositories.md):

* ``native``: ``platform: "onnxruntime_onnx"`` (Triton's onnxruntime backend, NGC
  container); ``int8`` on ``KIND_CPU`` with intra/inter-op thread parameters
  (ORT's CUDA provider does not run ``DynamicQuantizeLinear``/``MatMulInteger``),
  ``fp16`` and ``fp32`` on ``KIND_GPU`` with the TensorRT accelerator
  (``precision_mode`` FP16 for fp16, engine cache) or plain CUDA; every native
  model gets ``model_warmup`` with a real-shaped sample (random ``waveform``
  [W], ``num_samples`` = W from ``warmup/num_samples``) and a ``version_policy``.
  ``max_batch_size``, the preferred batch and the queue delay come from a
  ``ser bench --json`` result when one is given (:func:`batching_from_bench`).
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from client.contract import (
    INPUT_NAMES,
    LABELS_FILENAME,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    PARAM_PREFIX,
    ModelContract,
)
from client.errors import ConfigError, ContractError
from export.cpu_class import VERIFIED_CLASSES_PARAMETER
from export.errors import ExportError, ModelConfigError
from export.onnx_export import read_signature
from export.pipeline import ensure_writable_dir, install_dir
from export.recipe import MODEL_FILENAME, RECIPE_FILENAME, ExportRecord, sha256_file

if TYPE_CHECKING:
    from export.audio_repository import AudioModelConfig

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
#: Config parameter of ONNX Runtime's inter-op threads (Triton onnxruntime backend's key).
INTER_THREADS_PARAMETER = "inter_op_thread_count"
#: GPU accelerators a native GPU model can name (``cuda``: ORT's CUDA provider, no accelerator section).
GPU_ACCELERATORS = ("tensorrt", "cuda")
#: TensorRT precision per variant.
TRT_PRECISION = {"fp16": "FP16", "fp32": "FP32"}
#: Where the TensorRT execution provider caches built engines on the server (a volume worth keeping).
DEFAULT_TRT_ENGINE_CACHE = "/tmp/ser-trt-engines"
DEFAULT_TRT_WORKSPACE_BYTES = 1 << 30
#: Folder of warmup input files inside a model directory (Triton's name).
WARMUP_DIR = "warmup"
#: Config parameter recording where the batching figures came from.
BATCHING_PARAMETER = "batching_source"
#: Bench runners whose figures stand for a variant (first measured one wins), per instance kind.
BENCH_RUNNERS = {
    ("int8", "KIND_CPU"): ("ort-int8:",),
    ("fp32", "KIND_CPU"): ("ort-fp32",),
    ("fp16", "KIND_CPU"): ("ort-fp32",),
    ("fp16", "KIND_GPU"): ("torch-fp16",),
    ("fp32", "KIND_GPU"): ("ort-cuda-fp32", "torch-fp32"),
}
#: A batch is "good enough" once its clips/s reach this fraction of the best measured.
BATCH_THROUGHPUT_FRACTION = 0.9
#: The queue delay is this fraction of one batch-1 inference (waiting longer than a
#: quarter of a call to fill a batch costs more latency than it saves), capped below.
QUEUE_DELAY_FRACTION = 0.25
MAX_QUEUE_DELAY_US = 20_000
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")
#: Standard-library helper the python-backend model imports (the host's int8 CPU class).
CPU_CLASS_SOURCE = Path(__file__).with_name("cpu_class.py")


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
        inter_op_threads: ONNX Runtime inter-op threads per native CPU instance
            (``None``: 1; the graph is a chain, parallel branches buy nothing).
        gpu_accelerator: native GPU models: ``tensorrt`` (TensorRT EP, precision
            from the variant, engine cache) or ``cuda`` (ORT's CUDA provider only).
        trt_workspace_bytes: TensorRT ``max_workspace_size_bytes``.
        trt_engine_cache_path: where the server caches TensorRT engines.
        warmup: native models: a ``model_warmup`` with a real-shaped sample.
        num_versions: ``version_policy { latest { num_versions } }``.
        batching_source: where ``max_batch_size``/queue delay came from (written as a
            config parameter; :func:`batching_from_bench` fills it).
    """

    runtime: str = "portable"
    variants: tuple[str, ...] = ("fp32", "int8")
    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] | None = None
    max_queue_delay_us: int = 2000
    instances: int = 1
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    gpu_accelerator: str = "tensorrt"
    trt_workspace_bytes: int = DEFAULT_TRT_WORKSPACE_BYTES
    trt_engine_cache_path: str = DEFAULT_TRT_ENGINE_CACHE
    warmup: bool = True
    num_versions: int = 1
    batching_source: str = "defaults (max_batch_size 8, 2 largest powers of two preferred, 2000 us)"

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
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value}: must be >= 1 (or None for the runtime's default)")
        if self.gpu_accelerator not in GPU_ACCELERATORS:
            raise ConfigError(f"gpu_accelerator={self.gpu_accelerator!r}: expected one of {list(GPU_ACCELERATORS)}")
        if self.trt_workspace_bytes < 1 << 20:
            raise ConfigError(f"trt_workspace_bytes={self.trt_workspace_bytes}: must be >= 1 MiB")
        if not self.trt_engine_cache_path.startswith("/"):
            raise ConfigError(f"trt_engine_cache_path={self.trt_engine_cache_path!r}: must be an absolute path on the server")
        if self.num_versions < 1:
            raise ConfigError(f"num_versions={self.num_versions}: must be >= 1")

    def kind(self, variant: str) -> str:
        """Instance kind of a variant: ``KIND_CPU`` or ``KIND_GPU``."""
        if self.runtime == "portable" or variant in CPU_VARIANTS:
            return "KIND_CPU"
        return "KIND_GPU"


def build_model_config(*, name: str, recipe: ExportRecord, recipe_sha256: str, model_path: str | Path, config: RepositoryConfig):
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
    if config.runtime == "native":
        _native_options(msg, mc, variant=recipe.variant, kind=kind, window_samples=sig.window_samples, config=config)
    msg.parameters[BATCHING_PARAMETER].string_value = config.batching_source
    return msg


def warmup_file_name(window_samples: int) -> str:
    """Name of the warmup file holding ``num_samples`` = W (one int64, little-endian)."""
    return f"num_samples_{window_samples}"


def _native_options(msg, mc, *, variant: str, kind: str, window_samples: int, config: RepositoryConfig) -> None:
    """Threads, accelerator, warmup and version policy of a native (onnxruntime backend) model."""
    from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM

    msg.version_policy.latest.num_versions = config.num_versions
    if kind == "KIND_CPU":
        msg.parameters[INTER_THREADS_PARAMETER].string_value = str(config.inter_op_threads or 1)
    elif config.gpu_accelerator == "tensorrt":
        trt = msg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = TRT_PRECISION.get(variant, "FP32")
        trt.parameters["max_workspace_size_bytes"] = str(config.trt_workspace_bytes)
        trt.parameters["trt_engine_cache_enable"] = "true"
        trt.parameters["trt_engine_cache_path"] = config.trt_engine_cache_path
    if config.warmup:
        for batch in sorted({1, max(config.preferred_batch_sizes)}):
            warm = msg.model_warmup.add(name=f"real_shaped_batch_{batch}", batch_size=batch)
            wav = warm.inputs[INPUT_WAVEFORM]
            wav.data_type = mc.TYPE_FP32
            wav.dims.append(window_samples)
            wav.random_data = True
            count = warm.inputs[INPUT_NUM_SAMPLES]
            count.data_type = mc.TYPE_INT64
            count.dims.append(1)
            count.input_data_file = warmup_file_name(window_samples)


def write_warmup_files(message, model_dir: str | Path) -> list[Path]:
    """Write the ``warmup/`` files a config's ``model_warmup`` names (``num_samples`` = W, int64 LE)."""
    import numpy as np

    written = []
    for warm in message.model_warmup:
        for name, spec in warm.inputs.items():
            if not spec.input_data_file:
                continue
            prefix = "num_samples_"
            if not spec.input_data_file.startswith(prefix):
                raise ModelConfigError(f"model_warmup[{warm.name}].inputs[{name}]: unknown warmup file {spec.input_data_file!r}")
            path = Path(model_dir) / WARMUP_DIR / spec.input_data_file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(np.asarray([int(spec.input_data_file[len(prefix):])], dtype="<i8").tobytes())
            written.append(path)
    return written


@dataclass(frozen=True)
class BatchingChoice:
    """Dynamic-batching figures chosen from a benchmark result.

    Attributes:
        max_batch_size: largest batch Triton forms: the largest batch measured, at least
            the default 8 (clients send several windows of one clip in one request).
        preferred_batch_sizes: the smallest measured batch reaching
            :data:`BATCH_THROUGHPUT_FRACTION` of the best clips/s.
        max_queue_delay_us: :data:`QUEUE_DELAY_FRACTION` of the batch-1 median
            (0 when batching does not raise throughput: nothing to wait for).
        source: which file, shape, runner and cells the figures came from.
    """

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    source: str


def batching_from_bench(bench_json: str | Path, *, variant: str, kind: str, shape: str | None = None) -> BatchingChoice:
    """Choose max_batch_size, preferred batch and queue delay from a ``ser bench --json`` file.

    Args:
        bench_json: written by ``ser bench --json`` (:meth:`export.bench.BenchResult.write_json`).
        variant: ``fp32``, ``int8`` or ``fp16``.
        kind: ``KIND_CPU`` or ``KIND_GPU`` (which runners stand for the variant: :data:`BENCH_RUNNERS`).
        shape: model shape of the cells to use (default: the largest measured, by GFLOP/clip).

    Raises:
        ConfigError: the file is not a bench result, or holds no measured cell for the variant.
    """
    import json

    path = Path(bench_json)
    try:
        data = json.loads(path.read_text())
        cells = [c for c in data["cells"] if c["status"] == "measured"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a `ser bench --json` result ({type(exc).__name__}: {exc})") from None
    runners = BENCH_RUNNERS.get((variant, kind), ())
    device = "cuda" if kind == "KIND_GPU" else "cpu"
    if shape is None:
        shapes = data.get("shapes", {})
        measured = {c["shape"] for c in cells}
        shape = max(measured, key=lambda s: shapes.get(s, {}).get("gflop_per_clip", 0.0)) if measured else None
    chosen: list[dict] = []
    for prefix in runners:
        chosen = [c for c in cells if c["shape"] == shape and c.get("device", device) == device
                  and (c["runner"] == prefix or (prefix.endswith(":") and c["runner"].startswith(prefix)))]
        if chosen:
            runner = chosen[0]["runner"]
            chosen = sorted((c for c in chosen if c["runner"] == runner), key=lambda c: c["batch"])
            break
    if not chosen:
        raise ConfigError(f"{path}: no measured cell of shape {shape!r} for {variant} on {kind} (runners {list(runners)})")
    best = max(c["clips_per_s"] for c in chosen)
    preferred = next(c["batch"] for c in chosen if c["clips_per_s"] >= BATCH_THROUGHPUT_FRACTION * best)
    one = next((c for c in chosen if c["batch"] == 1), chosen[0])
    delay = 0 if preferred == 1 else min(MAX_QUEUE_DELAY_US, int(round(QUEUE_DELAY_FRACTION * one["median_ms"] * 1e3 / one["batch"])))
    figures = ", ".join(f"b{c['batch']} {c['median_ms']:.1f} ms {c['clips_per_s']:.1f} clips/s" for c in chosen)
    return BatchingChoice(
        max_batch_size=max(8, chosen[-1]["batch"]),
        preferred_batch_sizes=(preferred,),
        max_queue_delay_us=delay,
        source=f"{path.name} {shape} {chosen[0]['runner']}: {figures}",
    )


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
    max_batch_size: int | None = None,
    max_queue_delay_us: int | None = None,
    preferred_batch_sizes: Sequence[int] | None = None,
    instances: int = 1,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    gpu_accelerator: str = "tensorrt",
    trt_engine_cache_path: str = DEFAULT_TRT_ENGINE_CACHE,
    warmup: bool = True,
    bench: str | Path | None = None,
    bench_shape: str | None = None,
    verify_cpu_classes: Sequence[str] = (),
    audio_model: bool = False,
    audio: AudioModelConfig | None = None,
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
        max_batch_size: Triton ``max_batch_size`` (default: from ``bench``, else 8).
        max_queue_delay_us: dynamic batcher queue delay (µs; default: from ``bench``, else 2000).
        preferred_batch_sizes: dynamic batcher preferred sizes (default: from ``bench``,
            else the two largest powers of two up to ``max_batch_size``).
        instances: instances per device.
        intra_op_threads: ONNX Runtime threads per CPU instance.
        inter_op_threads: ONNX Runtime inter-op threads per native CPU instance (default 1).
        gpu_accelerator: native GPU models: ``tensorrt`` or ``cuda``.
        trt_engine_cache_path: server-side TensorRT engine cache.
        warmup: native models get a real-shaped ``model_warmup``.
        bench: a ``ser bench --json`` result: batching figures per variant
            (:func:`batching_from_bench`); explicit arguments win over it.
        bench_shape: the bench shape to read (default: the largest measured).
        verify_cpu_classes: check the int8 model against fp32 on these CPU classes too
            (emulated where needed, :func:`export.isa_check.verify_export_on_classes`) and
            list them in its config parameter ``ser.verified_cpu_classes``.
        audio_model: also write the server-side audio model ``ser`` (one clip in, emotions
            out; :mod:`export.audio_repository`), sending its windows to these models.
        audio: its options (name, instances, limits); given, it implies ``audio_model``.

    Returns:
        The written model directories, in ``variants`` order (then the audio model's).

    Raises:
        ConfigError: bad option. ExportError: missing/stale export, unusable ``repo_dir``.
        ModelConfigError: a generated config failed validation (a bug, reported as such).
    """
    config = RepositoryConfig(
        runtime=runtime,
        variants=tuple(variants),
        max_batch_size=8 if max_batch_size is None else max_batch_size,
        preferred_batch_sizes=tuple(preferred_batch_sizes) if preferred_batch_sizes is not None else None,
        max_queue_delay_us=2000 if max_queue_delay_us is None else max_queue_delay_us,
        instances=instances,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        gpu_accelerator=gpu_accelerator,
        trt_engine_cache_path=trt_engine_cache_path,
        warmup=warmup,
    )
    per_variant = {}
    for variant in config.variants:
        if bench is None:
            per_variant[variant] = config
            continue
        try:
            choice = batching_from_bench(bench, variant=variant, kind=config.kind(variant), shape=bench_shape)
        except ConfigError as exc:
            if not Path(bench).is_file() or "no measured cell" not in str(exc):
                raise
            per_variant[variant] = replace(config, batching_source=f"defaults: {exc}")
            continue
        mbs = choice.max_batch_size if max_batch_size is None else max_batch_size
        preferred = preferred_batch_sizes
        if preferred is None:
            preferred = tuple(b for b in choice.preferred_batch_sizes if b <= mbs) or None
        per_variant[variant] = replace(
            config, max_batch_size=mbs, preferred_batch_sizes=tuple(preferred) if preferred is not None else None,
            max_queue_delay_us=choice.max_queue_delay_us if max_queue_delay_us is None else max_queue_delay_us,
            batching_source=choice.source,
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
        recipe = ExportRecord.read(folder / RECIPE_FILENAME)
        if recipe.variant != variant:
            raise ExportError(f"{folder / RECIPE_FILENAME}: describes variant {recipe.variant!r}, not {variant!r}")
        recipe.verify_model(folder / MODEL_FILENAME)  # refuse a model.onnx that is not the one the recipe describes
        recipes[variant] = recipe
    verified: tuple[str, ...] = ()
    if verify_cpu_classes:
        if "int8" not in config.variants:
            raise ConfigError(f"verify_cpu_classes={list(verify_cpu_classes)} concerns the int8 model, "
                              f"but variants={list(config.variants)}")
        from export.isa_check import verify_export_on_classes

        verified = verify_export_on_classes(export_dir, verify_cpu_classes)
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
                shutil.copyfile(CPU_CLASS_SOURCE, stage / VERSION / CPU_CLASS_SOURCE.name)
            (stage / LABELS_FILENAME).write_text("\n".join(recipes[variant].contract.labels) + "\n")
            message = build_model_config(
                name=name,
                recipe=recipes[variant],
                recipe_sha256=sha256_file(stage / RECIPE_FILENAME),
                model_path=stage / VERSION / MODEL_FILENAME,
                config=per_variant[variant],
            )
            if verified and variant == "int8":
                message.parameters[VERIFIED_CLASSES_PARAMETER].string_value = ",".join(verified)
            write_warmup_files(message, stage)
            write_config(message, stage / CONFIG_FILENAME)
            validate_model_dir(stage, name=name)
            install_dir(stage, target)
        written.append(target)
    if audio_model or audio is not None:
        from export.audio_repository import write_audio_model

        contract = recipes[config.variants[0]].contract
        written.append(write_audio_model(repo_dir, contract=contract, runtime=config.runtime, config=audio))
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
    if accelerators and kinds != {"KIND_GPU"}:
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
    """Validate every bundle model (``ser_*`` folders, and audio models such as ``ser``) in a repository.

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
    from export.audio_repository import is_audio_model_dir, validate_audio_model_dir

    for model in sorted(p for p in repo_dir.iterdir() if p.is_dir() and p not in models and is_audio_model_dir(p)):
        try:
            configs[model.name] = validate_audio_model_dir(model)
        except ModelConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ModelConfigError(f"{repo_dir}: {len(errors)} invalid model(s): " + " | ".join(errors))
    return configs
