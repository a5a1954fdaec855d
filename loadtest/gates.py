"""Pass/fail limits of a load run: what turns a regression into a non-zero exit code.

One implementation, used by the locustfile's ``quitting`` listener (through
:func:`evaluate`) and by the runner's configuration (through
:class:`Thresholds`). The memory gate (:func:`memory_gate`) is judged by the
runner alone, on the server's memory samples (:mod:`loadtest.sampler`). No locust
import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from client.errors import ConfigError
from loadtest.sampler import MemorySample, rss_growth_pct

#: A request's time limit (s) in the Locust users (``--client-timeout-s``), and so how long a run's end waits
#: for requests in flight (``--stop-timeout``): cut off, they would reach the server as cancelled = failed.
CLIENT_TIMEOUT_S = 30.0

#: Prefix of the log line the locustfile's quitting listener writes per broken limit (the runner reads it).
GATE_PREFIX = "GATE FAILED: "

#: The latency percentiles a run reports, computed exactly from every response time (not Locust's rounded ones).
PERCENTILES = (50, 90, 95, 99)


def exact_figures_path(final_stats: Path | str) -> Path:
    """The JSON file of a run's exact percentiles, written beside its ``--final-stats`` table."""
    final_stats = Path(final_stats)
    return final_stats.with_name(f"{final_stats.stem}_exact.json")


def _check_ms(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: expected a number of milliseconds") from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name}={value!r}: must be a finite number of milliseconds > 0 (or unset for no limit)")
    return v


def _check_ratio(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: expected a ratio in [0, 1]") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ConfigError(f"{name}={value!r}: must be a ratio in [0, 1] (0 = no failure allowed; unset for no limit)")
    return v


@dataclass(frozen=True)
class Thresholds:
    """Limits a run must stay within; None means no limit.

    Attributes:
        max_p95_ms: 95th percentile of request latency, milliseconds (> 0).
        max_p99_ms: 99th percentile of request latency, milliseconds (> 0).
        max_failure_ratio: failed / all requests, in [0, 1].
    """

    max_p95_ms: float | None = None
    max_p99_ms: float | None = None
    max_failure_ratio: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_p95_ms", _check_ms("max_p95_ms", self.max_p95_ms))
        object.__setattr__(self, "max_p99_ms", _check_ms("max_p99_ms", self.max_p99_ms))
        object.__setattr__(self, "max_failure_ratio", _check_ratio("max_failure_ratio", self.max_failure_ratio))
        if self.max_p95_ms is not None and self.max_p99_ms is not None and self.max_p99_ms < self.max_p95_ms:
            raise ConfigError(
                f"max_p95_ms={self.max_p95_ms:g} > max_p99_ms={self.max_p99_ms:g}: the p99 limit must be >= the p95 limit"
            )

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return any(v is not None for v in (self.max_p95_ms, self.max_p99_ms, self.max_failure_ratio))

    def cli_args(self) -> list[str]:
        """The locustfile options that set these limits."""
        args = []
        for flag, value in (
            ("--max-p95-ms", self.max_p95_ms),
            ("--max-p99-ms", self.max_p99_ms),
            ("--max-failure-ratio", self.max_failure_ratio),
        ):
            if value is not None:
                args += [flag, repr(float(value))]
        return args


def limit_check(field: str) -> Callable[[str], float]:
    """A check of one limit given as text (``--max-p95-ms 250``): :class:`Thresholds`' own validation.

    ``field`` is a :class:`Thresholds` field (``max_p95_ms``, ``max_p99_ms``, ``max_failure_ratio``); the
    check returns the value as a float or raises its ``ConfigError``. ``ser loadtest`` and the locustfile
    both parse the limits through it, so they refuse the same values with the same message.
    """

    def check(text: str) -> float:
        return getattr(Thresholds(**{field: text}), field)

    check.__name__ = field
    return check


def evaluate(thresholds: Thresholds, *, requests: int, failures: int, p95_ms: float, p99_ms: float) -> list[str]:
    """Every limit the run broke, one line each (empty: passed).

    Args:
        thresholds: the limits.
        requests: all requests made (successes + failures).
        failures: failed requests.
        p95_ms: 95th percentile latency, ms.
        p99_ms: 99th percentile latency, ms.
    """
    if not thresholds.any:
        return []
    if requests <= 0:
        return ["no request completed: nothing to check the limits against"]
    broken = []
    ratio = failures / requests
    if thresholds.max_failure_ratio is not None and ratio > thresholds.max_failure_ratio:
        broken.append(f"failure ratio {ratio:.4f} ({failures}/{requests}) > {thresholds.max_failure_ratio:g}")
    if thresholds.max_p95_ms is not None and p95_ms > thresholds.max_p95_ms:
        broken.append(f"p95 {p95_ms:g} ms > {thresholds.max_p95_ms:g} ms")
    if thresholds.max_p99_ms is not None and p99_ms > thresholds.max_p99_ms:
        broken.append(f"p99 {p99_ms:g} ms > {thresholds.max_p99_ms:g} ms")
    return broken


def memory_gate(limit_pct: float | None, memory: Sequence[MemorySample], warmup_end_s: float) -> list[str]:
    """The memory gate's broken limit, one line (empty: passed or no limit).

    Args:
        limit_pct: ``max_rss_growth_pct``: the most server + stub memory may grow after the warm-up, %
            (None: no limit).
        memory: the run's samples (:class:`~loadtest.sampler.RunSampler`).
        warmup_end_s: when the measured window opened (the warm-up's end, or the test's start without one),
            on the samples' time axis (s).
    """
    if limit_pct is None:
        return []
    growth = rss_growth_pct(memory, after_s=warmup_end_s)
    if math.isnan(growth):
        return [f"server memory growth not measurable ({len(memory)} samples; run longer than the warm-up by a few "
                "sampling intervals)"]
    if growth > limit_pct:
        return [f"server + stub memory grew {growth:.1f} % in the measured window (after any warm-up) > {limit_pct:g} %"]
    return []
