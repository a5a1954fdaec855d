"""The names a model repository is written and read by.

Files and folders of a model, model names, and the ``config.pbtxt`` parameter keys the
writer sets and the validator checks.
"""

from __future__ import annotations

CONFIG_FILENAME = "config.pbtxt"
PYTHON_MODEL_FILENAME = "model.py"
VERSION = "1"
MODEL_PREFIX = "ser_"
#: Config parameter of ONNX Runtime's intra-op threads (Triton onnxruntime backend's key; the python model reads it too).
THREADS_PARAMETER = "intra_op_thread_count"
#: Config parameter of ONNX Runtime's inter-op threads (Triton onnxruntime backend's key).
INTER_THREADS_PARAMETER = "inter_op_thread_count"
#: Native configs: where the instances go and why (:data:`export.repository.build.PLACEMENT_NOTES`).
PLACEMENT_PARAMETER = "ser.placement"
#: Parameters (after :data:`client.contract.PARAM_PREFIX`) linking a served model to its recipe.
RECIPE_PARAMETERS = ("recipe_sha256", "model_sha256", "source_sha256")
#: Folder of warmup input files inside a model directory (Triton's name).
WARMUP_DIR = "warmup"
#: Config parameter recording where the batching figures came from.
BATCHING_PARAMETER = "batching_source"


def model_name(variant: str) -> str:
    """Repository name of a variant's model: ``ser_<variant>``."""
    return f"{MODEL_PREFIX}{variant}"
