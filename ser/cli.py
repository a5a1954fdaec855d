"""``ser``: the bundle's one command line, a thin layer over the library.

Each subcommand parses its options and calls one library function; heavy
imports (torch, transformers, onnx) happen inside the command that needs them so
``ser --help`` and ``ser predict`` stay fast. Errors the user can cause are
:class:`client.errors.SerError`: printed as one ``error: ...`` line with a
non-zero exit code, never a traceback.

This module assembles the parser and runs the chosen command; each group of
commands keeps its options and handlers in its own module, registered in this
order: ``ser/cmd_train.py`` (corpus synth, train, cv, evaluate), ``ser/cmd_export.py``
(export, int8-presets, repository), ``ser/cmd_serve.py``, ``ser/cmd_predict.py``, ``ser/cmd_stream.py``,
``ser/cmd_bench.py`` (bench, bench-client), ``ser/cmd_loadtest.py`` and ``ser/cmd_demo.py``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from client.errors import SerError
from ser import (
    cmd_batch,
    cmd_bench,
    cmd_demo,
    cmd_export,
    cmd_loadtest,
    cmd_predict,
    cmd_serve,
    cmd_stream,
    cmd_train,
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``ser`` argument parser (tests call it directly)."""
    parser = argparse.ArgumentParser(
        prog="ser",
        description="Speech emotion recognition behind Triton: synthesise/read corpora, train, export "
        "(ONNX fp32/int8), write Triton repositories, serve locally, classify audio.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for commands in (cmd_train, cmd_export, cmd_serve, cmd_predict, cmd_stream, cmd_batch, cmd_bench, cmd_loadtest, cmd_demo):
        commands.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ser`` console script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
