"""``ser loadtest``: Locust against a started or given server, the client-side vs server-side comparison, or live calls.

Its options (their defaults read from :class:`loadtest.run_config.LoadTestConfig` when the parser is
built) and handler, which imports the rest of :mod:`loadtest` when run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from types import SimpleNamespace

from client.client_options import PROTOCOLS
from ser.arg_types import csv_positive_ints, non_negative_float, non_negative_int, positive_int


def cmd_loadtest(args: argparse.Namespace) -> int:
    """`ser loadtest`: Locust against a started or given server; report + exit code from the gates."""
    from loadtest.out_lock import out_dir_lock

    if args.live_calls:
        from loadtest.live_calls import live_calls

        config = _live_config(args)
        with out_dir_lock(config.out_dir):  # a second run into the same --out is refused, not mixed with this one
            return live_calls(config, out=sys.stdout)
    _refuse_live_options(args)
    if args.compare_server_side:
        with out_dir_lock(args.out):
            return _compare_paths(args)
    from loadtest.runner import loadtest

    config = _config(args)
    with out_dir_lock(config.out_dir):
        return loadtest(config)


def _config(args: argparse.Namespace):
    """The :class:`~loadtest.run_config.LoadTestConfig` of ``ser loadtest``'s options."""
    from loadtest.gates import Thresholds
    from loadtest.payload import AudioSourceConfig
    from loadtest.run_config import LoadTestConfig

    return LoadTestConfig(
        repository=args.repository, url=args.url, metrics_url=args.metrics_url, model=args.model,
        protocol=args.protocol, users=tuple(args.users), run_time_s=args.run_time, warmup_s=args.warmup,
        windows_per_request=args.windows_per_request,
        audio=AudioSourceConfig(audio_dir=args.audio_dir, manifest=args.manifest, partition=args.partition,
                                generated_clips=args.generated_clips),
        thresholds=Thresholds(max_p95_ms=args.max_p95_ms, max_p99_ms=args.max_p99_ms, max_failure_ratio=args.max_failure_ratio),
        compare_batching=args.compare_batching, compare_users=args.compare_users,
        compare_instances=args.compare_instances, compare_model=args.compare_model, ort_baseline=args.ort_baseline,
        ort_batch=args.ort_batch, out_dir=args.out, server_pid=args.server_pid, max_rss_growth_pct=args.max_rss_growth,
    )


#: ``ser loadtest`` options a live-call sweep has no use for: (attribute, flag, whether it was given).
_NOT_LIVE = (
    ("compare_server_side", "--compare-server-side", bool), ("compare_batching", "--compare-batching", bool),
    ("compare_instances", "--compare-instances", lambda v: v is not None),
    ("compare_model", "--compare-model", lambda v: v is not None), ("ort_baseline", "--ort-baseline", bool),
    ("max_p95_ms", "--max-p95-ms", lambda v: v is not None), ("max_p99_ms", "--max-p99-ms", lambda v: v is not None),
    ("audio_dir", "--audio-dir", lambda v: v is not None), ("manifest", "--manifest", lambda v: v is not None),
    ("metrics_url", "--metrics-url", lambda v: v is not None), ("windows_per_request", "--windows-per-request", lambda v: v != 1),
    ("protocol", "--protocol", lambda v: v != "grpc"),
)
#: Options only a live-call sweep reads.
_LIVE_ONLY = (("chunk_ms", "--chunk-ms"), ("stream_model", "--stream-model"), ("max_update_lag_p99_ms", "--max-update-lag-p99-ms"))


