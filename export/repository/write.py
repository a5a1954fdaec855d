"""Write ``ser_<variant>`` models from an export directory into a Triton repository.

:func:`write_repository`: per-variant batching, staged model folders, validation, install.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from client.contract import LABELS_FILENAME
from client.errors import ConfigError
from export.cpu_class import VERIFIED_CLASSES_PARAMETER
from export.errors import ExportError
from export.pipeline import ensure_writable_dir, install_dir
from export.recipe import MODEL_FILENAME, RECIPE_FILENAME, ExportRecord, sha256_file
from export.repository.batching import batching_from_bench
from export.repository.build import build_model_config
from export.repository.config import DEFAULT_TRT_ENGINE_CACHE, RepositoryConfig
from export.repository.names import CONFIG_FILENAME, PYTHON_MODEL_FILENAME, VERSION, model_name
from export.repository.pbtxt import write_config
from export.repository.validate import validate_model_dir
from export.repository.warmup import write_warmup_files

if TYPE_CHECKING:
    from export.audio_repository import AudioModelConfig
    from export.stream_repository import StreamModelConfig

#: The generic python-backend model, copied to ``<model>/1/model.py`` by the portable runtime.
PYTHON_MODEL_SOURCE = Path(__file__).parents[1] / "served" / "window_model.py"
#: Standard-library helper the python-backend model imports (the host's int8 CPU class).
CPU_CLASS_SOURCE = Path(__file__).parents[1] / "cpu_class.py"


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
    placement: str = "auto",
    gpu_accelerator: str = "tensorrt",
    trt_engine_cache_path: str = DEFAULT_TRT_ENGINE_CACHE,
    warmup: bool = True,
    bench: str | Path | None = None,
    bench_shape: str | None = None,
    verify_cpu_classes: Sequence[str] = (),
    audio_model: bool = False,
    audio: AudioModelConfig | None = None,
    stream_model: bool = False,
    stream: StreamModelConfig | None = None,
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
        max_queue_delay_us: dynamic batcher queue delay (µs; default: from ``bench``, else ``RepositoryConfig``'s).
        preferred_batch_sizes: dynamic batcher preferred sizes (default: from ``bench``,
            else the two largest powers of two up to ``max_batch_size``).
        instances: instances per device.
        intra_op_threads: ONNX Runtime threads per CPU instance.
        inter_op_threads: ONNX Runtime inter-op threads per native CPU instance (default 1).
        placement: native fp32/fp16 instances: ``auto`` (GPU where the node has one), ``gpu`` or ``cpu``.
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
        stream_model: also write the streaming model ``ser-stream`` (live calls, one sequence per
            call; :mod:`export.stream_repository`), sending its windows to these models.
        stream: its options (name, instances, settings); given, it implies ``stream_model``.

    Returns:
        The written model directories, in ``variants`` order (then the audio model's, then the streaming model's).

    Raises:
        ConfigError: bad option. ExportError: missing/stale export, unusable ``repo_dir``.
        ModelConfigError: a generated config failed validation (a bug, reported as such).
    """
    config = RepositoryConfig(
        runtime=runtime,
        variants=tuple(variants),
        max_batch_size=8 if max_batch_size is None else max_batch_size,
        preferred_batch_sizes=tuple(preferred_batch_sizes) if preferred_batch_sizes is not None else None,
        max_queue_delay_us=RepositoryConfig.max_queue_delay_us if max_queue_delay_us is None else max_queue_delay_us,
        instances=instances,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        placement=placement,
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
        # imported here: export.audio_repository imports this package (names, runtimes, config files)
        from export.audio_repository import write_audio_model

        contract = recipes[config.variants[0]].contract
        written.append(write_audio_model(repo_dir, contract=contract, runtime=config.runtime, config=audio))
    if stream_model or stream is not None:
        from export.stream_repository import write_stream_model

        contract = recipes[config.variants[0]].contract
        written.append(write_stream_model(repo_dir, contract=contract, runtime=config.runtime, config=stream))
    return written
