"""How a repository is written: :class:`RepositoryConfig` and the option values it accepts.

Runtime, variants, batching, instances, threads, GPU accelerator, warmup and versions.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.errors import ConfigError
from export.repository.batching import default_preferred_batch_sizes

RUNTIMES = ("portable", "native")
#: Where a native fp32/fp16 model's instances go: ``auto`` (Triton's KIND_AUTO: the node's GPUs when it has
#: any, else its CPU, so one repository starts on both kinds of node), ``gpu`` (KIND_GPU: a CPU-only node
#: refuses to load it) or ``cpu`` (KIND_CPU). Dynamic int8 is always KIND_CPU.
PLACEMENTS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
#: Variants served on the CPU by the native runtime (dynamic int8 does not run on ORT's CUDA EP).
CPU_VARIANTS = ("int8",)
#: GPU accelerators a native GPU model can name (``cuda``: ORT's CUDA provider, no accelerator section).
GPU_ACCELERATORS = ("tensorrt", "cuda")
#: Where the TensorRT execution provider caches built engines on the server (a volume worth keeping).
DEFAULT_TRT_ENGINE_CACHE = "/tmp/ser-trt-engines"
DEFAULT_TRT_WORKSPACE_BYTES = 1 << 30


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
        intra_op_threads: ONNX Runtime threads per CPU instance (``None``: none written; a native
            model then takes the server's shared pool, sized from the node by the launcher
            (:func:`deploy.flags.onnxruntime_thread_args`), or ONNX Runtime's default of the
            machine's physical cores; the portable model picks ``min(4, cpu_count)``).
        inter_op_threads: ONNX Runtime inter-op threads per native CPU instance
            (``None``: 1; the graph is a chain, parallel branches buy nothing).
        placement: native fp32/fp16 instances: ``auto``, ``gpu`` or ``cpu`` (:data:`PLACEMENTS`).
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
    placement: str = "auto"
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
            object.__setattr__(self, "preferred_batch_sizes", default_preferred_batch_sizes(self.max_batch_size))
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
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement={self.placement!r}: expected one of {list(PLACEMENTS)}")
        if self.gpu_accelerator not in GPU_ACCELERATORS:
            raise ConfigError(f"gpu_accelerator={self.gpu_accelerator!r}: expected one of {list(GPU_ACCELERATORS)}")
        if self.trt_workspace_bytes < 1 << 20:
            raise ConfigError(f"trt_workspace_bytes={self.trt_workspace_bytes}: must be >= 1 MiB")
        if not self.trt_engine_cache_path.startswith("/"):
            raise ConfigError(f"trt_engine_cache_path={self.trt_engine_cache_path!r}: must be an absolute path on the server")
        if self.num_versions < 1:
            raise ConfigError(f"num_versions={self.num_versions}: must be >= 1")

    def kind(self, variant: str) -> str:
        """Instance kind of a variant: ``KIND_CPU``, ``KIND_AUTO`` or ``KIND_GPU``."""
        if self.runtime == "portable" or variant in CPU_VARIANTS:
            return "KIND_CPU"
        return PLACEMENTS[self.placement]
