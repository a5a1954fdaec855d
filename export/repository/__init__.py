"""``ser repository``: an export directory -> a Triton model repository, validated.

Layout (Triton's, exactly)::

    <repo>/ser_<variant>/config.pbtxt     a ModelConfig message written with text_format
    <repo>/ser_<variant>/labels.txt       one label per line, logit order
    <repo>/ser_<variant>/1/model.onnx
    <repo>/ser_<variant>/1/model.py       portable runtime only: export/served/window_model.py
    <repo>/ser_<variant>/1/cpu_class.py   portable runtime only: export/cpu_class.py (imported by model.py)

Two runtimes from one builder (docs/serving-and-repositories.md):

* ``native``: ``platform: "onnxruntime_onnx"`` (Triton's onnxruntime backend, NGC
  container); ``int8`` on ``KIND_CPU``
  (ORT's CUDA provider does not run ``DynamicQuantizeLinear``/``MatMulInteger``),
  ``fp16`` and ``fp32`` on ``KIND_AUTO`` (GPU where the node has one, else CPU; ``placement``
  overrides) with the TensorRT accelerator
  (``precision_mode`` FP16 for fp16, engine cache) or plain CUDA; every native
  model gets ``model_warmup`` with a real-shaped sample (random ``waveform``
  [W], ``num_samples`` = W from ``warmup/num_samples``) and a ``version_policy``.
  ``max_batch_size``, the preferred batch and the queue delay come from a
  ``ser bench --json`` result when one is given (:func:`batching_from_bench`).
* ``portable``: ``backend: "python"`` on ``KIND_CPU``, the generic ONNX Runtime
  model of :mod:`export.served.window_model` (any tritonserver, this machine).

Configs are never string templates: :func:`build_model_config` fills a
``tritonclient.grpc.model_config_pb2.ModelConfig`` from the ONNX graph and the
recipe, and every written model is parsed back and checked against its graph
by :func:`validate_model_dir` before it replaces anything.

The modules, one job each: :mod:`.config` (:class:`RepositoryConfig`), :mod:`.names`
(file, folder, model and parameter names), :mod:`.batching` (default and benchmarked
batching figures), :mod:`.build` (the ``ModelConfig`` message), :mod:`.warmup` (warmup
input files), :mod:`.pbtxt` (``config.pbtxt`` read and written), :mod:`.validate`
(models checked against their graphs) and :mod:`.write` (:func:`write_repository`).
This package re-exports their public names: ``from export.repository import X`` is the
public path used by the CLI, the load tests and the docs.
"""

from export.repository.batching import (
    BATCH_THROUGHPUT_FRACTION,
    BENCH_RUNNERS,
    MAX_QUEUE_DELAY_US,
    QUEUE_DELAY_FRACTION,
    BatchingChoice,
    batching_from_bench,
    default_preferred_batch_sizes,
)
from export.repository.build import TRT_PRECISION, build_model_config
from export.repository.config import (
    CPU_VARIANTS,
    DEFAULT_TRT_ENGINE_CACHE,
    DEFAULT_TRT_WORKSPACE_BYTES,
    GPU_ACCELERATORS,
    PLACEMENTS,
    RUNTIMES,
    RepositoryConfig,
)
from export.repository.names import (
    BATCHING_PARAMETER,
    CONFIG_FILENAME,
    INTER_THREADS_PARAMETER,
    MODEL_PREFIX,
    PYTHON_MODEL_FILENAME,
    RECIPE_PARAMETERS,
    THREADS_PARAMETER,
    VERSION,
    WARMUP_DIR,
    model_name,
)
from export.repository.pbtxt import read_model_config, write_config
from export.repository.validate import validate_model_dir, validate_repository
from export.repository.warmup import warmup_file_name, write_warmup_files
from export.repository.write import CPU_CLASS_SOURCE, PYTHON_MODEL_SOURCE, write_repository

__all__ = [
    "BATCHING_PARAMETER",
    "BATCH_THROUGHPUT_FRACTION",
    "BENCH_RUNNERS",
    "CONFIG_FILENAME",
    "CPU_CLASS_SOURCE",
    "CPU_VARIANTS",
    "PLACEMENTS",
    "DEFAULT_TRT_ENGINE_CACHE",
    "DEFAULT_TRT_WORKSPACE_BYTES",
    "GPU_ACCELERATORS",
    "INTER_THREADS_PARAMETER",
    "MAX_QUEUE_DELAY_US",
    "MODEL_PREFIX",
    "PYTHON_MODEL_FILENAME",
    "PYTHON_MODEL_SOURCE",
    "QUEUE_DELAY_FRACTION",
    "RECIPE_PARAMETERS",
    "RUNTIMES",
    "THREADS_PARAMETER",
    "TRT_PRECISION",
    "VERSION",
    "WARMUP_DIR",
    "BatchingChoice",
    "RepositoryConfig",
    "batching_from_bench",
    "build_model_config",
    "default_preferred_batch_sizes",
    "model_name",
    "read_model_config",
    "validate_model_dir",
    "validate_repository",
    "warmup_file_name",
    "write_config",
    "write_repository",
    "write_warmup_files",
]