def _live_config(args: argparse.Namespace):
    """The live-call :class:`~loadtest.run_config.LoadTestConfig` of ``ser loadtest --live-calls``'s options.

    Raises:
        ConfigError: an option the live-call sweep cannot honour (a comparison, a window-request option...).
    """
    from client.errors import ConfigError
    from client.stream_service import STREAM_MODEL
    from loadtest.gates import Thresholds
    from loadtest.payload import AudioSourceConfig
    from loadtest.run_config import LiveCalls, LoadTestConfig

    refused = [flag for attr, flag, given in _NOT_LIVE if given(getattr(args, attr))]
    if refused:
        raise ConfigError(f"--live-calls with {', '.join(refused)}: the live-call sweep streams generated speech over gRPC "
                          "to the streaming model and runs no comparison; its gates are --max-update-lag-p99-ms, "
                          "--max-failure-ratio (failed calls / calls) and --max-rss-growth")
    live = LiveCalls(stream_model=args.stream_model or STREAM_MODEL, chunk_ms=args.chunk_ms or LiveCalls.chunk_ms,
                     max_update_lag_p99_ms=args.max_update_lag_p99_ms)
    return LoadTestConfig(
        repository=args.repository, url=args.url, model=live.stream_model, users=tuple(args.users), run_time_s=args.run_time,
        warmup_s=args.warmup, audio=AudioSourceConfig(generated_clips=args.generated_clips),
        thresholds=Thresholds(max_failure_ratio=args.max_failure_ratio), out_dir=args.out, server_pid=args.server_pid,
        max_rss_growth_pct=args.max_rss_growth, live_calls=live,
    )


def _refuse_live_options(args: argparse.Namespace) -> None:
    """A live-call option without ``--live-calls`` is a mistake, not something to ignore."""
    from client.errors import ConfigError

    given = [flag for attr, flag in _LIVE_ONLY if getattr(args, attr) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} without --live-calls: only the live-call sweep reads them")


def _compare_paths(args: argparse.Namespace) -> int:
    """`ser loadtest --compare-server-side`: client-side vs server-side audio path, side by side."""
    from loadtest.gates import Thresholds
    from loadtest.path_compare import compare_paths
    from loadtest.payload import AudioSourceConfig

    cmp = compare_paths(
        repository=args.repository, url=args.url, metrics_url=args.metrics_url, window_model=args.model,
        audio_model=args.audio_model, protocol=args.protocol, users=args.compare_users, run_time_s=args.run_time,
        warmup_s=args.warmup, out_dir=args.out, progress=sys.stdout,
        audio=AudioSourceConfig(audio_dir=args.audio_dir, manifest=args.manifest, partition=args.partition,
                                generated_clips=args.generated_clips),
        thresholds=Thresholds(max_p95_ms=args.max_p95_ms, max_p99_ms=args.max_p99_ms, max_failure_ratio=args.max_failure_ratio),
    )
    print(f"report: {cmp.files['markdown']} (+ .json)")
    print(cmp.headline(), flush=True)
    return 0 if cmp.passed else 1


