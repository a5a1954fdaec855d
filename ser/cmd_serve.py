"""``ser serve``: the local tritonserver on 127.0.0.1, restarted when it dies, until Ctrl-C.

Its options and handler; the handler imports :mod:`deploy` when run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ser.arg_types import non_negative_int, port, positive_int

#: Where ``ser repository`` / ``ser demo`` write each runtime's repository, and so what ``ser serve`` serves.
RUNTIME_REPOSITORIES = {"portable": Path("model_repository/portable"), "native": Path("model_repository/native")}
#: ``ser serve --runtime`` when not given.
DEFAULT_RUNTIME = "portable"


def unverified_cpu_warnings(repository: Path) -> list[str]:
    """One line per native int8 model whose agreement with fp32 was never checked on this host's CPU class.

    The portable model logs the same line itself when it loads; Triton's ONNX Runtime backend knows
    nothing of it, so ``ser serve`` reads the recorded classes from the configs instead.
    """
    from deploy.triton_binary import native_models
    from export.cpu_class import VERIFIED_CLASSES_PARAMETER, unverified_warning
    from export.repository import read_model_config

    warnings = []
    for name in native_models(repository):
        params = read_model_config(repository / name).parameters
        if VERIFIED_CLASSES_PARAMETER in params:
            warning = unverified_warning(name, params[VERIFIED_CLASSES_PARAMETER].string_value)
            if warning:
                warnings.append(f"warning: {warning}")
    return warnings


def cmd_serve(args: argparse.Namespace) -> int:
    """`ser serve`: run the local tritonserver until interrupted."""
    import sys

    from client.errors import ConfigError
    from deploy.flags import grpc_tls_from_dir, read_admin_key
    from deploy.supervisor import RestartPolicy, serve_forever

    repository = args.repository or RUNTIME_REPOSITORIES[args.runtime]
    if not repository.is_dir():
        raise ConfigError(
            f"{repository}: no such model repository; `make demo` writes model_repository/portable and "
            f"model_repository/native, or write one with `ser repository EXPORT_DIR --out {repository}"
            f"{' --runtime native' if args.runtime == 'native' and args.repository is None else ''}`")
    for line in unverified_cpu_warnings(repository):
        print(line, file=sys.stderr)
    serve_forever(
        repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        admin_key=read_admin_key(args.admin_key_file) if args.admin_key_file else None,
        grpc_tls=grpc_tls_from_dir(args.grpc_tls_dir) if args.grpc_tls_dir else None,
        http=not args.no_http,
        restart=RestartPolicy(max_restarts=args.max_restarts),
        log_path=args.log,
        onnxruntime_threads=args.onnxruntime_threads,
    )
    return 0


def add_parsers(sub) -> None:
    """Add ``serve`` to ``sub`` (the ``ser`` subcommands)."""
    sv = sub.add_parser("serve", help="run the bundled tritonserver on 127.0.0.1 until Ctrl-C")
    sv.add_argument("--runtime", choices=list(RUNTIME_REPOSITORIES), default=DEFAULT_RUNTIME,
                    help="which repository to serve when --repository is not given: "
                         + ", ".join(f"{k} = {v}" for k, v in RUNTIME_REPOSITORIES.items())
                         + f" (default: {DEFAULT_RUNTIME}); native needs the ONNX Runtime backend `make venv` builds")
    sv.add_argument("--repository", type=Path, default=None,
                    help="model repository (default: the --runtime's); a repository may mix both runtimes")
    sv.add_argument("--onnxruntime-threads", type=positive_int, default=None,
                    help="width of the one ONNX Runtime thread pool all native models share "
                         "(default: the CPUs this process may use, cgroup quota included)")
    sv.add_argument("--http-port", type=port, default=8000)
    sv.add_argument("--grpc-port", type=port, default=8001)
    sv.add_argument("--metrics-port", type=port, default=8002)
    sv.add_argument("--admin-key-file", type=Path, default=None,
                    help="file holding a key that the repository (load/unload), shared-memory, trace and logging APIs "
                         "then require (HTTP header 'admin-key'; gRPC 'triton-grpc-protocol-admin-key'); default: open")
    sv.add_argument("--grpc-tls-dir", type=Path, default=None,
                    help="serve gRPC over TLS with DIR/tls.crt and DIR/tls.key (mutual TLS if DIR/ca.crt exists)")
    sv.add_argument("--no-http", action="store_true",
                    help="serve gRPC and metrics only (closes the HTTP JSON path one request can crash tritonserver 2.51 through)")
    sv.add_argument("--max-restarts", type=non_negative_int, default=5,
                    help="restart a server that died up to N times in a row, backoff 1 s doubling to 30 s; "
                         "5 minutes of serving resets the count; 0: exit with the error instead (default: 5)")
    sv.add_argument("--log", type=Path, default=None, help="write the server log here (appended across restarts)")
    sv.set_defaults(func=cmd_serve)
