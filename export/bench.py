"""``ser bench``: model shapes x runners x batch sizes, side by side in one process.

What a cell measures: one forward pass of the bundle's graph
(:class:`training.model.WaveformClassifier`: in-graph normalisation + mask +
Wav2Vec2ForSequenceClassification, random weights, 8 labels) on a batch of
``B`` windows of ``W = round(clip_seconds * sample_rate)`` samples, all valid.
Inputs are prepared once (on the runner's device for PyTorch CUDA runners;
ONNX Runtime's CUDA runner is fed numpy arrays, so its host-to-device copy is
timed). After ``warmup`` untimed calls, ``repeat`` calls (or as many as fit in
``budget_s``) are timed one by one with ``time.perf_counter``; CUDA runners
synchronise inside the timed call.

Runners:

=====================  ======  ================================================
``ort-fp32``           CPU     ONNX Runtime, the exported fp32 graph (the reference)
``ort-int8:<preset>``  CPU     ONNX Runtime, ``quantize_dynamic`` with an
                               :data:`export.quantize.QUANTIZATION_PRESETS` preset
                               (``ort-int8``: every preset; ``ort-int8:default``: the default)
``torch-fp32``         device  PyTorch eager, fp32 (``--device cuda``: on the GPU)
``torch-int8-dynamic`` CPU     ``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear``
                               (qint8): the peer a PyTorch user would reach for
``torch-fp16``         CUDA    PyTorch eager, fp16 weights/activations (normalisation in fp32)
``ort-cuda-fp32``      CUDA    ONNX Runtime's CUDAExecutionProvider, fp32 graph
=====================  ======  ================================================

A runner this host cannot run (no CUDA, ``--device cpu`` for a GPU runner, no
CUDAExecutionProvider) gets a *skipped* cell with the reason; a runner that
raises gets a *failed* cell with the error: every requested cell is in the table.

Columns: file size (ONNX file; PyTorch: bytes of the state dict's tensors),
latency median / p95 (ms), clips/s (``B / median``), speed-up vs ``ort-fp32`` of
the same shape and batch (``ort-fp32 median / cell median``), achieved GFLOP/s
(FLOPs counted analytically by :mod:`export.bench_flops` / median) and its
percentage of a matrix-multiply peak measured in the same run with the same
thread count (CPU: fp32 ``torch.mm``, also the yardstick of int8 cells, which can
pass 100 % since VNNI int8 does 4x the multiply-adds of fp32; CUDA: fp32 and
fp16 ``torch.mm``). Threads are pinned (``torch.set_num_threads``, ORT
``intra_op_num_threads``, ``inter_op_num_threads = 1``) and printed.

ONNX files are exported once per ``(shape, W, seed, labels)`` into
``workdir`` (default ``.cache/bench``) and quantized once per preset; later runs
reuse them (``bench_meta.json`` records what they were made from). The
xlsr-large fp32 graph is ~1.27 GB: a single file (protobuf's limit is 2 GiB).

Hosts without ``soundfile``/``soxr`` (a GPU box with only torch and ORT) can run
it: the bench decodes no audio, and the audio contract imports them only to decode.
Run from the repository root: ``PYTHONPATH=. python3 -m export.bench --help``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

from client.errors import ConfigError
from export.bench_flops import count_flops, encoder_frames
from export.quantize import DEFAULT_PRESET, QUANTIZATION_PRESETS

#: Runner kinds (``ort-int8`` takes ``:<preset>``).
RUNNER_KINDS = ("ort-fp32", "ort-int8", "torch-fp32", "torch-int8-dynamic", "torch-fp16", "ort-cuda-fp32")
#: The default runner list: every kind, every int8 preset (GPU runners skip themselves on a CPU host).
DEFAULT_RUNNERS = RUNNER_KINDS
DEFAULT_SHAPES = ("tiny", "base", "xlsr-large")
DEFAULT_BATCH_SIZES = (1, 8)
DEFAULT_CLIP_SECONDS = 2.5
DEFAULT_SAMPLE_RATE = 16_000
DEFAULT_WARMUP = 2
DEFAULT_REPEAT = 10
DEFAULT_WORKDIR = Path(".cache/bench")
#: With a time budget: at least this many timed calls per cell, whatever the budget.
MIN_TIMED_RUNS = 5
#: With a time budget and no ``repeat``: at most this many timed calls per cell.
MAX_TIMED_RUNS = 10_000
DEVICES = ("cpu", "cuda")
META_FILENAME = "bench_meta.json"
BENCH_FORMAT = 1


# --- config -------------------------------------------------------------------------


def available_cpus() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def expand_runners(runners: Sequence[str]) -> tuple[str, ...]:
    """Resolve runner names: ``ort-int8`` -> one ``ort-int8:<preset>`` per preset, ``:default`` -> the default preset.

    Raises:
        ConfigError: an unknown runner or preset (the message lists the known ones).
    """
    out: list[str] = []
    for raw in runners:
        name = str(raw).strip()
        kind, _, preset = name.partition(":")
        if kind not in RUNNER_KINDS:
            raise ConfigError(f"runner {name!r}: unknown; choose from {list(RUNNER_KINDS)} (ort-int8 takes :<preset>)")
        if kind == "ort-int8":
            if not preset:
                names = list(QUANTIZATION_PRESETS)
            elif preset == "default":
                names = [DEFAULT_PRESET]
            elif preset in QUANTIZATION_PRESETS:
                names = [preset]
            else:
                raise ConfigError(f"runner {name!r}: unknown quantization preset {preset!r}; choose from {sorted(QUANTIZATION_PRESETS)} or 'default'")
            expanded = [f"ort-int8:{p}" for p in names]
        elif preset:
            raise ConfigError(f"runner {name!r}: only ort-int8 takes a ':<preset>' suffix")
        else:
            expanded = [kind]
        out.extend(r for r in expanded if r not in out)
    if not out:
        raise ConfigError("runners=(): name at least one runner, e.g. 'ort-fp32'")
    return tuple(out)


@dataclass(frozen=True)
class BenchConfig:
    """What ``ser bench`` measures and how.

    Attributes:
        shapes: model shapes (keys of ``training.model.MODEL_PRESETS``), random weights.
        runners: runner names (see the module docstring); expanded on construction
            (``ort-int8`` -> every preset).
        batch_sizes: clips per forward pass, each >= 1.
        clip_seconds: window length (s); ``W = round(clip_seconds * sample_rate)``.
        sample_rate: Hz.
        warmup: untimed calls per cell (>= 0).
        repeat: timed calls per cell (>= 1); ``None``: 10, or, with ``budget_s``,
            as many as fit (at most 10 000).
        budget_s: time budget of a cell's timed calls (s); at least 5 calls are timed.
        threads: CPU threads for PyTorch and ONNX Runtime (``None``: every core this
            process may use).
        device: ``"cpu"`` or ``"cuda"``: where ``torch-fp32`` runs; GPU-only runners
            are skipped with ``"cpu"``.
        workdir: where ONNX files are exported and cached.
        seed: seed of the random weights and inputs.
        num_labels: classes of the classification head.
        measure_peak: measure the matrix-multiply peak(s) (off: no % of peak).
        json_out: write the result as JSON here.
        markdown_out: write the result as markdown here.
        progress: print one line per cell as it completes.
        interleave: load every runner of a shape, then time the runners of each batch
            size in rounds, one call each per round (drift of the machine's speed hits
            them alike, so ratios hold); ``False``: one runner after another, each
            freed before the next is built (less memory).
    """

    shapes: tuple[str, ...] = DEFAULT_SHAPES
    runners: tuple[str, ...] = DEFAULT_RUNNERS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    clip_seconds: float = DEFAULT_CLIP_SECONDS
    sample_rate: int = DEFAULT_SAMPLE_RATE
    warmup: int = DEFAULT_WARMUP
    repeat: int | None = None
    budget_s: float | None = None
    threads: int | None = None
    device: str = "cpu"
    workdir: Path = DEFAULT_WORKDIR
    seed: int = 0
    num_labels: int = 8
    measure_peak: bool = True
    json_out: Path | None = None
    markdown_out: Path | None = None
    progress: bool = True
    interleave: bool = True

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        shapes = (self.shapes,) if isinstance(self.shapes, str) else tuple(self.shapes)
        known = known_shapes()
        if not shapes:
            raise ConfigError(f"shapes=(): name at least one model shape from {list(known)}")
        for s in shapes:
            if s not in known:
                raise ConfigError(f"shape {s!r}: unknown; choose from {list(known)}")
        set_("shapes", tuple(dict.fromkeys(shapes)))
        runners = (self.runners,) if isinstance(self.runners, str) else tuple(self.runners)
        set_("runners", expand_runners(runners))
        sizes = (self.batch_sizes,) if isinstance(self.batch_sizes, int) else tuple(self.batch_sizes)
        if not sizes:
            raise ConfigError("batch_sizes=(): name at least one batch size >= 1")
        for b in sizes:
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise ConfigError(f"batch size {b!r}: must be an integer >= 1")
        set_("batch_sizes", tuple(dict.fromkeys(sizes)))
        if not isinstance(self.sample_rate, int) or self.sample_rate < 1:
            raise ConfigError(f"sample_rate={self.sample_rate!r}: must be a positive integer (Hz)")
        if not (isinstance(self.clip_seconds, (int, float)) and self.clip_seconds > 0):
            raise ConfigError(f"clip_seconds={self.clip_seconds!r}: must be > 0")
        if self.warmup < 0:
            raise ConfigError(f"warmup={self.warmup}: must be >= 0")
        if self.repeat is not None and self.repeat < 1:
            raise ConfigError(f"repeat={self.repeat}: must be >= 1")
        if self.budget_s is not None and not self.budget_s > 0:
            raise ConfigError(f"budget_s={self.budget_s}: must be > 0 (or None: a fixed repeat count)")
        if self.threads is None:
            set_("threads", available_cpus())
        elif isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads={self.threads!r}: must be an integer >= 1")
        if self.device not in DEVICES:
            raise ConfigError(f"device={self.device!r}: expected one of {list(DEVICES)}")
        if self.num_labels < 2:
            raise ConfigError(f"num_labels={self.num_labels}: must be >= 2")
        set_("workdir", Path(self.workdir))
        for name in ("json_out", "markdown_out"):
            if getattr(self, name) is not None:
                set_(name, Path(getattr(self, name)))
        # The window must give the conv feature encoder at least one frame (checked per shape).
        for s in self.shapes:
            cfg = shape_config(s)
            try:
                encoder_frames(self.window_samples, conv_kernel=cfg["conv_kernel"], conv_stride=cfg["conv_stride"])
            except ConfigError:
                raise ConfigError(
                    f"clip_seconds={self.clip_seconds} at {self.sample_rate} Hz (W={self.window_samples}): "
                    f"too short for shape {s!r}'s conv feature encoder"
                ) from None

    @property
    def window_samples(self) -> int:
        """W, samples per clip."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def timed_runs(self) -> tuple[int, int]:
        """``(at least, at most)`` timed calls per cell."""
        if self.budget_s is None:
            n = DEFAULT_REPEAT if self.repeat is None else self.repeat
            return n, n
        most = MAX_TIMED_RUNS if self.repeat is None else self.repeat
        return min(MIN_TIMED_RUNS, most), most

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, tuple):
                d[k] = list(v)
        d["window_samples"] = self.window_samples
        return d