def add_parsers(sub) -> None:
    """Add ``loadtest`` to ``sub`` (the ``ser`` subcommands)."""
    lt = sub.add_parser("loadtest", help="Locust load test: throughput, latency percentiles, executed batch size, or live calls "
                        "(--live-calls); gates set the exit code")
    target = lt.add_mutually_exclusive_group(required=True)
    target.add_argument("--repository", type=Path, help="start the local tritonserver on this repository for the run")
    target.add_argument("--url", help="target a running server HOST:PORT instead (its gRPC port with --live-calls)")
    lt.add_argument("--metrics-url", default=None, help="HOST:PORT of Triton's metrics endpoint (with --url; without it the executed-batch, "
                         "queue and compute columns stay empty)")
    from client.audio_service import AUDIO_MODEL  # noqa: PLC0415 - what the parser needs of the load test's config
    from client.option_values import arg_type  # noqa: PLC0415
    from client.stream_service import STREAM_MODEL  # noqa: PLC0415
    from loadtest.gates import limit_check  # noqa: PLC0415
    from loadtest.payload import AudioSourceConfig  # noqa: PLC0415
    from loadtest.run_config import LiveCalls, LoadTestConfig, live_chunk_ms, live_lag_limit  # noqa: PLC0415

    config = SimpleNamespace(**{f.name: f.default for f in fields(LoadTestConfig) if f.default is not MISSING})
    audio = AudioSourceConfig()
    lt.add_argument("--model", default=config.model, help=f"model name (default: {config.model})")
    lt.add_argument("--protocol", choices=list(PROTOCOLS), default=config.protocol)
    default_users = ",".join(map(str, config.users))
    lt.add_argument("--users", type=csv_positive_ints, default=config.users,
                    help=f"user counts to sweep (with --live-calls: concurrent callers; default: {default_users})")
    lt.add_argument("--run-time", type=positive_int, default=config.run_time_s,
                    help=f"seconds each run measures (default: {config.run_time_s})")
    lt.add_argument("--warmup", type=non_negative_int, default=config.warmup_s,
                    help="whole seconds of load before each run measures (statistics reset, server counters read then; "
                         f"warm-up failures still fail the run; default: {config.warmup_s})")
    lt.add_argument("--windows-per-request", type=positive_int, default=config.windows_per_request)
    lt.add_argument("--audio-dir", type=Path, default=None, help="audio to send (default: generated synthetic clips)")
    lt.add_argument("--manifest", type=Path, default=None, help="split manifest written by `ser train`: send its --partition clips")
    lt.add_argument("--partition", default=audio.partition)
    lt.add_argument("--generated-clips", type=positive_int, default=audio.generated_clips,
                    help=f"synthetic clips sent when no --audio-dir or --manifest is given; with --live-calls the clips "
                         f"the calls cycle through (default: {audio.generated_clips})")
    lt.add_argument("--max-p95-ms", type=arg_type(limit_check("max_p95_ms")), default=None,
                    help="gate: fail (exit 1) if p95 latency exceeds this")
    lt.add_argument("--max-p99-ms", type=arg_type(limit_check("max_p99_ms")), default=None,
                    help="gate: fail if p99 latency exceeds this")
    lt.add_argument("--max-failure-ratio", type=arg_type(limit_check("max_failure_ratio")), default=None,
                    help="gate: fail if failed/total exceeds this (with --live-calls: failed calls / calls placed)")
    lt.add_argument("--max-rss-growth", type=non_negative_float, default=None, metavar="PCT",
                    help="gate: fail a run whose server + python-backend stub memory grows by more than PCT %% from the "
                         "warm-up's end to its end (sampled every second; needs --repository or --server-pid)")
    lt.add_argument("--server-pid", type=positive_int, default=None,
                    help="with --url: the tritonserver process on this host, for its and its stubs' memory over the run")
    lt.add_argument("--compare-batching", action="store_true", help="also run with dynamic batching off at --compare-users (needs --repository)")
    lt.add_argument("--compare-users", type=positive_int, default=config.compare_users,
                    help=f"users of every comparison run (default: {config.compare_users})")
    lt.add_argument("--compare-instances", type=positive_int, default=None, help="also run with N instances of the model (needs --repository)")
    lt.add_argument("--compare-model", default=None, help="also run another model of the repository, e.g. ser_fp32 (needs --repository)")
    lt.add_argument("--ort-baseline", action="store_true", help="also measure in-process ONNX Runtime at --ort-batch (needs --repository)")
    lt.add_argument("--ort-batch", type=positive_int, default=config.ort_batch)
    lt.add_argument("--compare-server-side", action="store_true",
                    help="instead of the sweep: whole clips at --compare-users, the client decoding them (windows to --model) "
                         "against the server decoding them (bytes to --audio-model), side by side; report paths.md")
    lt.add_argument("--audio-model", default=AUDIO_MODEL,
                    help=f"--compare-server-side: the server-side audio model (default: {AUDIO_MODEL})")
    lt.add_argument("--live-calls", action="store_true",
                    help="instead of the sweep: each user is one caller placing real-time calls back to back into the "
                         "streaming model (gRPC); reports update lag, update gap, time to first emotion and END to "
                         "segments per user count, and the most calls held with p99 update lag under one hop; "
                         "report live-calls.md")
    lt.add_argument("--stream-model", default=None, help=f"--live-calls: the streaming model (default: {STREAM_MODEL})")
    lt.add_argument("--chunk-ms", type=arg_type(live_chunk_ms), default=None,
                    help=f"--live-calls: audio per chunk, ms, each sent once spoken (default: {LiveCalls.chunk_ms})")
    lt.add_argument("--max-update-lag-p99-ms", type=arg_type(live_lag_limit), default=None,
                    help="--live-calls gate: fail a run whose p99 update lag is above this, ms (one hop keeps pace)")
    lt.add_argument("--out", type=Path, default=config.out_dir, help=f"report directory (default: {config.out_dir})")
    lt.set_defaults(func=cmd_loadtest)
