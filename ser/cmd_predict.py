"""``ser predict``: classify audio files and directories through a running server.

Its options and handler, and the ``--retry-for`` default of batch jobs; the handler
imports the client when run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.client_options import (
    DEFAULT_GRPC_URL,
    DEFAULT_HTTP_URL,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_S,
    PROTOCOLS,
)
from client.retry import RetryPolicy
from ser.arg_types import non_negative_int, positive_float, positive_int, seconds

#: ``ser predict --retry-for`` of a batch job (a directory or ``--output``): long enough for a server restart.
BATCH_RETRY_FOR_S = 60.0


def _retry_for(args: argparse.Namespace) -> float:
    """``--retry-for`` as given, else :data:`BATCH_RETRY_FOR_S` for a batch job and 0 for files on the terminal."""
    if args.retry_for is not None:
        return args.retry_for
    batch = args.output is not None or any(Path(f).is_dir() for f in args.files)
    return BATCH_RETRY_FOR_S if batch else 0.0


def cmd_predict(args: argparse.Namespace) -> int:
    """`ser predict`: classify files and directories through a server; exit 1 if any file failed."""
    from client.audio import AudioConfig
    from client.batch import find_audio, predict_files
    from client.errors import ConfigError
    from client.triton_client import RetryPolicy, SerClient, TransportOptions

    headers = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--header {item!r}: expected KEY=VALUE")
        headers[key.strip()] = value
    transport = TransportOptions(
        headers=headers, ssl=args.tls, root_certificates=args.tls_root_certs, private_key=args.tls_private_key,
        certificate_chain=args.tls_cert_chain, insecure=args.tls_insecure, request_timeout_s=args.request_timeout_s,
        network_timeout_s=args.request_timeout_s,
    )
    retry = RetryPolicy(max_attempts=args.retries + 1, initial_backoff_s=args.retry_backoff_s,
                        max_backoff_s=max(args.retry_backoff_s, args.retry_max_backoff_s), retry_for_s=_retry_for(args))
    fmt = "jsonl" if args.json and args.format is None else args.format
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    files = find_audio(args.files)
    with SerClient(args.url, model=args.model, protocol=args.protocol, timeout_s=args.timeout_s, retry=retry,
                   transport=transport, audio=AudioConfig(max_duration_s=args.max_duration_s, min_duration_s=args.min_duration_s),
                   server_side=args.server_side) as client:
        summary = predict_files(client, files, output=args.output, fmt=fmt, resume=args.resume,
                                concurrency=args.concurrency, top_k=args.top_k, progress=progress)
    if summary.failed:
        print(f"error: {summary.failed} of {summary.total} files failed"
              + (f" (rows with ok=false in {args.output})" if args.output else ""), file=sys.stderr)
    return 1 if summary.failed else 0


def add_parsers(sub) -> None:
    """Add ``predict`` to ``sub`` (the ``ser`` subcommands)."""
    from client.audio import DEFAULT_MAX_DURATION_S, DEFAULT_MIN_DURATION_S  # noqa: PLC0415 - numpy only; the defaults are the client's

    pr = sub.add_parser("predict", help="classify audio files and directories through a running Triton server")
    pr.add_argument("files", nargs="+", type=Path, metavar="DIR_OR_FILE", help="audio files, or directories searched recursively (wav, flac, ogg, mp3; m4a and others with librosa and ffmpeg)")
    pr.add_argument("--url", default=None,
                    help=f"server address HOST:PORT (default: {DEFAULT_GRPC_URL} for gRPC, {DEFAULT_HTTP_URL} for HTTP); "
                         "several replicas as HOST:PORT,HOST:PORT or dns:///NAME:PORT (every address the name resolves "
                         "to): requests go round them, a failing one is set aside until it is ready again")
    pr.add_argument("--protocol", choices=list(PROTOCOLS), default=PROTOCOLS[0])
    pr.add_argument("--model", default=None, help=f"model name (default: {DEFAULT_MODEL}; ser with --server-side)")
    pr.add_argument("--server-side", action="store_true",
                    help="send each file's bytes to the server-side audio model, which decodes and windows it "
                         "(same answers; the client decodes nothing)")
    pr.add_argument("--timeout-s", type=positive_float, default=DEFAULT_TIMEOUT_S,
                    help=f"time limit of each call, s (default: {DEFAULT_TIMEOUT_S:g})")
    pr.add_argument("--request-timeout-s", type=positive_float, default=None,
                    help="per-request limit (gRPC client_timeout, HTTP network timeout); a request past it is that "
                         "file's RequestTimeoutError row and the run goes on; default: --timeout-s")
    pr.add_argument("--json", action="store_true", help="same as --format jsonl")
    pr.add_argument("--format", choices=["jsonl", "csv", "text"], default=None, help="default: text on stdout; csv for --output *.csv, else jsonl")
    pr.add_argument("--output", "-o", type=Path, default=None, help="write rows here (flushed per row) instead of stdout")
    pr.add_argument("--resume", action="store_true",
                    help="keep the results already in --output and classify the missing files and those whose row "
                         "records a failure (their row is replaced: one row per file, the latest result)")
    pr.add_argument("--concurrency", type=positive_int, default=4, help="files in flight (default: 4); the server's dynamic batcher merges them")
    pr.add_argument("--top-k", type=positive_int, default=None, help="add the k best classes (Triton's classification extension)")
    pr.add_argument("--max-duration-s", type=positive_float, default=DEFAULT_MAX_DURATION_S,
                    help=f"refuse longer files, checked before decoding (default: {DEFAULT_MAX_DURATION_S:g})")
    pr.add_argument("--min-duration-s", type=seconds, default=DEFAULT_MIN_DURATION_S,
                    help=f"refuse shorter files (AudioTooShortError), 0 = any non-empty file; with --server-side the "
                         f"server's minimum applies (default: {DEFAULT_MIN_DURATION_S:g})")
    pr.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar on stderr (default: when stderr is a terminal)")
    retry = RetryPolicy()
    pr.add_argument("--retries", type=non_negative_int, default=retry.max_attempts - 1,
                    help=f"retries on UNAVAILABLE/connection errors, never on refused requests (default: {retry.max_attempts - 1})")
    pr.add_argument("--retry-for", type=seconds, default=None, metavar="SECONDS",
                    help="time budget on top of --retries: keep retrying a call that could not reach the server until "
                         "SECONDS after its first attempt, so a server restart does not end the job; refused requests "
                         f"still fail at once (default: {BATCH_RETRY_FOR_S:g} with a directory or --output, else 0)")
    pr.add_argument("--retry-backoff-s", type=seconds, default=retry.initial_backoff_s,
                    help=f"first retry wait, multiplied by {retry.multiplier:g} each retry, ±{retry.jitter * 100:.0f}%% jitter "
                         f"(default: {retry.initial_backoff_s:g})")
    pr.add_argument("--retry-max-backoff-s", type=seconds, default=retry.max_backoff_s,
                    help=f"cap on one retry wait (default: {retry.max_backoff_s:g})")
    pr.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="extra request header (repeatable)")
    pr.add_argument("--tls", action="store_true", help="use TLS (gRPC ssl / HTTPS)")
    pr.add_argument("--tls-root-certs", type=Path, default=None, help="PEM CA file to trust (with --tls)")
    pr.add_argument("--tls-private-key", type=Path, default=None, help="PEM client key for mutual TLS (with --tls-cert-chain)")
    pr.add_argument("--tls-cert-chain", type=Path, default=None, help="PEM client certificate chain for mutual TLS")
    pr.add_argument("--tls-insecure", action="store_true", help="HTTP: skip the server certificate check")
    pr.set_defaults(func=cmd_predict)
