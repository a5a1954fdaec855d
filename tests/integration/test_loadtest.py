"""Load tests against the real local tritonserver: short, bounded, 127.0.0.1 only.

One module-scoped run serves the tiny int8 model twice (dynamic batching on and
off, 8 users, 3 s each) and measures in-process ONNX Runtime at batch 8; the
gate test runs Locust once more against the session server with an impossible
p95 limit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadtest.gates import Thresholds
from loadtest.locust_run import aggregated_row, final_stats_csv
from loadtest.metrics import parse_metrics
from loadtest.run_config import SCENARIO_OFF, SCENARIO_ON, LoadTestConfig
from loadtest.runner import loadtest, run_loadtest

INSTANCES2, FP32 = "instances-2", "model-ser_fp32"

pytestmark = pytest.mark.slow

MODEL = "ser_int8"
USERS = 8


@pytest.fixture(scope="module")
def batching_report(portable_repository, tmp_path_factory):
    config = LoadTestConfig(
        repository=portable_repository,
        model=MODEL,
        users=(USERS,),
        run_time_s=3,
        compare_batching=True,
        compare_users=USERS,
        compare_instances=2,
        compare_model="ser_fp32",
        ort_baseline=True,
        ort_seconds=1.0,
        thresholds=Thresholds(max_failure_ratio=0.0),
        out_dir=tmp_path_factory.mktemp("loadtest"),
    )
    return run_loadtest(config)


def test_a_short_headless_run_completes_with_zero_failures_and_writes_the_report(batching_report):
    report = batching_report
    assert report.passed, report.headline()
    assert [(r.scenario, r.users) for r in report.runs] == [(s, USERS) for s in (SCENARIO_ON, SCENARIO_OFF, INSTANCES2, FP32)]
    for run in report.runs:
        assert run.requests > 0 and run.failures == 0 and run.exit_code == 0 and not run.gate_failures
        assert run.p50_ms <= run.p95_ms <= run.p99_ms
        assert run.stats_csv.is_file()
        # The final table (written when Locust quits) is read, not Locust's once-a-second _stats.csv, which lags it.
        prefix = run.stats_csv.parent / f"{run.scenario}-u{run.users}"
        assert run.stats_csv == final_stats_csv(prefix)
        periodic = aggregated_row(Path(f"{prefix}_stats.csv"))
        assert int(periodic["Request Count"]) <= run.requests
    files = report.files
    assert set(files) == {"csv", "markdown", "plot", "json"}
    with open(files["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["scenario"], r["users"]) for r in rows] == [(s, str(USERS)) for s in (SCENARIO_ON, SCENARIO_OFF, INSTANCES2, FP32)]
    assert {"p50_ms", "p95_ms", "p99_ms", "windows_per_s", "mean_batch_size", "queue_us_per_request"} <= set(rows[0])
    assert "| batching-on | 8 |" in files["markdown"].read_text()
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(files["json"].read_text())
    assert doc["passed"] is True and doc["ort_baseline"]["batch"] == 8


def test_the_batching_figures_come_from_the_servers_metrics(batching_report):
    on = batching_report.run(SCENARIO_ON, USERS).server
    off = batching_report.run(SCENARIO_OFF, USERS).server
    assert on is not None and off is not None
    # Every request Locust counted reached the server (the server also counts those in flight at the stop).
    assert on.inference_count >= batching_report.run(SCENARIO_ON, USERS).requests > 0
    assert on.failure == 0 and off.failure == 0
    # Batching on at 8 users: fewer executions than inferences. Off: exactly one execution per request.
    assert on.exec_count < on.inference_count
    assert on.mean_batch_size > 1.5
    assert off.exec_count == off.inference_count and off.mean_batch_size == 1.0
    assert on.queue_us > 0 and on.compute_infer_us > 0


def test_the_comparison_serves_a_copy_whose_parsed_config_has_no_dynamic_batching(batching_report):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    repos = batching_report.config.out_dir / "repositories"
    on = text_format.Parse((repos / SCENARIO_ON / MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    off = text_format.Parse((repos / SCENARIO_OFF / MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    assert on.HasField("dynamic_batching") and not off.HasField("dynamic_batching")
    assert off.max_batch_size == on.max_batch_size and off.input == on.input and off.parameters == on.parameters


def test_the_instance_and_variant_comparisons_serve_what_they_say(batching_report):
    repos = batching_report.config.out_dir / "repositories"
    from export.repository import read_model_config

    two = read_model_config(repos / INSTANCES2 / MODEL)
    assert [g.count for g in two.instance_group] == [2] and two.HasField("dynamic_batching")
    fp32 = read_model_config(repos / FP32 / "ser_fp32")
    assert fp32.parameters["ser.variant"].string_value == "fp32"
    for scenario in (INSTANCES2, FP32):
        run = batching_report.run(scenario, USERS)
        assert run.failures == 0 and run.server is not None and run.server.inference_count >= run.requests > 0
        assert batching_report.ratio(scenario) > 0 and f"{scenario}:" in batching_report.headline()


def test_the_ratio_against_in_process_onnx_runtime_is_reported(batching_report):
    ort = batching_report.ort
    assert ort is not None and ort.batch == 8 and ort.windows_per_s > 0
    before, after = batching_report.ort_slices  # one half before any load, one after all of it
    assert ort.runs == before.runs + after.runs >= 6 and ort.seconds == pytest.approx(before.seconds + after.seconds)
    assert ort.windows_per_s == pytest.approx(8 * ort.runs / ort.seconds)
    assert batching_report.ort_drift == pytest.approx(
        abs(before.windows_per_s - after.windows_per_s) / ((before.windows_per_s + after.windows_per_s) / 2))
    doc = json.loads(batching_report.files["json"].read_text())
    assert len(doc["ort_baseline_slices"]) == 2 and doc["ort_drift"] == pytest.approx(batching_report.ort_drift)
    assert "before the load" in batching_report.files["markdown"].read_text()
    assert batching_report.ort_ratio > 0 and batching_report.batching_speedup > 0
    assert "served/ORT" in batching_report.headline()


def test_an_impossibly_tight_p95_gate_fails_the_run_with_a_non_zero_exit(triton_server, tmp_path, capsys):
    code = loadtest(LoadTestConfig(
        url=triton_server.grpc_url,
        metrics_url=triton_server.metrics_url,
        model=MODEL,
        users=(2,),
        run_time_s=2,
        thresholds=Thresholds(max_p95_ms=0.001),
        out_dir=tmp_path,
    ))
    assert code == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "exit 1" in out
    assert "gate failed in batching-on u=2: p95 " in out  # the reason is on the terminal, not only in the report
    doc = json.loads((tmp_path / "loadtest.json").read_text())
    (broken,) = doc["gate_failures"].values()
    assert any(line.startswith("p95 ") and "> 0.001 ms" in line for line in broken)
    assert doc["runs"][0]["failures"] == 0  # the requests succeeded; only the gate failed the run


def test_a_warmup_is_counted_apart_and_the_servers_window_starts_when_it_ends(triton_server, tmp_path):
    users = 4
    config = LoadTestConfig(url=triton_server.grpc_url, metrics_url=triton_server.metrics_url, model=MODEL,
                            users=(users,), warmup_s=2, run_time_s=2, thresholds=Thresholds(max_failure_ratio=0.0),
                            out_dir=tmp_path)
    report = run_loadtest(config)
    (run,) = report.runs
    assert report.passed and run.failures == 0 and run.warmup_failures == 0
    marker = json.loads((tmp_path / "locust" / f"{SCENARIO_ON}-u{users}_warmup.json").read_text())
    assert marker["requests"] == run.warmup_requests > 0 and marker["failures"] == 0
    # The server's window opens when the warm-up ends: shorter than warm-up + run (it would be longer had it
    # opened at launch), and its own rate is the steady state's that Locust reports.
    assert run.warmup_requests > 0 and run.requests > 0
    assert 0 < run.server_seconds < config.warmup_s + config.run_time_s
    # The server's window opens when the runner sees the warm-up's end and lasts run_time_s; Locust's opens at
    # its statistics' reset and closes when it stops: the two differ by the marker's polling lag at each end.
    assert run.requests * 0.5 <= run.server.inference_count < run.requests + run.warmup_requests
    assert run.server_inferences_per_s == pytest.approx(run.rps, rel=0.35)
    doc = json.loads(report.files["json"].read_text())
    assert doc["runs"][0]["warmup_requests"] == run.warmup_requests
    assert "after a 2 s warm-up" in report.files["markdown"].read_text()


def test_without_a_warmup_the_servers_window_is_the_measured_one_and_nothing_claims_a_warmup(triton_server, tmp_path):
    users = 4
    config = LoadTestConfig(url=triton_server.grpc_url, metrics_url=triton_server.metrics_url, model=MODEL,
                            users=(users,), run_time_s=2, thresholds=Thresholds(max_failure_ratio=0.0), out_dir=tmp_path,
                            server_pid=triton_server.pid)
    report = run_loadtest(config)
    (run,) = report.runs
    assert report.passed and run.failures == 0 and run.warmup_requests == 0
    # The counters are read when Locust's statistics start and when it stops (at most run_time_s later), not
    # around the whole Locust process, whose start-up alone takes a second or more: both rates count one window.
    assert 0 < run.server_seconds < config.run_time_s + 0.5
    assert run.server_inferences_per_s == pytest.approx(run.windows_per_s, rel=0.25)
    assert "warm-up" not in report.headline() and "warm-up" not in report.files["markdown"].read_text()


#: Runs in a subprocess: importing Locust monkey-patches the standard library (gevent), which must not
#: happen inside the test process once servers and threads exist. A real Locust Environment and stats.
_WARMUP_SCRIPT = r"""
import argparse, json, sys
from locust.env import Environment
from loadtest.users import end_warmup, gate_failures

