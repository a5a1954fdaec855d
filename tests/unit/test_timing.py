"""The one timing helper: percentiles, timed calls, and rounds that tolerate a failing call."""

from __future__ import annotations

import statistics

import pytest

from client.errors import ConfigError
from client.timing import percentile, time_calls, time_rounds


@pytest.mark.parametrize("values", [[3.0], [5.0, 1.0], [4.0, 1.0, 9.0], [2.0, 8.0, 1.0, 7.0, 3.0, 3.5]])
def test_the_50th_percentile_is_the_median(values):
    assert percentile(values, 50) == pytest.approx(statistics.median(values))


def test_percentiles_interpolate_linearly_between_ranks():
    values = list(range(1, 21))  # 1..20
    assert percentile(values, 0) == 1 and percentile(values, 100) == 20
    assert percentile(values, 95) == pytest.approx(19.05)  # rank 18.05 between 19 and 20


def test_time_calls_warms_up_then_times_exactly_runs_calls_in_milliseconds():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=3, runs=4)
    assert len(times) == 4 and len(calls) == 7
    assert all(t >= 0 for t in times)
    slept = time_calls(lambda: __import__("time").sleep(0.02), runs=2)
    assert all(t >= 19.0 for t in slept)  # milliseconds, not seconds


def test_a_budget_stops_early_but_never_before_min_runs():
    assert len(time_calls(lambda: None, runs=50, min_runs=3, budget_s=1e-9)) == 3
    assert len(time_calls(lambda: None, runs=6, min_runs=3, budget_s=60.0)) == 6


def test_rounds_take_turns_and_a_failing_call_leaves_while_the_others_go_on():
    order = []

    def broken():
        raise RuntimeError("lost")

    times, failed = time_rounds({"a": lambda: order.append("a"), "b": lambda: order.append("b"), "x": broken},
                                warmup=1, runs=3)
    assert order == ["a", "b"] * 4  # one warm-up each, then three rounds in turn
    assert set(times) == {"a", "b"} and all(len(t) == 3 for t in times.values())
    assert isinstance(failed["x"], RuntimeError)


@pytest.mark.parametrize("kwargs, message", [
    (dict(runs=0), "runs=0"),
    (dict(warmup=-1), "warmup=-1"),
    (dict(budget_s=0.0), "budget_s=0.0"),
    (dict(min_runs=0, budget_s=1.0), "min_runs=0"),
])
def test_bad_timing_options_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        time_calls(lambda: None, **kwargs)
    with pytest.raises(ConfigError, match=message):
        time_rounds({"a": lambda: None}, **kwargs)


def test_a_percentile_of_nothing_or_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="no values"):
        percentile([], 50)
    with pytest.raises(ConfigError, match="q=101"):
        percentile([1.0], 101)
