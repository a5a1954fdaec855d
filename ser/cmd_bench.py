"""``ser bench`` and ``ser bench-client``: the in-process model benchmark and the client benchmark.

Their handlers, and the registration of the options that :mod:`ser.bench_options` and
:mod:`client.bench` define.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_bench(args: argparse.Namespace) -> int:
    """`ser bench`: in-process latency/throughput of shapes x runners x batch sizes, side by side."""
    from export.bench import run_bench
    from ser.bench_options import config_from_args

    run_bench(config_from_args(args))
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
    from ser.bench_options import add_bench_arguments  # no torch, numpy or onnxruntime

    add_bench_arguments(sub.add_parser(
        "bench", help="in-process benchmark: model shapes x runners (ORT fp32/int8 presets, PyTorch fp32/int8/fp16) x batch sizes"
    )).set_defaults(func=cmd_bench)

    from client.bench import add_arguments as add_client_bench_arguments  # numpy only, no server

    bc = add_client_bench_arguments(sub.add_parser(
        "bench-client", help="client benchmark: preprocessing cost vs served latency per 2.5 s clip, directory-mode clips/s"
    ))
    bc.add_argument("--repository", type=Path, default=None, help="start the local tritonserver on this repository for the run (instead of --url)")
    bc.set_defaults(func=cmd_bench_client)