def log(env, ok, failed):
    for _ in range(ok):
        env.stats.log_request("grpc", "classify", 10, 0)
    for _ in range(failed):  # Locust logs a failed request as a request and an error
        env.stats.log_request("grpc", "classify", 10, 0)
        env.stats.log_error("grpc", "classify", "UNAVAILABLE")

out = {}
for ratio, warm_failed in ((0.5, 2), (0.1, 2), (0.0, 0)):
    env = Environment(parsed_options=argparse.Namespace(max_p95_ms=None, max_p99_ms=None, max_failure_ratio=ratio))
    log(env, 3 - warm_failed if warm_failed < 3 else 0, warm_failed)
    warmup = end_warmup(env, marker=sys.argv[1])
    after_reset = env.stats.total.num_requests
    log(env, 8, 0)
    out[f"{ratio}"] = {"warmup": warmup, "marker": json.load(open(sys.argv[1])), "after_reset": after_reset,
                       "broken": gate_failures(env), "exit_code": env.process_exit_code}
print(json.dumps(out))
"""


def test_warmup_failures_still_count_towards_the_failure_gate_and_the_exit_code(tmp_path):
    import subprocess
    import sys

    from loadtest.locust_run import REPO_ROOT

    proc = subprocess.run([sys.executable, "-c", _WARMUP_SCRIPT, str(tmp_path / "m.json")], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    lenient, strict, clean = got["0.5"], got["0.1"], got["0.0"]
    for case in (lenient, strict):  # warm-up: 1 ok + 2 failed; then 8 ok: 2 failures of 11 in all (0.18)
        assert (case["warmup"]["requests"], case["warmup"]["failures"]) == (3, 2) and case["marker"]["failures"] == 2
        assert case["after_reset"] == 0  # the figures cover only what follows the warm-up
        assert case["exit_code"] == 1  # any failure fails the run, as Locust's own exit code does
    assert lenient["broken"] == [] and len(strict["broken"]) == 1 and "(2/11)" in strict["broken"][0]
    assert clean["warmup"]["failures"] == 0 and clean["broken"] == [] and clean["exit_code"] is None


def test_metrics_text_is_summed_over_versions_for_the_named_model_only():
    text = "\n".join([
        "# HELP nv_inference_count Number of inferences performed",
        "# TYPE nv_inference_count counter",
        'nv_inference_count{model="ser_int8",version="1"} 120',
        'nv_inference_count{model="ser_int8",version="2"} 8',
        'nv_inference_count{model="ser_fp32",version="1"} 999',
        'nv_inference_exec_count{model="ser_int8",version="1"} 16',
        'nv_inference_request_success{model="ser_int8",version="1"} 128',
        'nv_inference_queue_duration_us{model="ser_int8",version="1"} 2.56e+05',
        'nv_cpu_utilization 0.5',
    ])
    c = parse_metrics(text, model="ser_int8")
    assert (c.inference_count, c.exec_count, c.success) == (128, 16, 128)
    assert c.mean_batch_size == 8.0 and c.queue_us_per_request == 2000.0
    assert parse_metrics(text, model="absent").inference_count == 0


def _locust(*args: str) -> list[str]:
    import sys

    from loadtest.run_config import LOCUSTFILE

    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "WARNING", *args]


def test_master_and_worker_mode_runs_the_load_and_the_master_ends_the_warmup_and_judges(triton_server, tmp_path):
    import subprocess

    from deploy.local_triton import free_ports
    from loadtest.locust_run import REPO_ROOT

    (port,) = free_ports(1)
    common = ["--host", triton_server.grpc_url, "--model", MODEL]
    master = subprocess.Popen(
        _locust("--master", "--headless", "--expect-workers", "1", "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(port), "-u", "4", "-r", "4", "-t", "7s", "--csv", str(tmp_path / "mw"),
                "--final-stats", str(final_stats_csv(tmp_path / "mw")),
                "--only-summary", "--max-failure-ratio", "0", "--warmup-s", "4",
                "--warmup-marker", str(tmp_path / "warm.json"), *common),
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = subprocess.Popen(_locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *common),
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, master_err = master.communicate(timeout=90)
        worker.communicate(timeout=30)  # the master's quit stops the worker
    finally:
        for proc in (master, worker):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert master.returncode == 0, master_err[-2000:]
    assert worker.returncode == 0
    row = aggregated_row(final_stats_csv(tmp_path / "mw"))  # written by the master, from its workers' reports
    assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0
    # The master ended the warm-up on the counts its worker had reported (every 3 s, Locust's interval).
    assert json.loads((tmp_path / "warm.json").read_text())["requests"] > 0


def test_the_web_ui_serves_the_load_tests_own_options(triton_server, tmp_path):
    import subprocess
    import time
    import urllib.request

    from deploy.local_triton import free_ports
    from loadtest.locust_run import REPO_ROOT

    (port,) = free_ports(1)
    ui = subprocess.Popen(_locust("--web-host", "127.0.0.1", "--web-port", str(port), "--host", triton_server.grpc_url,
                                  "--model", MODEL), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline and ui.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    page = resp.read().decode()
                break
            except OSError:
                time.sleep(0.2)
    finally:
        ui.terminate()
        try:
            ui.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.communicate()
    # The start form offers the options marked include_in_web_ui, with the values given on the command line.
    for option in ("windows_per_request", "max_p95_ms", "max_failure_ratio", "warmup_s"):
        assert f'"{option}"' in page, option
    assert f'"{MODEL}"' in page
