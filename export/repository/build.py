"""A model's Triton ``ModelConfig`` message, built from its ONNX graph and export record.

:func:`build_model_config` fills the message; configs are never string templates.
"""

from __future__ import annotations

from pathlib import Path

from client.contract import LABELS_FILENAME, OUTPUT_LOGITS, ModelContract
from export.onnx_export import read_signature
from export.recipe import ExportRecord
from export.repository.config import RepositoryConfig
from export.repository.names import (
    BATCHING_PARAMETER,
    INTER_THREADS_PARAMETER,
    PLACEMENT_PARAMETER,
    THREADS_PARAMETER,
)
from export.repository.warmup import warmup_file_name

#: What ``ser.placement`` tells an operator reading a native config, per instance kind.
PLACEMENT_NOTES = {
    "KIND_CPU": "cpu: CPU instances on every node",
    "KIND_AUTO": "auto: the node's GPUs when it has any (with the GPU accelerator below), else CPU instances",
    "KIND_GPU": "gpu: GPU instances only; a node without a GPU refuses to load this model",
}

#: TensorRT precision per variant.
TRT_PRECISION = {"fp16": "FP16", "fp32": "FP32"}


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
    if config.intra_op_threads is not None and kind != "KIND_GPU":
        msg.parameters[THREADS_PARAMETER].string_value = str(config.intra_op_threads)
    if config.runtime == "native":
        _native_options(msg, mc, variant=recipe.variant, kind=kind, window_samples=sig.window_samples, config=config)
    msg.parameters[BATCHING_PARAMETER].string_value = config.batching_source
    return msg


def _native_options(msg, mc, *, variant: str, kind: str, window_samples: int, config: RepositoryConfig) -> None:
    """Threads, accelerator, warmup and version policy of a native (onnxruntime backend) model."""
    from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM

    msg.version_policy.latest.num_versions = config.num_versions
    msg.parameters[PLACEMENT_PARAMETER].string_value = PLACEMENT_NOTES[kind]
    if kind != "KIND_GPU":
        msg.parameters[INTER_THREADS_PARAMETER].string_value = str(config.inter_op_threads or 1)
    if kind != "KIND_CPU" and config.gpu_accelerator == "tensorrt":
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

