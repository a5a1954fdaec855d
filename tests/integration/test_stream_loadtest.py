"""The live-call Locust user against the real tritonserver: real-time calls, their timings in Locust's statistics."""

from __future__ import annotations

import csv
import subprocess
import sys

from tests.helpers import REPO_ROOT


def test_live_call_users_report_first_emotion_lag_and_gaps_with_percentiles(triton_server, tmp_path):
    out = tmp_path / "stream"
    command = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile_stream.py", "--headless", "-u", "2", "-r", "2",
               "-t", "8s", "--host", triton_server.grpc_url, "--csv", str(out), "--only-summary", "--calls-clips", "2",
               "LiveCallUser"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["Name"]: r for r in csv.DictReader(open(f"{out}_stats.csv")) if r["Type"] == "stream"}
    assert set(rows) == {"call", "time to first emotion", "update gap", "update lag"}, rows.keys()
    assert all(int(r["Failure Count"]) == 0 for r in rows.values())
    assert int(rows["update lag"]["Request Count"]) >= 8
    # real-time pacing: updates come one hop (500 ms) apart, each well under a hop after its audio was spoken
    assert 400 <= float(rows["update gap"]["50%"]) <= 600
    assert float(rows["update lag"]["50%"]) < 500
    assert float(rows["time to first emotion"]["50%"]) >= 500  # no emotion before a hop of audio was spoken


def test_the_update_lag_gate_fails_a_run_whose_calls_fell_behind(triton_server, tmp_path):
    command = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile_stream.py", "--headless", "-u", "1", "-r", "1",
               "-t", "7s", "--host", triton_server.grpc_url, "--only-summary", "--calls-clips", "1"]
    strict = subprocess.run([*command, "--max-update-lag-p99-ms", "0.001", "LiveCallUser"], capture_output=True, text=True,
                            timeout=120, cwd=REPO_ROOT)
    assert strict.returncode == 1 and "GATE FAILED: p99 update lag" in strict.stderr, strict.stderr[-2000:]
    assert "max_update_lag_p99_ms=0.001" in strict.stderr
    lenient = subprocess.run([*command, "--max-update-lag-p99-ms", "5000", "LiveCallUser"], capture_output=True, text=True,
                             timeout=120, cwd=REPO_ROOT)
    assert lenient.returncode == 0, lenient.stderr[-2000:]
