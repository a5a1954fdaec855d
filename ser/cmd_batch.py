"""``ser batch``: score an archive on Ray Data (a local cluster, or a Ray cluster), rows into Parquet.

Its options and handler; the handler imports :mod:`deploy.bulk` (and, through it, Ray) when run.
"""

from __future__ import annotations

import argparse
import sys

from client.client_options import (
    DEFAULT_GRPC_URL,
    DEFAULT_HTTP_URL,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_S,
    PROTOCOLS,
)
from ser.arg_types import positive_float, positive_int, seconds

#: What ``ser batch`` tells a user whose environment lacks Ray Data.
INSTALL_HINT = "ser batch needs Ray Data: pip install 'ser-triton[ray]' (or `pip install -e '.[ray]'` in a checkout)"


def cmd_batch(args: argparse.Namespace) -> int:
    """`ser batch`: score every audio file of the sources not yet in --out; exit 1 if any file failed (unless --error-rows-ok)."""
    from dataclasses import replace

    from client.audio import AudioConfig
    from client.errors import ConfigError
    from deploy.bulk.config import BULK_RETRY, BulkConfig
    from deploy.bulk.sources import parse_shard

    try:
        import pyarrow  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    from deploy.bulk.job import run_batch

    retry = BULK_RETRY if args.retry_for is None else replace(BULK_RETRY, retry_for_s=args.retry_for)
    config = BulkConfig(
        sources=tuple(args.sources), out=args.out,
        url=args.url or (DEFAULT_GRPC_URL if args.protocol == "grpc" else DEFAULT_HTTP_URL), model=args.model, protocol=args.protocol,
        model_version=args.model_version, actors=args.actors, files_per_batch=args.files_per_batch,
        actor_cpus=args.actor_cpus, timeout_s=args.timeout_s, retry=retry,
        audio=AudioConfig(max_duration_s=args.max_duration_s, min_duration_s=args.min_duration_s),
        ray_address=args.ray_address, num_cpus=args.num_cpus, shard=parse_shard(args.shard) if args.shard else None,
    )
    summary = run_batch(config, print_fn=lambda line: print(line, file=sys.stderr))
    print(f"{summary.scored} files scored ({summary.failed} with an error), {summary.skipped} already done, "
          f"{summary.elapsed_s:.1f} s ({summary.files_per_s:.1f} files/s) with {summary.actors} clients after "
          f"{summary.startup_s:.1f} s to start Ray; rows in {args.out}",
          file=sys.stderr)
    if summary.failed and not args.error_rows_ok:
        print(f"error: {summary.failed} of {summary.total} files failed (rows with error_type set in {args.out})", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub) -> None:
    """Add ``batch`` to ``sub`` (the ``ser`` subcommands)."""
    from client.audio import DEFAULT_MAX_DURATION_S, DEFAULT_MIN_DURATION_S
    from deploy.bulk.config import ACTORS_PER_INSTANCE, BULK_RETRY, BulkConfig

    defaults = BulkConfig(sources=("-",), out="-", url=DEFAULT_GRPC_URL)
    pb = sub.add_parser(
        "batch", help="score an archive (folders, globs, s3://, gs://...) on Ray Data through Triton servers; Parquet rows",
        description="Lists the audio files of SOURCE..., skips those already in --out, decodes and windows them in Ray "
                    "tasks, scores them through a pool of clients (one per Ray actor, each balancing over every "
                    "server of --url) and writes one Parquet row per file: source, label, probabilities, duration_s, "
                    "windows, model, model_version, error_type, error. Runs on a local Ray cluster started here, or "
                    "on --ray-address / RAY_ADDRESS.",
    )
    pb.add_argument("sources", nargs="+", metavar="SOURCE",
                    help="a folder (recursive), a glob ('/data/**/*.wav'), a file, or a URI (s3://bucket/prefix/, gs://..., "
                         "any scheme pyarrow or an installed fsspec filesystem reads)")
    pb.add_argument("--out", required=True, help="output folder (local or a URI): Parquet parts and batch.json; a re-run "
                                                 "into it scores only the files missing from it")
    pb.add_argument("--url", default=None,
                    help=f"the servers: HOST:PORT, HOST:PORT,HOST:PORT or dns:///NAME:PORT (default: {DEFAULT_GRPC_URL} "
                         f"for gRPC, {DEFAULT_HTTP_URL} for HTTP)")
    pb.add_argument("--protocol", choices=list(PROTOCOLS), default=PROTOCOLS[0])
    pb.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default: {DEFAULT_MODEL})")
    pb.add_argument("--model-version", default="", help="model version (default: the server's choice)")
    pb.add_argument("--actors", type=positive_int, default=None,
                    help=f"clients in the pool, one Ray actor each (default: {ACTORS_PER_INSTANCE} per model instance "
                         "per server, read from the model config)")
    pb.add_argument("--files-per-batch", type=positive_int, default=defaults.files_per_batch,
                    help=f"files per Ray batch: one decoding task, one scoring call, written together (default: {defaults.files_per_batch})")
    pb.add_argument("--actor-cpus", type=positive_float, default=defaults.actor_cpus,
                    help=f"CPUs Ray reserves per client actor (default: {defaults.actor_cpus:g}; it mostly waits on the network)")
    pb.add_argument("--timeout-s", type=positive_float, default=DEFAULT_TIMEOUT_S,
                    help=f"time limit of each call, s (default: {DEFAULT_TIMEOUT_S:g})")
    pb.add_argument("--retry-for", type=seconds, default=None, metavar="SECONDS",
                    help=f"keep retrying a call no server answers for SECONDS (default: {BULK_RETRY.retry_for_s:g})")
    pb.add_argument("--max-duration-s", type=positive_float, default=DEFAULT_MAX_DURATION_S,
                    help=f"longer files are error rows (default: {DEFAULT_MAX_DURATION_S:g})")
    pb.add_argument("--min-duration-s", type=seconds, default=DEFAULT_MIN_DURATION_S,
                    help=f"shorter files are error rows (default: {DEFAULT_MIN_DURATION_S:g})")
    pb.add_argument("--ray-address", default=None,
                    help="Ray cluster to run on (auto, ray://HEAD:10001); default: RAY_ADDRESS, else a local cluster")
    pb.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of the local cluster started here (default: all)")
    pb.add_argument("--shard", default=None, metavar="INDEX/COUNT",
                    help="score only shard INDEX of COUNT (by a hash of each file's name; an Indexed Job passes "
                         "its completion index)")
    pb.add_argument("--error-rows-ok", action="store_true",
                    help="exit 0 when some rows record a file's error (default: exit 1); a job whose shard retry "
                         "would not change an undecodable file sets it")
    pb.set_defaults(func=cmd_batch)


__all__ = ["add_parsers", "cmd_batch"]
