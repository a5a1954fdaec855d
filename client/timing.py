"""Timing calls: the one loop every benchmark in the bundle times with.

``ser bench`` (in-process model latency), the quantization report (ONNX Runtime
latency per variant) and ``ser bench-client`` (preprocessing and served latency)
all time through :func:`time_calls` or :func:`time_rounds` and summarise with
:func:`percentile`, so "median" and "p95" mean the same everywhere. Imports
nothing beyond the standard library.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from .errors import ConfigError


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` by linear interpolation between the two nearest ranks.

    Args:
        values: at least one number (any unit; the result has the same unit).
        q: percentile in [0, 100] (50: the median, equal to :func:`statistics.median`).

    Raises:
        ConfigError: ``values`` is empty or ``q`` is outside [0, 100].
    """
    xs = sorted(values)
    if not xs:
        raise ConfigError("percentile of no values: time at least one call")
    if not 0 <= q <= 100:
        raise ConfigError(f"q={q}: a percentile must be in [0, 100]")
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def _check_runs(warmup: int, runs: int, min_runs: int | None, budget_s: float | None) -> int:
    if warmup < 0:
        raise ConfigError(f"warmup={warmup}: must be >= 0")
    if runs < 1:
        raise ConfigError(f"runs={runs}: must be >= 1")
    if budget_s is not None and not budget_s > 0:
        raise ConfigError(f"budget_s={budget_s}: must be > 0 (or None: exactly `runs` calls)")
    least = runs if min_runs is None else min(min_runs, runs)
    if least < 1:
        raise ConfigError(f"min_runs={min_runs}: must be >= 1")
    return least


def time_calls(
    call: Callable[[], Any],
    *,
    warmup: int = 0,
    runs: int = 10,
    min_runs: int | None = None,
    budget_s: float | None = None,
) -> tuple[float, ...]:
    """Time ``call`` one call at a time with :func:`time.perf_counter`.

    Args:
        call: what to time; its result is discarded.
        warmup: untimed calls first.
        runs: timed calls (the most, with ``budget_s``).
        min_runs: with ``budget_s``: time at least this many calls whatever the budget
            (default: ``runs``).
        budget_s: stop timing once this many seconds have passed (after ``min_runs`` calls);
            ``None``: exactly ``runs`` calls.

    Returns:
        Milliseconds of every timed call, in call order.

    Raises:
        ConfigError: a negative ``warmup``, ``runs`` < 1, or a budget <= 0.
    """
    least = _check_runs(warmup, runs, min_runs, budget_s)
    for _ in range(warmup):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs:
        if len(times) >= least and budget_s is not None and time.perf_counter() - start >= budget_s:
            break
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return tuple(times)


def time_rounds(
    calls: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 0,
    runs: int = 10,
    min_runs: int | None = None,
    budget_s: float | None = None,
) -> tuple[dict[str, tuple[float, ...]], dict[str, BaseException]]:
    """Warm every call up, then time them in rounds: each call once per round, in turn.

    A machine whose speed drifts during the run slows the calls of a round alike, so
    ratios taken round by round hold. A call that raises leaves the rounds; the others go on.

    Args:
        calls: ``{name: call}``, timed in this order within each round.
        warmup: untimed calls of each before the rounds.
        runs: rounds (the most, with ``budget_s``).
        min_runs: with ``budget_s``: at least this many rounds (default: ``runs``).
        budget_s: stop once ``budget_s`` per call still timed has passed (after ``min_runs``
            rounds); ``None``: exactly ``runs`` rounds.

    Returns:
        ``(times, failed)``: milliseconds of every timed call per name that never raised,
        and the exception of each call that raised (in its warm-up or a round).

    Raises:
        ConfigError: a negative ``warmup``, ``runs`` < 1, or a budget <= 0.
    """
    least = _check_runs(warmup, runs, min_runs, budget_s)
    failed: dict[str, BaseException] = {}
    for name, call in calls.items():
        try:
            for _ in range(warmup):
                call()
        except Exception as exc:  # noqa: BLE001 - one call's failure must not end the others' rounds
            failed[name] = exc
    live = {name: call for name, call in calls.items() if name not in failed}
    times: dict[str, list[float]] = {name: [] for name in live}
    start = time.perf_counter()
    for done in range(runs):
        if done >= least and budget_s is not None and time.perf_counter() - start >= budget_s * max(len(live), 1):
            break
        for name, call in list(live.items()):
            t0 = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001
                failed[name] = exc
                del live[name]
                continue
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: tuple(t) for name, t in times.items() if name in live}, failed
