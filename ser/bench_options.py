"""``ser bench``'s command-line options: argparse -> :class:`export.bench.config.BenchConfig`.

Part of the command layer: it imports the bench's defaults and preset names (no torch,
numpy or onnxruntime), so ``ser --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from export.bench.config import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_CLIP_SECONDS,
    DEFAULT_REPEAT,
    DEFAULT_RUNNERS,
    DEFAULT_SAMPLE_RATE,
    DEFAULT_SHAPES,
    DEFAULT_WARMUP,
    DEFAULT_WORKDIR,
    DEVICES,
    MIN_TIMED_RUNS,
    BenchConfig,
)
from export.quantize import QUANTIZATION_PRESETS
from ser.arg_types import csv_ints, csv_list


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``ser bench``'s options to ``parser`` (imports nothing heavy). Returns ``parser``."""
    p = parser
    p.add_argument("--shapes", "--shape", type=csv_list, default=DEFAULT_SHAPES, metavar="LIST",
                   help=f"model shapes, comma-separated (default: {','.join(DEFAULT_SHAPES)})")
    p.add_argument("--runners", "--runner", type=csv_list, default=DEFAULT_RUNNERS, metavar="LIST",
                   help="runners, comma-separated: ort-fp32, ort-int8 (every preset) or ort-int8:<preset>|default, "
                        "torch-fp32, torch-int8-dynamic, torch-fp16 (CUDA), ort-cuda-fp32 "
                        f"(default: all; int8 presets: {', '.join(QUANTIZATION_PRESETS)})")
    p.add_argument("--batch-sizes", "--batch-size", type=csv_ints, default=DEFAULT_BATCH_SIZES, metavar="LIST",
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
