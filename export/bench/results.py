"""What ``ser bench`` measured: one :class:`Cell` per (shape, runner, batch), the :class:`BenchResult` table."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from client.timing import percentile
from export.bench.config import BENCH_FORMAT, BenchConfig


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
        return percentile(self.times_ms, 50) if self.times_ms else None

    @property
    def p95_ms(self) -> float | None:
        """95th-percentile latency (ms, linear interpolation)."""
        return percentile(self.times_ms, 95) if self.times_ms else None

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

