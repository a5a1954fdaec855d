"""Argparse ``type=`` parsers of the command line: one per kind of option value.

Each raises :class:`argparse.ArgumentTypeError` naming the text it was given, which
argparse prints as a one-line usage error (exit code 2).
"""

from __future__ import annotations

import argparse


def int_at_least(text: str, minimum: int) -> int:
    """``text`` as an integer >= ``minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}")
    return value


def positive_int(text: str) -> int:
    """``text`` as an integer >= 1."""
    return int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """``text`` as an integer >= 0."""
    return int_at_least(text, 0)


def non_negative_float(text: str) -> float:
    """``text`` as a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def csv_list(text: str) -> tuple[str, ...]:
    """Comma-separated items, stripped, empty ones dropped: ``"a, b,"`` -> ``("a", "b")``."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def csv_ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers: ``"1,8"`` -> ``(1, 8)``."""
    try:
        return tuple(int(x) for x in csv_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,8") from None