# --- imports ------------------------------------------------------------------------


def import_training_model():
    """Import ``training.model`` (torch, transformers) only when a model is built."""
    return importlib.import_module("training.model")


def known_shapes() -> tuple[str, ...]:
    """The model shapes the bench can build (``training.model.MODEL_PRESETS``)."""
    return tuple(import_training_model().MODEL_PRESETS)


def shape_config(shape: str) -> dict[str, Any]:
    """The preset of ``shape`` with Wav2Vec2Config's defaults for the fields it leaves out."""
    from export.bench_flops import WAV2VEC2_DEFAULTS

    return {**WAV2VEC2_DEFAULTS, **import_training_model().MODEL_PRESETS[shape]}


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One (shape, runner, batch) measurement.

    Attributes:
        shape, runner, batch: what was run.
        device: where it ran (``cpu``/``cuda``).
        status: ``measured``, ``skipped`` or ``failed``.
        reason: why it was skipped or failed (empty when measured).
        size_bytes: model bytes (ONNX file; PyTorch: state-dict tensors).
        times_ms: every timed call (ms).
        flops: counted FLOPs of one call (whole batch).
        peak: the key in :attr:`BenchResult.peaks` this cell is compared with.
        speedup_vs_ort_fp32: how many times faster than ``ort-fp32`` (same shape and batch):
            interleaved, the median over rounds of ``ort-fp32``'s time / this time in the
            same round (each pair shares the machine's state of the moment); sequential,
            ``ort-fp32``'s median / this median.
    """

    shape: str
    runner: str
    batch: int
    device: str
    status: str
    reason: str = ""
    size_bytes: int | None = None
    times_ms: tuple[float, ...] = ()
    flops: int | None = None
    peak: str | None = None
    speedup_vs_ort_fp32: float | None = None

    @property
    def measured(self) -> bool:
        """True when timed."""
        return self.status == "measured"

    @property
    def median_ms(self) -> float | None:
        """Median latency of one call (ms)."""
        return _percentile(self.times_ms, 50) if self.times_ms else None

    @property
    def p95_ms(self) -> float | None:
        """95th-percentile latency (ms, linear interpolation)."""
        return _percentile(self.times_ms, 95) if self.times_ms else None

    @property
    def clips_per_s(self) -> float | None:
        """Throughput at the median latency."""
        return self.batch / (self.median_ms / 1e3) if self.times_ms else None

    @property
    def gflops_per_s(self) -> float | None:
        """Counted FLOPs / median latency, in GFLOP/s."""
        if not self.times_ms or not self.flops:
            return None
        return self.flops / (self.median_ms / 1e3) / 1e9

    def to_json(self, peaks: Mapping[str, float] | None = None) -> dict[str, Any]:
        """A JSON-ready dict, with the derived figures."""
        pct = _pct_peak(self, peaks or {})
        return {
            "shape": self.shape,
            "runner": self.runner,
            "batch": self.batch,
            "device": self.device,
            "status": self.status,
            "reason": self.reason,
            "size_bytes": self.size_bytes,
            "median_ms": self.median_ms,
            "p95_ms": self.p95_ms,
            "clips_per_s": self.clips_per_s,
            "speedup_vs_ort_fp32": self.speedup_vs_ort_fp32,
            "flops": self.flops,
            "gflops_per_s": self.gflops_per_s,
            "peak": self.peak,
            "pct_of_peak": pct,
            "runs": len(self.times_ms),
            "times_ms": list(self.times_ms),
        }


def _percentile(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def _pct_peak(cell: Cell, peaks: Mapping[str, float]) -> float | None:
    g = cell.gflops_per_s
    p = peaks.get(cell.peak or "")
    return None if g is None or not p else 100.0 * g / p


@dataclass(frozen=True)
class BenchResult:
    """Everything one ``run_bench`` measured.

    Attributes:
        config: the run's :class:`BenchConfig`.
        environment: host, thread settings and library versions.
        peaks: ``{"cpu-fp32" | "cuda-fp32" | "cuda-fp16": GFLOP/s}`` of a square matmul.
        shapes: per shape: ``window_samples``, ``frames``, ``gflop_per_clip``, FLOP breakdown per clip.
        cells: one :class:`Cell` per (shape, runner, batch), in run order.
    """

    config: BenchConfig
    environment: Mapping[str, Any]
    peaks: Mapping[str, float]
    shapes: Mapping[str, Mapping[str, Any]]
    cells: tuple[Cell, ...]

    def cell(self, shape: str, runner: str, batch: int) -> Cell:
        """The cell of ``(shape, runner, batch)``.

        Raises:
            KeyError: no such cell.
        """
        for c in self.cells:
            if (c.shape, c.runner, c.batch) == (shape, runner, batch):
                return c
        raise KeyError((shape, runner, batch))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "format": BENCH_FORMAT,
            "config": self.config.to_json(),
            "environment": dict(self.environment),
            "peaks_gflops_per_s": dict(self.peaks),
            "shapes": {k: dict(v) for k, v in self.shapes.items()},
            "cells": [c.to_json(self.peaks) for c in self.cells],
        }

    def rows(self) -> list[list[str]]:
        """Table rows (strings), header first."""
        rows = [["shape", "runner", "dev", "batch", "size MB", "median ms", "p95 ms", "clips/s",
                 "x ort-fp32", "GFLOP/s", "% peak", "note"]]
        for c in self.cells:
            size = f"{c.size_bytes / 1e6:.1f}" if c.size_bytes is not None else "-"
            if not c.measured:
                rows.append([c.shape, c.runner, c.device, str(c.batch), size, "-", "-", "-", "-", "-", "-",
                             f"{c.status}: {c.reason}"])
                continue
            pct = _pct_peak(c, self.peaks)
            rows.append([
                c.shape, c.runner, c.device, str(c.batch), size,
                f"{c.median_ms:.1f}", f"{c.p95_ms:.1f}", f"{c.clips_per_s:.2f}",
                f"{c.speedup_vs_ort_fp32:.2f}" if c.speedup_vs_ort_fp32 is not None else "-",
                f"{c.gflops_per_s:.0f}" if c.gflops_per_s is not None else "-",
                f"{pct:.0f}" if pct is not None else "-",
                f"n={len(c.times_ms)} vs {c.peak}" if c.peak else f"n={len(c.times_ms)}",
            ])
        return rows

    def header_lines(self) -> list[str]:
        """The run's context: host, threads, versions, W, FLOPs per clip, peaks."""
        env = self.environment
        lines = [
            f"ser bench: W={self.config.window_samples} samples ({self.config.clip_seconds:g} s @ {self.config.sample_rate} Hz), "
            f"device={self.config.device}, threads={env.get('threads')} "
            f"(torch.get_num_threads()={env.get('torch_threads')}, ORT intra_op={env.get('threads')}, inter_op=1)",
            f"host: {env.get('cpu')} ({env.get('cpus_available')} cores available{', AVX-512 VNNI' if env.get('avx512_vnni') else ''})"
            + (f"; GPU: {env['gpu']}" if env.get("gpu") else ""),
            "versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
            "timing: " + ("interleaved (the runners of a shape and batch size take turns, call by call)"
                          if self.config.interleave else "sequential (one runner after another)"),
        ]
        for s, info in self.shapes.items():
            lines.append(f"shape {s}: {info['frames']} frames/clip, {info['gflop_per_clip']:.2f} GFLOP/clip (matmul+conv, 2 per MAC)")
        if self.peaks:
            lines.append("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in self.peaks.items()))
        return lines

    def table(self) -> str:
        """The fixed-width text table with its header lines."""
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        right = {3, 4, 5, 6, 7, 8, 9, 10}
        fmt = lambda r: "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip()  # noqa: E731
        body = [fmt(rows[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]]
        return "\n".join(self.header_lines() + [""] + body)

    def to_markdown(self) -> str:
        """The table as markdown, its context as a bullet list."""
        rows = self.rows()
        out = ["# ser bench", ""] + [f"- {line}" for line in self.header_lines()] + [""]
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "|".join("---:" if i in {3, 4, 5, 6, 7, 8, 9, 10} else "---" for i in range(len(rows[0]))) + "|")
        out += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows[1:]]
        return "\n".join(out) + "\n"

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_json` (indented). Returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    def write_markdown(self, path: str | Path) -> Path:
        """Write :meth:`to_markdown`. Returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_markdown())
        return path


# --- environment and peaks -------------------------------------------------------------


def _cpu_info() -> tuple[str, bool]:
    """The CPU's model name and whether it has AVX-512 VNNI."""
    from export.quantize import cpu_flags

    name = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    return name, "avx512_vnni" in cpu_flags()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _environment(config: BenchConfig) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    cpu, vnni = _cpu_info()
    env: dict[str, Any] = {
        "cpu": cpu,
        "avx512_vnni": vnni,
        "cpus_available": available_cpus(),
        "threads": config.threads,
        "torch_threads": torch.get_num_threads(),
        "ort_providers": list(ort.get_available_providers()),
        "torch_quantized_engine": torch.backends.quantized.engine,
        "versions": _versions(),
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
        torch.mm(a, b)
        best, start, runs = float("inf"), time.perf_counter(), 0
        while runs < 3 or (time.perf_counter() - start < budget_s and runs < 50):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
            runs += 1
        return 2 * n**3 / best / 1e9
    n = n or 8192
    a = torch.randn(n, n, dtype=tdtype, device="cuda")
    b = torch.randn(n, n, dtype=tdtype, device="cuda")
    for _ in range(3):
        torch.mm(a, b)
    torch.cuda.synchronize()
    best, start, runs = float("inf"), time.perf_counter(), 0
    while runs < 3 or (time.perf_counter() - start < budget_s and runs < 100):
        t0 = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 10)
        runs += 1
    del a, b
    return 2 * n**3 / best / 1e9


# --- runners ------------------------------------------------------------------------


def runner_device(runner: str, config: BenchConfig) -> str:
    """Where ``runner`` runs under ``config``."""
    kind = runner.partition(":")[0]
    if kind in ("torch-fp16", "ort-cuda-fp32"):
        return "cuda"
    if kind == "torch-fp32":
        return config.device
    return "cpu"


def runner_peak(runner: str, config: BenchConfig) -> str:
    """The key of the matmul peak a runner is compared with."""
    device = runner_device(runner, config)
    if device == "cpu":
        return "cpu-fp32"
    return "cuda-fp16" if runner == "torch-fp16" else "cuda-fp32"


def skip_reason(runner: str, config: BenchConfig) -> str:
    """Why ``runner`` cannot run on this host under ``config`` (empty: it can)."""
    kind = runner.partition(":")[0]
    if runner_device(runner, config) == "cuda":
        import torch

        if kind == "torch-fp16" and config.device != "cuda":
            return "needs --device cuda"
        if kind in ("torch-fp32", "torch-fp16") and not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        if kind == "ort-cuda-fp32":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {', '.join(ort.get_available_providers())})"
    if kind == "torch-int8-dynamic":
        import torch

        if not torch.backends.quantized.supported_engines or torch.backends.quantized.engine == "none":
            return "PyTorch has no quantized CPU engine on this host"
    return ""


@dataclass
class _Prepared:
    """A runner ready to time: ``call(batch)`` returns a zero-argument callable."""

    device: str
    size_bytes: int | None
    make_call: Callable[[int], Callable[[], Any]]
    close: Callable[[], None] = lambda: None


def _inputs(config: BenchConfig, batch: int):
    import numpy as np

    rng = np.random.default_rng(config.seed + batch)
    waveform = (0.1 * rng.standard_normal((batch, config.window_samples))).astype(np.float32)
    num_samples = np.full((batch, 1), config.window_samples, dtype=np.int64)
    return waveform, num_samples


def _ort_runner(path: Path, config: BenchConfig, *, cuda: bool = False) -> _Prepared:
    import onnxruntime as ort

    from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    if cuda and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"CUDAExecutionProvider did not load (session providers: {session.get_providers()})")

    def make_call(batch: int):
        waveform, num_samples = _inputs(config, batch)
        feeds = {INPUT_WAVEFORM: waveform, INPUT_NUM_SAMPLES: num_samples}
        return lambda: session.run(None, feeds)

    holder = {"session": session}
    return _Prepared("cuda" if cuda else "cpu", path.stat().st_size, make_call, close=holder.clear)


def _state_bytes(module) -> int:
    """Bytes of every tensor in a module's state dict (quantized packed params included)."""
    import torch

    def size(obj) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, (tuple, list)):
            return sum(size(o) for o in obj)
        return 0

    return sum(size(v) for v in module.state_dict().values())


def _torch_runner(classifier, runner: str, config: BenchConfig) -> _Prepared:
    import copy

    import torch
    from torch import nn

    tm = import_training_model()
    device = runner_device(runner, config)
    if runner == "torch-fp32":
        module = classifier if device == "cpu" else copy.deepcopy(classifier).to(device)
    elif runner == "torch-int8-dynamic":
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices (moving to torchao)
            module = quantize_dynamic(classifier, {nn.Linear}, dtype=torch.qint8, inplace=False)
    elif runner == "torch-fp16":

        class HalfClassifier(nn.Module):
            """fp16 wav2vec2 behind the fp32 normalisation (fp16 sums over W samples could overflow)."""

            def __init__(self, model: nn.Module) -> None:
                super().__init__()
                self.model = model

            def forward(self, waveform, num_samples):
                x, mask = tm.WaveformClassifier.normalize(waveform, num_samples)
                logits = self.model(input_values=x.half(), attention_mask=mask).logits.float()
                return logits, torch.softmax(logits, dim=-1)

        module = HalfClassifier(copy.deepcopy(classifier.model).half()).to(device).eval()
    else:  # pragma: no cover - expand_runners rejects other names
        raise ConfigError(f"runner {runner!r}: not a PyTorch runner")
    module.eval()
    cuda = device == "cuda"

    def make_call(batch: int):
        waveform, num_samples = _inputs(config, batch)
        x = torch.from_numpy(waveform).to(device)
        n = torch.from_numpy(num_samples).to(device)

        def call():
            with torch.inference_mode():
                out = module(x, n)
            if cuda:
                torch.cuda.synchronize()
            return out

        return call

    holder = {"module": module}

    def close() -> None:
        holder.clear()
        if cuda:
            torch.cuda.empty_cache()

    return _Prepared(device, _state_bytes(module), make_call, close=close)


def _time_call(call: Callable[[], Any], config: BenchConfig) -> tuple[float, ...]:
    for _ in range(config.warmup):
        call()
    least, most = config.timed_runs
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < most:
        if len(times) >= least and config.budget_s is not None and time.perf_counter() - start >= config.budget_s:
            break
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return tuple(times)


# --- ONNX files -----------------------------------------------------------------------


def _shape_dir(config: BenchConfig, shape: str) -> Path:
    return config.workdir / f"{shape}-W{config.window_samples}-c{config.num_labels}-s{config.seed}"


def _meta(config: BenchConfig, shape: str) -> dict[str, Any]:
    from export.onnx_export import EXPORT_REVISION, OnnxExportConfig

    versions = _versions()
    return {
        "onnx_export": {**asdict(OnnxExportConfig()), "revision": EXPORT_REVISION},  # a changed exporter re-exports
        "format": BENCH_FORMAT,
        "shape": shape,
        "window_samples": config.window_samples,
        "num_labels": config.num_labels,
        "seed": config.seed,
        "torch": versions.get("torch"),
        "transformers": versions.get("transformers"),
    }


def ensure_fp32_onnx(classifier, config: BenchConfig, shape: str, *, out: TextIO | None = None) -> Path:
    """The cached fp32 ONNX file of ``shape`` (exported now if missing or made from something else)."""
    from export.onnx_export import export_onnx

    directory = _shape_dir(config, shape)
    path, meta_path = directory / "fp32.onnx", directory / META_FILENAME
    meta = _meta(config, shape)
    if path.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return path
        except ValueError:
            pass
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.onnx"):
        stale.unlink()
    meta_path.unlink(missing_ok=True)
    if out is not None:
        print(f"[bench] exporting {shape} (W={config.window_samples}) to {path} ...", file=out, flush=True)
    t0 = time.perf_counter()
    tmp = directory / ".fp32.onnx.tmp"
    export_onnx(classifier, tmp, window_samples=config.window_samples)
    os.replace(tmp, path)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if out is not None:
        print(f"[bench]   {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", file=out, flush=True)
    return path


def ensure_int8_onnx(fp32_path: Path, preset: str, *, out: TextIO | None = None) -> Path:
    """The cached int8 ONNX file of ``fp32_path`` for a quantization preset (quantized now if missing)."""
    from export.quantize import quantize_int8

    path = fp32_path.parent / f"int8-{preset}.onnx"
    options_path = path.with_suffix(".json")  # the preset's options: a changed preset is re-quantized
    options = json.dumps(QUANTIZATION_PRESETS[preset].to_json(), sort_keys=True)
    if path.is_file() and path.stat().st_mtime >= fp32_path.stat().st_mtime and options_path.is_file() \
            and options_path.read_text() == options:
        return path
    if out is not None:
        print(f"[bench] quantizing {fp32_path.parent.name} with preset {preset} ...", file=out, flush=True)
    t0 = time.perf_counter()
    tmp = fp32_path.parent / f".int8-{preset}.onnx.tmp"
    quantize_int8(fp32_path, tmp, config=QUANTIZATION_PRESETS[preset])
    os.replace(tmp, path)
    options_path.write_text(options)
    if out is not None:
        print(f"[bench]   {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", file=out, flush=True)
    return path


# --- the run --------------------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def speedup(reference: Cell, cell: Cell, *, paired: bool) -> float:
    """How many times faster ``cell`` ran than ``reference``.

    ``paired`` (the calls were interleaved, round ``i`` of both ran back to back): the
    median of the per-round ratios, which cancels drift of the machine's speed across
    rounds; otherwise, or if the two have different numbers of calls (one failed), the
    ratio of the medians.
    """
    if paired and len(reference.times_ms) == len(cell.times_ms):
        return statistics.median(r / t for r, t in zip(reference.times_ms, cell.times_ms, strict=True))
    return reference.median_ms / cell.median_ms


def _close(ready: list[tuple[str, dict[str, Any], _Prepared]]) -> None:
    """Close and forget every prepared runner of ``ready`` (emptied in place)."""
    import gc

    for _, _, prepared in ready:
        prepared.close()
    ready.clear()
    gc.collect()


def _measure(ready: Sequence[tuple[str, dict[str, Any], _Prepared]], model_config, config: BenchConfig,
             log: Callable[[str], None]) -> list[Cell]:
    """Time every prepared runner at every batch size: one :class:`Cell` each.

    With ``config.interleave`` the runners of one batch size take turns call by call
    (:func:`_time_interleaved`), so a machine whose speed drifts during the run slows
    them all alike and their ratios hold; otherwise each is timed on its own.
    """
    cells: list[Cell] = []
    for b in config.batch_sizes:
        flops = count_flops(model_config, window_samples=config.window_samples, batch=b).total
        calls, failed = {}, {}
        for runner, _, prepared in ready:
            try:
                calls[runner] = prepared.make_call(b)
            except Exception as exc:  # noqa: BLE001 - one runner's failure must not end the run
                failed[runner] = exc
        if config.interleave:
            times, more_failed = _time_interleaved(calls, config)
            failed.update(more_failed)
        else:
            times = {}
            for runner, call in calls.items():
                try:
                    times[runner] = _time_call(call, config)
                except Exception as exc:  # noqa: BLE001
                    failed[runner] = exc
        for runner, base, prepared in ready:
            if runner in failed:
                reason = _error_text(failed[runner])
                cells.append(Cell(batch=b, status="failed", reason=reason, size_bytes=prepared.size_bytes, flops=flops, **base))
                log(f"[bench] {base['shape']} {runner} b{b}: failed ({reason})")
                continue
            cell = Cell(batch=b, status="measured", size_bytes=prepared.size_bytes, times_ms=times[runner], flops=flops, **base)
            cells.append(cell)
            log(f"[bench] {base['shape']} {runner} b{b}: median {cell.median_ms:.1f} ms, p95 {cell.p95_ms:.1f} ms "
                f"({len(cell.times_ms)} runs, {cell.gflops_per_s:.0f} GFLOP/s)")
    return cells


def _time_interleaved(calls: Mapping[str, Callable[[], Any]], config: BenchConfig
                      ) -> tuple[dict[str, tuple[float, ...]], dict[str, BaseException]]:
    """Warm every call up, then time them in rounds: each call once per round, in turn.

    Returns:
        ``(times, failed)``: ms of every timed call per name, and the exception of
        each call that raised (it leaves the rounds; the others go on). With
        ``config.budget_s`` the rounds stop once ``budget_s`` per call has passed
        (at least :data:`MIN_TIMED_RUNS` rounds).
    """
    failed: dict[str, BaseException] = {}
    for name, call in calls.items():
        try:
            for _ in range(config.warmup):
                call()
        except Exception as exc:  # noqa: BLE001
            failed[name] = exc
    live = {name: call for name, call in calls.items() if name not in failed}
    times: dict[str, list[float]] = {name: [] for name in live}
    least, most = config.timed_runs
    start = time.perf_counter()
    for done in range(most):
        if done >= least and config.budget_s is not None and time.perf_counter() - start >= config.budget_s * max(len(live), 1):
            break
        for name, call in list(live.items()):
            t0 = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001
                failed[name] = exc
                del live[name]
                continue
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: tuple(t) for name, t in times.items() if name in live}, failed


def run_bench(config: BenchConfig, *, out: TextIO = sys.stdout) -> BenchResult:
    """Measure every (shape, runner, batch) cell of ``config`` and print the table to ``out``.

    Args:
        config: what to measure.
        out: where progress lines and the final table go.

    Returns:
        The :class:`BenchResult` (also written to ``config.json_out`` /
        ``config.markdown_out`` when set).
    """
    import gc

    import torch

    tm = import_training_model()
    torch.set_num_threads(config.threads)
    log = (lambda msg: print(msg, file=out, flush=True)) if config.progress else (lambda msg: None)
    labels = tuple(f"class_{i}" for i in range(config.num_labels))
    skips = {r: skip_reason(r, config) for r in config.runners}
    environment = _environment(config)

    peaks: dict[str, float] = {}
    if config.measure_peak:
        needed = {runner_peak(r, config) for r in config.runners if not skips[r]}
        for key in ("cpu-fp32", "cuda-fp32", "cuda-fp16"):
            if key in needed:
                device, dtype = key.split("-")
                peaks[key] = measure_matmul_peak(device=device, dtype={"fp32": "float32", "fp16": "float16"}[dtype])
                log(f"[bench] matmul peak {key}: {peaks[key]:.0f} GFLOP/s")

    shapes_info: dict[str, dict[str, Any]] = {}
    cells: list[Cell] = []
    for shape in config.shapes:
        model = tm.new_model(shape, labels=labels, seed=config.seed)
        classifier = tm.WaveformClassifier(model).eval()
        per_clip = count_flops(model.config, window_samples=config.window_samples)
        shapes_info[shape] = {
            "window_samples": config.window_samples,
            "frames": per_clip.frames,
            "gflop_per_clip": per_clip.total / 1e9,
            "flops_per_clip": dict(per_clip.parts),
        }
        fp32_path: Path | None = None
        fp32_error = ""
        ready: list[tuple[str, dict[str, Any], _Prepared]] = []
        for runner in config.runners:
            device = runner_device(runner, config)
            base = dict(shape=shape, runner=runner, device=device, peak=runner_peak(runner, config))
            if skips[runner]:
                cells += [Cell(batch=b, status="skipped", reason=skips[runner], **base) for b in config.batch_sizes]
                log(f"[bench] {shape} {runner}: skipped ({skips[runner]})")
                continue
            try:
                if runner.startswith("ort-"):
                    if fp32_path is None and not fp32_error:
                        try:
                            fp32_path = ensure_fp32_onnx(classifier, config, shape, out=out if config.progress else None)
                        except Exception as exc:  # noqa: BLE001 - recorded in the cells
                            fp32_error = f"fp32 export failed: {_error_text(exc)}"
                    if fp32_error:
                        raise RuntimeError(fp32_error)
                    if runner.startswith("ort-int8:"):
                        path = ensure_int8_onnx(fp32_path, runner.partition(":")[2], out=out if config.progress else None)
                    else:
                        path = fp32_path
                    prepared = _ort_runner(path, config, cuda=runner == "ort-cuda-fp32")
                else:
                    prepared = _torch_runner(classifier, runner, config)
            except Exception as exc:  # noqa: BLE001 - one runner's failure must not end the run
                reason = _error_text(exc)
                cells += [Cell(batch=b, status="failed", reason=reason, **base) for b in config.batch_sizes]
                log(f"[bench] {shape} {runner}: failed ({reason})")
                continue
            ready.append((runner, base, prepared))
            if not config.interleave:  # time it now and free it before the next runner is built
                try:
                    cells += _measure(ready, model.config, config, log)
                finally:
                    _close(ready)
        if ready:  # interleaved: every runner of the shape is held until now
            try:
                cells += _measure(ready, model.config, config, log)
            finally:
                _close(ready)
        del model, classifier
        gc.collect()
    order = {(s, r, b): i for i, (s, r, b) in enumerate(
        (s, r, b) for s in config.shapes for r in config.runners for b in config.batch_sizes)}
    cells.sort(key=lambda c: order[(c.shape, c.runner, c.batch)])

    reference = {(c.shape, c.batch): c for c in cells if c.runner == "ort-fp32" and c.measured}
    cells = [
        replace(c, speedup_vs_ort_fp32=speedup(reference[(c.shape, c.batch)], c, paired=config.interleave))
        if c.measured and (c.shape, c.batch) in reference else c
        for c in cells
    ]
    result = BenchResult(config=config, environment=environment, peaks=peaks, shapes=shapes_info, cells=tuple(cells))
    print(result.table(), file=out, flush=True)
    if config.json_out is not None:
        log(f"[bench] wrote {result.write_json(config.json_out)}")
    if config.markdown_out is not None:
        log(f"[bench] wrote {result.write_markdown(config.markdown_out)}")
    return result


# --- command line -------------------------------------------------------------------


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,8") from None


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``ser bench``'s options to ``parser`` (imports nothing heavy). Returns ``parser``."""
    p = parser
    p.add_argument("--shapes", "--shape", type=_csv, default=DEFAULT_SHAPES, metavar="LIST",
                   help=f"model shapes, comma-separated (default: {','.join(DEFAULT_SHAPES)})")
    p.add_argument("--runners", "--runner", type=_csv, default=DEFAULT_RUNNERS, metavar="LIST",
                   help="runners, comma-separated: ort-fp32, ort-int8 (every preset) or ort-int8:<preset>|default, "
                        "torch-fp32, torch-int8-dynamic, torch-fp16 (CUDA), ort-cuda-fp32 "
                        f"(default: all; int8 presets: {', '.join(QUANTIZATION_PRESETS)})")
    p.add_argument("--batch-sizes", "--batch-size", type=_csv_ints, default=DEFAULT_BATCH_SIZES, metavar="LIST",
                   help=f"batch sizes, comma-separated (default: {','.join(map(str, DEFAULT_BATCH_SIZES))})")
    p.add_argument("--seconds", type=float, default=DEFAULT_CLIP_SECONDS,
                   help=f"clip length in seconds (default: {DEFAULT_CLIP_SECONDS})")
    p.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help=f"Hz (default: {DEFAULT_SAMPLE_RATE})")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help=f"untimed calls per cell (default: {DEFAULT_WARMUP})")
    p.add_argument("--repeat", type=int, default=None,
                   help=f"timed calls per cell (default: {DEFAULT_REPEAT}; with --budget-s: as many as fit)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"time budget of each cell's timed calls in seconds (at least {MIN_TIMED_RUNS} calls)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch and ONNX Runtime (default: every core available)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where torch-fp32 runs; cuda enables GPU runners (default: cpu)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"cache of exported/quantized ONNX files (default: {DEFAULT_WORKDIR})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default: 0)")
    p.add_argument("--no-peak", action="store_true", help="do not measure the matmul peak")
    p.add_argument("--json", type=Path, default=None, dest="json_out", help="also write the result as JSON here")
    p.add_argument("--markdown", type=Path, default=None, dest="markdown_out", help="also write the result as markdown here")
    p.add_argument("--sequential", action="store_true",
                   help="time one runner after another, each built and freed in turn (less memory); by default the "
                        "runners of a shape are all loaded and take turns call by call, so a machine whose speed "
                        "drifts during the run slows them alike and the ratios between them hold")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` of parsed :func:`add_bench_arguments` options."""
    return BenchConfig(
        shapes=args.shapes,
        runners=args.runners,
        batch_sizes=args.batch_sizes,
        clip_seconds=args.seconds,
        sample_rate=args.sample_rate,
        warmup=args.warmup,
        repeat=args.repeat,
        budget_s=args.budget_s,
        threads=args.threads,
        device=args.device,
        workdir=args.workdir,
        seed=args.seed,
        measure_peak=not args.no_peak,
        json_out=args.json_out,
        markdown_out=args.markdown_out,
        progress=not args.quiet,
        interleave=not args.sequential,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m export.bench``: exactly ``ser bench`` (for hosts where the package is not installed)."""
    from ser.cli import main as ser_main  # argparse and client.errors only

    return ser_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
