"""Option values given as text (command line, Locust's parser): one check per kind of value.

Each check returns the parsed value or raises :class:`~client.errors.ConfigError` whose
message starts with the text it was given and says what was expected. :func:`arg_type` turns
a check into an argparse ``type=``, so ``ser``'s parser, Locust's parser and
``python -m <client>.bench`` all parse a kind of value the same way and print the same message.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def int_at_least(text: str, minimum: int) -> int:
    """``text`` as an integer >= ``minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{text!r}: expected an integer") from None
    if value < minimum:
        raise ConfigError(f"{text!r}: must be >= {minimum}")
    return value


def positive_int(text: str) -> int:
    """``text`` as an integer >= 1."""
    return int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """``text`` as an integer >= 0."""
    return int_at_least(text, 0)


def port(text: str) -> int:
    """``text`` as a TCP port number, 1..65535."""
    value = int_at_least(text, 1)
    if value > 65535:
        raise ConfigError(f"{text!r}: a port is at most 65535")
    return value


def _finite_number(text: str, accept: Callable[[float], bool], expected: str) -> float:
    """``text`` as a float that is finite and passes ``accept``; else ConfigError ``'<text>': <expected>``."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{text!r}: expected a number") from None
    if not (math.isfinite(value) and accept(value)):
        raise ConfigError(f"{text!r}: {expected}")
    return value


def positive_float(text: str) -> float:
    """``text`` as a finite number > 0."""
    return _finite_number(text, lambda v: v > 0, "must be a finite number > 0")


def non_negative_float(text: str) -> float:
    """``text`` as a finite number >= 0."""
    return _finite_number(text, lambda v: v >= 0, "expected a finite number >= 0")


def seconds(text: str) -> float:
    """``text`` as a duration in seconds: a finite number >= 0."""
    try:
        return non_negative_float(text)
    except ConfigError:
        raise ConfigError(f"{text!r}: expected a finite number of seconds >= 0") from None


def csv_list(text: str) -> tuple[str, ...]:
    """Comma-separated items, stripped, empty ones dropped: ``"a, b,"`` -> ``("a", "b")``."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def csv_ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers: ``"1,8"`` -> ``(1, 8)``."""
    try:
        return tuple(int(x) for x in csv_list(text))
    except ValueError:
        raise ConfigError(f"{text!r}: expected comma-separated integers, e.g. 1,8") from None


def csv_positive_ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers >= 1, at least one: ``"1,4,16"`` -> ``(1, 4, 16)``."""
    items = csv_list(text)
    if not items:
        raise ConfigError(f"{text!r}: expected comma-separated integers >= 1, e.g. 1,4,16")
    return tuple(positive_int(x) for x in items)


def one_of(allowed: tuple[str, ...]) -> Callable[[str], str]:
    """A check accepting exactly the strings in ``allowed``."""

    def check(text: str) -> str:
        if text not in allowed:
            raise ConfigError(f"{text!r}: expected one of {list(allowed)}")
        return text

    return check


def arg_type(check: Callable[[str], T]) -> Callable[[str], T]:
    """``check`` as an argparse ``type=``: its ConfigError becomes argparse's one-line usage error (exit 2)."""

    def parse(text: str) -> T:
        try:
            return check(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(check, "__name__", "value")
    return parse


__all__ = ["int_at_least", "positive_int", "non_negative_int", "port", "positive_float", "non_negative_float", "seconds",
           "csv_list", "csv_ints", "csv_positive_ints", "one_of", "arg_type"]
