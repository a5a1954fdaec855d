"""The host a benchmark ran on: CPU, threads, library versions, and the matrix-multiply peak it is compared with."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from client.timing import time_calls
from export.bench.config import BenchConfig, available_cpus
from export.versions import installed_versions

#: Distributions whose versions a bench result records.
BENCH_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy")


def cpu_info() -> tuple[str, bool]:
    """The CPU's model name and whether its int8 GEMMs use VNNI or AMX (:func:`export.cpu_class.cpu_has_vnni`)."""
    from export.cpu_class import cpu_has_vnni

    name = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    return name, cpu_has_vnni()


def environment(config: BenchConfig) -> dict[str, Any]:
    """The run's context: CPU and its VNNI flag, cores, threads, ONNX Runtime providers, GPU, library versions."""
    import onnxruntime as ort
    import torch

    cpu, vnni = cpu_info()
    env: dict[str, Any] = {
        "cpu": cpu,
        "avx512_vnni": vnni,
        "cpus_available": available_cpus(),
        "threads": config.threads,
        "torch_threads": torch.get_num_threads(),
        "ort_providers": list(ort.get_available_providers()),
        "torch_quantized_engine": torch.backends.quantized.engine,
        "versions": installed_versions(BENCH_LIBRARIES, python=True),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda_matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        env["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
    return env


def measure_matmul_peak(*, device: str, dtype: str = "float32", n: int | None = None, budget_s: float = 1.0) -> float:
    """Best GFLOP/s of a square ``torch.mm`` (``2 n^3`` FLOPs) within ``budget_s``.

    CPU: ``n`` = 2048 (4096 above 4 threads) with the current ``torch.get_num_threads()``.
    CUDA: ``n`` = 8192, timed in groups of 10 with a synchronise.
    """
    import torch

    tdtype = getattr(torch, dtype)
    if device == "cpu":
        n = n or (2048 if torch.get_num_threads() <= 4 else 4096)
        a, b = torch.randn(n, n, dtype=tdtype), torch.randn(n, n, dtype=tdtype)
        times_ms = time_calls(lambda: torch.mm(a, b), warmup=1, runs=50, min_runs=3, budget_s=budget_s)
        return 2 * n**3 / (min(times_ms) / 1e3) / 1e9
    n = n or 8192
    a = torch.randn(n, n, dtype=tdtype, device="cuda")
    b = torch.randn(n, n, dtype=tdtype, device="cuda")

    def ten_products() -> None:
        for _ in range(10):
            torch.mm(a, b)
        torch.cuda.synchronize()

    for _ in range(3):
        torch.mm(a, b)
    torch.cuda.synchronize()
    times_ms = time_calls(ten_products, runs=100, min_runs=3, budget_s=budget_s)
    return 2 * n**3 / (min(times_ms) / 10 / 1e3) / 1e9
