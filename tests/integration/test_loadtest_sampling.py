"""What a load run samples: counters per model version across a version swap, and server memory.

The bounded drill: a new model version loaded into the real local server under Locust load,
with zero failed requests, and the report's server counters summed over both versions (the
old version's counters vanish when it unloads). Memory: the server's and its stubs'
resident sets sampled over the run, the growth after the warm-up, and its gate.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
import urllib.request

import pytest

from loadtest.locust_run import run_locust
from loadtest.metrics import CounterTracker, ModelCounters, parse_metrics_by_version
from loadtest.report import LoadTestReport, write_report
from loadtest.run_config import LoadTestConfig
from loadtest.sampler import MemorySample, RunSampler, descendants, rss_growth_pct

MODEL = "ser_int8"


def _c(success: float, inferences: float | None = None) -> ModelCounters:
    return ModelCounters(model=MODEL, success=success, inference_count=success if inferences is None else inferences)


def test_counters_across_a_version_swap_count_the_unloaded_versions_requests():
    tracker = CounterTracker(model=MODEL)
    tracker.observe({"1": _c(1)})  # before start: ignored
    tracker.start({"1": _c(1000)})
    tracker.observe({"1": _c(1400)})
    tracker.observe({"1": _c(1600), "2": _c(50)})  # version 2 loaded mid-run
    tracker.observe({"1": _c(0), "2": _c(900)})  # version 1 unloaded: 2.51 resets its samples to 0
    assert tracker.total().success == 600 + 900
    assert {v: c.success for v, c in tracker.by_version().items()} == {"1": 600, "2": 900}
    naive = 0 + 900 - 1000  # "after - before" of the sums over versions
    assert naive < 0
    tracker.finish()
    tracker.observe({"2": _c(5000)})
    assert tracker.total().success == 1500


def test_metrics_text_is_split_by_version():
    text = "\n".join([
        'nv_inference_request_success{model="ser_int8",version="1"} 12',
        'nv_inference_request_success{model="ser_int8",version="2"} 3',
        'nv_inference_exec_count{model="ser_int8",version="2"} 2',
        'nv_inference_request_success{model="ser_fp32",version="1"} 99',
    ])
    by = parse_metrics_by_version(text, model=MODEL)
    assert sorted(by) == ["1", "2"] and by["1"].success == 12 and (by["2"].success, by["2"].exec_count) == (3, 2)


def _mem(values_mib: list[float], *, start: float = 0.0) -> list[MemorySample]:
    return [MemorySample(t_s=start + i, server_bytes=int(v * (1 << 20)), stubs_bytes=0) for i, v in enumerate(values_mib)]


def test_memory_growth_is_measured_after_the_warmup_from_medians_and_gates_the_run():
    from loadtest.gates import memory_gate as _memory_gate

    warm = _mem([50, 80, 100])  # loading, before the warm-up ends at t=3
    flat = warm + _mem([100, 101, 100, 250, 100, 101, 100, 100, 101, 100], start=3)  # one spike does not decide
    leak = warm + _mem([100, 105, 110, 115, 120, 125, 130, 135, 140, 145], start=3)
    assert abs(rss_growth_pct(flat, after_s=3)) < 1.5
    assert rss_growth_pct(leak, after_s=3) == pytest.approx(100 * (142.5 - 102.5) / 102.5)  # medians of 2 and 2
    assert math.isnan(rss_growth_pct(flat[:5], after_s=3))  # too few samples after the warm-up
    assert _memory_gate(10.0, flat, 3) == [] and _memory_gate(None, leak, 3) == []
    assert "grew 39.0 %" in _memory_gate(10.0, leak, 3)[0] and "> 10 %" in _memory_gate(10.0, leak, 3)[0]
    assert "not measurable" in _memory_gate(10.0, flat[:5], 3)[0]


def _requests_made(locust_log) -> int:
    """Requests in the summary table Locust prints on quitting (its stderr, kept in the run's log)."""
    import re

    m = re.search(r"^\s+Aggregated\s+(\d+)\s+\d+\(", locust_log.read_text(), re.M)
    assert m, f"no summary in {locust_log}"
    return int(m.group(1))


@pytest.mark.slow
def test_a_new_version_loaded_under_load_fails_no_request_and_the_counters_cover_both_versions(runtime, runtime_repository, tmp_path):
    from deploy.local_triton import LocalTriton

    repo = tmp_path / "repo"
    shutil.copytree(runtime_repository / MODEL, repo / MODEL, ignore=shutil.ignore_patterns("__pycache__"))
    interval = 0.25
    with LocalTriton(repo) as server:
        config = LoadTestConfig(url=server.grpc_url, model=MODEL, users=(4,), run_time_s=8, server_pid=server.pid,
                                sample_interval_s=interval, out_dir=tmp_path / "report")
        swapped: list[float] = []

        def served_by_version() -> dict[str, float]:
            text = urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10).read().decode()
            return {v: c.success for v, c in parse_metrics_by_version(text, model=MODEL).items()}

        def swap_in_version_2() -> None:  # in the middle of the load: once version 1 has served 150 requests
            deadline = time.monotonic() + 60
            while served_by_version().get("1", 0) < 150 and time.monotonic() < deadline:
                time.sleep(0.1)
            shutil.copytree(repo / MODEL / "1", repo / MODEL / "2", ignore=shutil.ignore_patterns("__pycache__"))
            req = urllib.request.Request(f"http://{server.http_url}/v2/repository/models/{MODEL}/load", data=b"{}",
                                         method="POST", headers={"Connection": "close"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert resp.status == 200
            swapped.append(time.monotonic())

        swapper = threading.Thread(target=swap_in_version_2)
        swapper.start()
        try:
            run = run_locust(config, scenario="swap", url=server.grpc_url, users=4, metrics=server.metrics_url,
                             out_dir=tmp_path / "locust", server_pid=server.pid)
        finally:
            swapper.join(120)
        index = server.models()
        stubs, tree = server.stub_pids(), descendants(server.pid)
        final = served_by_version()
    assert swapped, "the new version was not loaded"
    assert index == {MODEL: "READY"} and final["1"] == 0  # version 1 unloaded: its counters reset
    assert run.failures == 0 and run.exit_code == 0 and run.requests > 100
    server_side = run.server
    assert server_side is not None and server_side.failure == 0
    naive = final["2"]  # what the sum over versions at the end says was served since the start
    print(f"\nversion swap under 4 users: {_requests_made(tmp_path / 'locust' / 'swap-u4.log')} requests, 0 failed; "
          f"server counted {server_side.success:.0f} over both versions (version 2 alone: {naive:.0f})")
    # Every request Locust made is counted once, less at most the old version's last sampling interval. The
    # reference is the summary Locust prints when it quits (its CSV is a snapshot taken up to a second earlier).
    made = _requests_made(tmp_path / "locust" / "swap-u4.log")
    assert made >= run.requests
    assert made - (made / config.run_time_s * interval * 2 + 8) <= server_side.success <= made
    # Version 1's requests (150 before the swap began) are not lost, less what the window's opening sample missed
    # (the same slack as above: the native runtime serves a sampling interval's worth faster than the portable one).
    assert server_side.success >= naive + 150 - (made / config.run_time_s * interval * 2 + 8)
    # memory of the server and its stubs (the portable runtime's python backend; the native one has none), sampled over the run
    assert len(run.memory) >= 20 and all(m.server_bytes > 0 for m in run.memory)
    if runtime == "portable":
        assert all(m.stubs_bytes > 0 for m in run.memory)
        assert stubs and set(stubs) <= set(tree)  # the stubs are what the samples count below the server
    else:
        assert stubs == [] and all(m.stubs_bytes == 0 for m in run.memory)
    assert math.isfinite(run.rss_growth_pct) and run.row()["rss_growth_pct"] == round(run.rss_growth_pct, 2)
    config.out_dir.mkdir(parents=True)
    report = LoadTestReport(config=config, runs=[run])
    files = write_report(report)
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Server + stub resident memory" in files["markdown"].read_text()


def test_the_sampler_reads_a_live_process_tree_and_stops_twice_safely():
    import os
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with RunSampler(metrics=None, model=MODEL, server_pid=os.getpid(), interval_s=0.05) as sampler:
            time.sleep(0.4)
        sampler.stop()
        assert child.pid in descendants(os.getpid())
        assert len(sampler.memory) >= 3 and all(m.server_bytes > 0 and m.stubs_bytes > 0 for m in sampler.memory)
    finally:
        child.kill()
        child.wait()
