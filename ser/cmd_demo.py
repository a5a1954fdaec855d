"""``ser demo``: the whole path on a synthetic corpus (:mod:`ser.demo`), against the real local Triton.

Its options and handler; the handler imports :mod:`ser.demo` when run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ser.demo import DemoConfig


def cmd_demo(args: argparse.Namespace) -> int:
    """`ser demo`: the end-to-end demo."""
    from ser.demo import run_demo

    return run_demo(DemoConfig(workdir=args.workdir, repository=args.repository, fresh=args.fresh, protocol=args.protocol))


def add_parsers(sub) -> None:
    """Add ``demo`` to ``sub`` (the ``ser`` subcommands)."""
    dm = sub.add_parser("demo", help="the whole path on a synthetic corpus, against the real local Triton")
    dm.add_argument("--workdir", type=Path, default=DemoConfig.workdir,
                    help=f"where the demo keeps its corpus, checkpoint, exports and load-test report (default "
                         f"{DemoConfig.workdir}); the Triton repositories go to --repository")
    dm.add_argument("--repository", type=Path, default=DemoConfig.repository,
                    help=f"where the portable and native Triton repositories are written (default {DemoConfig.repository})")
    dm.add_argument("--fresh", action="store_true", help="rebuild everything instead of reusing cached steps")
    dm.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    dm.set_defaults(func=cmd_demo)
