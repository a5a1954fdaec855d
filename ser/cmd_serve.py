"""``ser serve``: the local tritonserver on 127.0.0.1, restarted when it dies, until Ctrl-C.

Its options and handler; the handler imports :mod:`deploy` when run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ser.arg_types import non_negative_int, port

#: ``ser serve --repository`` when not given.
DEFAULT_REPOSITORY = Path("model_repository/portable")


def cmd_serve(args: argparse.Namespace) -> int:
    """`ser serve`: run the local tritonserver until interrupted."""
    from deploy.flags import grpc_tls_from_dir, read_admin_key
    from deploy.supervisor import RestartPolicy, serve_forever

    serve_forever(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        admin_key=read_admin_key(args.admin_key_file) if args.admin_key_file else None,
        grpc_tls=grpc_tls_from_dir(args.grpc_tls_dir) if args.grpc_tls_dir else None,
        http=not args.no_http,
        restart=RestartPolicy(max_restarts=args.max_restarts),
        log_path=args.log,
    )
    return 0


def add_parsers(sub) -> None:
    """Add ``serve`` to ``sub`` (the ``ser`` subcommands)."""
    sv = sub.add_parser("serve", help="run the bundled tritonserver on 127.0.0.1 until Ctrl-C")
    sv.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help=f"model repository (default: {DEFAULT_REPOSITORY})")
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
