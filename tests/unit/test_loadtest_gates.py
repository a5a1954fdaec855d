"""The load-test gates judge exact figures: a real Locust environment in a subprocess, no server.

Locust's percentiles come from a histogram that rounds response times above 100 ms to two
significant digits; a gate judged on them passes a run whose every request broke it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Runs in a subprocess: importing Locust monkey-patches the standard library (gevent).
_SCRIPT = r"""
import argparse, json, sys
from locust import events
from locust.env import Environment
from loadtest.users import gate_failures, install_listeners, write_final_stats

install_listeners(events)
env = Environment(events=events, parsed_options=argparse.Namespace(
    max_p95_ms=250.0, max_p99_ms=None, max_failure_ratio=None, final_stats=sys.argv[1]))
env.create_local_runner()
for ms in [254.0] * 99 + [262.5]:
    env.events.request.fire(request_type="grpc", name="classify", response_time=ms, response_length=0,
                            response=None, context={}, exception=None, url="127.0.0.1:8001")
print(json.dumps({"broken": gate_failures(env), "exit_code": env.process_exit_code,
                  "locust_p95": env.stats.total.get_response_time_percentile(0.95),
                  "written": str(write_final_stats(env))}))
"""


def _in_locust(script: str, final: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``script`` (a real Locust environment) in a fresh interpreter; ``(process, its last stdout line as JSON)``."""
    proc = subprocess.run([sys.executable, "-c", script, str(final)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_request_over_the_p95_limit_fails_the_gate_though_locust_rounds_it_under(tmp_path):
    from loadtest.gates import exact_figures_path

    final = tmp_path / "run_stats_final.csv"
    proc, got = _in_locust(_SCRIPT, final)
    assert got["locust_p95"] == 250  # Locust's own figure: 254 ms rounded down to the limit
    assert got["broken"] == ["p95 254 ms > 250 ms"] and got["exit_code"] == 1
    assert "GATE FAILED: p95 254 ms > 250 ms" in proc.stderr  # the reason is printed, not only the exit code
    exact = json.loads(exact_figures_path(final).read_text())  # what the runner reports: the exact figures
    assert exact["requests"] == 100 and exact["p50_ms"] == 254.0 and exact["p99_ms"] > 254.0


#: The live-call locustfile's gate on the same real Locust environment: every update 504 ms late, limit 500 ms.
_STREAM_SCRIPT = r"""
import argparse, json, sys
from locust import events
from locust.env import Environment
import loadtest.locustfile_stream  # noqa: F401 - installs its listeners and the update-lag gate

env = Environment(events=events, parsed_options=argparse.Namespace(
    max_p95_ms=None, max_p99_ms=None, max_failure_ratio=None, max_update_lag_p99_ms=500.0, final_stats=sys.argv[1]))
env.create_local_runner()
for name, ms in [("update lag", 504.0)] * 100 + [("call", 40.0), ("call", 60.0)]:
    env.events.request.fire(request_type="stream", name=name, response_time=ms, response_length=0,
                            response=None, context={}, exception=None, url="127.0.0.1:8001")
env.events.quitting.fire(environment=env)
print(json.dumps({"exit_code": env.process_exit_code,
                  "locust_p99": env.stats.get("update lag", "stream").get_response_time_percentile(0.99)}))
"""


def test_the_update_lag_gate_judges_exact_lags_and_the_exact_figures_are_kept_per_request_name(tmp_path):
    from loadtest.gates import exact_figures_path

    final = tmp_path / "live_stats_final.csv"
    proc, got = _in_locust(_STREAM_SCRIPT, final)
    assert got["locust_p99"] == 500  # Locust's own figure: 504 ms rounded down to the limit
    assert got["exit_code"] == 1 and "GATE FAILED: p99 update lag 504 ms > max_update_lag_p99_ms=500" in proc.stderr
    by_name = json.loads(exact_figures_path(final).read_text())["by_name"]  # what ser loadtest --live-calls reports
    assert by_name["update lag"] == {"requests": 100, "p50_ms": 504.0, "p90_ms": 504.0, "p95_ms": 504.0, "p99_ms": 504.0}
    assert by_name["call"]["requests"] == 2 and by_name["call"]["p50_ms"] == 50.0
