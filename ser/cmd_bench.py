"""``ser bench`` and ``ser bench-client``: the in-process model benchmark and the client benchmark.

Their handlers and options: ``ser bench``'s are registered here with :mod:`export.bench.config`'s
defaults, ``ser bench-client``'s are :mod:`client.bench`'s own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ser.arg_types import csv_ints, csv_list, non_negative_int, positive_float, positive_int


def cmd_bench(args: argparse.Namespace) -> int:
    """`ser bench`: in-process latency/throughput of shapes x runners x batch sizes, side by side."""
    from export.bench import run_bench

    run_bench(_bench_config(args))
    return 0


def cmd_bench_client(args: argparse.Namespace) -> int:
    """`ser bench-client`: preprocessing vs served latency, directory-mode clips/s (starts a server with --repository)."""
    import contextlib

    from client.bench import config_from_args, run_client_bench
    from client.triton_client import SerClient

    config = config_from_args(args)
    with contextlib.ExitStack() as stack:
        url = args.url
        if args.repository is not None:
            from deploy.local_triton import LocalTriton

            server = stack.enter_context(LocalTriton(args.repository))
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
        client = stack.enter_context(SerClient(url, model=args.model, protocol=args.protocol))
        run_client_bench(client, config)
    return 0


def add_parsers(sub) -> None:
    """Add ``bench`` and ``bench-client`` to ``sub`` (the ``ser`` subcommands)."""
    _add_bench_arguments(sub.add_parser(
        "bench", help="in-process benchmark: model shapes x runners (ORT fp32/int8 presets, PyTorch fp32/int8/fp16) x batch sizes"
    )).set_defaults(func=cmd_bench)

    from client.bench import add_arguments as add_client_bench_arguments  # numpy only, no server

    bc = add_client_bench_arguments(sub.add_parser(
        "bench-client", help="client benchmark: preprocessing cost vs served latency per 2.5 s clip, directory-mode clips/s"
    ))
    bc.add_argument("--repository", type=Path, default=None, help="start the local tritonserver on this repository for the run (instead of --url)")
    bc.set_defaults(func=cmd_bench_client)


def _add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``ser bench``'s options to ``parser``; their defaults are :mod:`export.bench.config`'s. Returns ``parser``."""
    from export.bench.config import (  # noqa: PLC0415 - no torch, numpy or onnxruntime
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
    )
    from export.quantize import QUANTIZATION_PRESETS  # noqa: PLC0415

    p = parser
    p.add_argument("--shapes", "--shape", type=csv_list, default=DEFAULT_SHAPES, metavar="LIST",
                   help=f"model shapes, comma-separated (default: {','.join(DEFAULT_SHAPES)})")
    p.add_argument("--runners", "--runner", type=csv_list, default=DEFAULT_RUNNERS, metavar="LIST",
                   help="runners, comma-separated: ort-fp32, ort-int8 (every preset) or ort-int8:<preset>|default, "
                        "torch-fp32, torch-int8-dynamic, torch-fp16 (CUDA), ort-cuda-fp32 "
                        f"(default: all; int8 presets: {', '.join(QUANTIZATION_PRESETS)})")
    p.add_argument("--batch-sizes", "--batch-size", type=csv_ints, default=DEFAULT_BATCH_SIZES, metavar="LIST",
                   help=f"batch sizes, comma-separated (default: {','.join(map(str, DEFAULT_BATCH_SIZES))})")
    p.add_argument("--seconds", type=positive_float, default=DEFAULT_CLIP_SECONDS,
                   help=f"clip length in seconds (default: {DEFAULT_CLIP_SECONDS})")
    p.add_argument("--sample-rate", type=positive_int, default=DEFAULT_SAMPLE_RATE, help=f"Hz (default: {DEFAULT_SAMPLE_RATE})")
    p.add_argument("--warmup", type=non_negative_int, default=DEFAULT_WARMUP, help=f"untimed calls per cell (default: {DEFAULT_WARMUP})")
    p.add_argument("--repeat", type=positive_int, default=None,
                   help=f"timed calls per cell (default: {DEFAULT_REPEAT}; with --budget-s: as many as fit)")
    p.add_argument("--budget-s", type=positive_float, default=None,
                   help=f"time budget of each cell's timed calls in seconds (at least {MIN_TIMED_RUNS} calls)")
    p.add_argument("--threads", type=positive_int, default=None,
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


def _bench_config(args: argparse.Namespace):
    """The :class:`~export.bench.config.BenchConfig` of parsed :func:`_add_bench_arguments` options."""
    from export.bench.config import BenchConfig  # noqa: PLC0415

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
