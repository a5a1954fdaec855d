"""Hostile input to the load test: every mistake is a typed SerError naming the value, before any load."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from client.contract import ModelContract
from client.errors import ConfigError, ModelNotFoundError, ServerUnavailableError
from deploy.local_triton import free_ports
from loadtest.gates import Thresholds, evaluate
from loadtest.locust_run import REPO_ROOT, LocustRunError, final_stats_csv, run_locust
from loadtest.payload import AudioSourceConfig, build_window_pool
from loadtest.run_config import LOCUSTFILE, LiveCalls, LoadTestConfig
from loadtest.runner import run_loadtest
from tests.helpers import assert_one_line_error, ser
from training.errors import CorpusError

CONTRACT = ModelContract(labels=("a", "b"), window_samples=16_000, hop_samples=8_000)


@pytest.mark.parametrize(
    ("kwargs", "quoted"),
    [
        ({"max_p95_ms": -1}, "max_p95_ms=-1"),
        ({"max_p95_ms": 0}, "max_p95_ms=0"),
        ({"max_p99_ms": math.nan}, "max_p99_ms=nan"),
        ({"max_p99_ms": "fast"}, "max_p99_ms='fast'"),
        ({"max_failure_ratio": 1.5}, "max_failure_ratio=1.5"),
        ({"max_failure_ratio": -0.1}, "max_failure_ratio=-0.1"),
        ({"max_p95_ms": 200, "max_p99_ms": 100}, "max_p95_ms=200 > max_p99_ms=100"),
    ],
)
def test_bad_thresholds_are_refused_naming_the_value(kwargs, quoted):
    with pytest.raises(ConfigError, match=quoted.replace("(", r"\(")):
        Thresholds(**kwargs)


def test_a_gate_with_no_completed_request_fails_rather_than_passes():
    assert evaluate(Thresholds(max_p95_ms=100), requests=0, failures=0, p95_ms=0, p99_ms=0)
    assert evaluate(Thresholds(), requests=0, failures=0, p95_ms=0, p99_ms=0) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one"),
        ({"repository": "r", "url": "127.0.0.1:1"}, "give exactly one"),
        ({"url": "127.0.0.1:1", "users": (0, 4)}, r"users=\[0, 4\]"),
        ({"url": "127.0.0.1:1", "users": (4, 4)}, "distinct"),
        ({"url": "127.0.0.1:1", "run_time_s": 0}, "run_time_s=0"),
        ({"url": "127.0.0.1:1", "run_time_s": 2.5}, "run_time_s=2.5"),
        ({"url": "127.0.0.1:1", "warmup_s": -1}, "warmup_s=-1"),
        ({"url": "127.0.0.1:1", "warmup_s": 1.5}, "warmup_s=1.5"),
        ({"url": "127.0.0.1:1", "protocol": "udp"}, "protocol='udp'"),
        ({"url": "127.0.0.1:1", "compare_batching": True}, "need repository="),
        ({"url": "127.0.0.1:1", "ort_baseline": True}, "need repository="),
        ({"url": "https://127.0.0.1:1"}, "url='https://127.0.0.1:1'"),
    ],
)
def test_bad_load_test_configs_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LoadTestConfig(**kwargs)


@pytest.mark.parametrize(("option", "quoted"), [
    ("--max-p95-ms=-5", "max_p95_ms='-5'"),
    ("--warmup-s=-2", "'-2': expected a finite number of seconds >= 0"),
])
def test_the_locustfile_refuses_a_bad_option_on_its_command_line(option, quoted):
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", "127.0.0.1:1", "-t", "1s", option],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert option.split("=")[0] in proc.stderr and quoted in proc.stderr


def test_a_locust_that_dies_before_its_statistics_is_not_read_from_an_earlier_runs_files(tmp_path):
    dying = tmp_path / "dying_locustfile.py"
    dying.write_text("raise SystemExit('this locustfile cannot load')\n")
    out = tmp_path / "runs"
    out.mkdir()
    prefix = out / "batching-on-u1"
    for stale in (final_stats_csv(prefix), Path(f"{prefix}_stats.csv")):  # an earlier run's figures, same folder
        stale.write_text("Type,Name,Request Count,Failure Count\n,Aggregated,999,0\n")
    config = LoadTestConfig(url="127.0.0.1:1", users=(1,), run_time_s=1, locustfile=dying, out_dir=tmp_path)
    with pytest.raises(LocustRunError, match="without statistics"):
        run_locust(config, scenario="batching-on", url="127.0.0.1:1", users=1, metrics=None, out_dir=out)
    assert not final_stats_csv(prefix).exists()


def test_an_unknown_model_is_refused_before_any_load(triton_server, tmp_path):
    config = LoadTestConfig(url=triton_server.grpc_url, model="no_such_model", users=(1,), run_time_s=1, out_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match="no_such_model"):
        run_loadtest(config)
    assert not (tmp_path / "locust").exists()


def test_an_unknown_model_in_a_repository_is_refused_before_starting_a_server(portable_repository, tmp_path):
    config = LoadTestConfig(repository=portable_repository, model="ser_nope", users=(1,), run_time_s=1, out_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"'ser_nope' is not in repository .* it has \['ser_fp32', 'ser_int8'\]"):
        run_loadtest(config)


def test_a_dead_server_is_a_server_unavailable_error(tmp_path):
    (port,) = free_ports(1)
    config = LoadTestConfig(url=f"127.0.0.1:{port}", users=(1,), run_time_s=1, out_dir=tmp_path)
    with pytest.raises(ServerUnavailableError, match=f"127.0.0.1:{port}"):
        run_loadtest(config)


def test_more_windows_per_request_than_max_batch_size_is_refused(triton_server, tmp_path):
    config = LoadTestConfig(url=triton_server.grpc_url, model="ser_int8", windows_per_request=9, users=(1,),
                            run_time_s=1, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="windows_per_request=9.*max_batch_size=8"):
        run_loadtest(config)


def test_an_empty_audio_folder_is_a_corpus_error(triton_server, tmp_path):
    empty = tmp_path / "no-audio"
    empty.mkdir()
    (empty / "notes.txt").write_text("not audio")
    with pytest.raises(CorpusError, match="no-audio: no audio files"):
        build_window_pool(AudioSourceConfig(audio_dir=empty), contract=CONTRACT)
    config = LoadTestConfig(url=triton_server.grpc_url, model="ser_int8", users=(1,), run_time_s=1,
                            audio=AudioSourceConfig(audio_dir=empty), out_dir=tmp_path / "out")
    with pytest.raises(CorpusError, match="no audio files"):
        run_loadtest(config)


def test_a_folder_of_only_unreadable_audio_names_the_first_reason(tmp_path):
    import soundfile as sf

    (tmp_path / "a.wav").write_bytes(b"RIFF-not-really")
    sf.write(tmp_path / "b.wav", np.zeros(4000, dtype=np.float32), 16_000)
    with pytest.raises(CorpusError, match=r"none of 2 audio file\(s\) is usable; first: .*a.wav: cannot decode"):
        build_window_pool(AudioSourceConfig(audio_dir=tmp_path), contract=CONTRACT)


def test_missing_folder_missing_manifest_and_two_sources_are_refused(tmp_path):
    with pytest.raises(CorpusError, match="no such audio folder"):
        build_window_pool(AudioSourceConfig(audio_dir=tmp_path / "nope"), contract=CONTRACT)
    with pytest.raises(CorpusError, match="no such split manifest"):
        build_window_pool(AudioSourceConfig(manifest=tmp_path / "split.json"), contract=CONTRACT)
    with pytest.raises(ConfigError, match="give one audio source"):
        AudioSourceConfig(audio_dir=tmp_path, manifest=tmp_path / "split.json")
    with pytest.raises(ConfigError, match="partition='dev'"):
        AudioSourceConfig(partition="dev")


def test_generated_audio_gives_real_windows_not_zeros():
    pool = build_window_pool(AudioSourceConfig(generated_clips=3), contract=CONTRACT)
    assert pool.waveforms.shape[1] == 16_000 and pool.waveforms.dtype == np.float32 and len(pool) >= 3
    assert all(np.abs(w[:n]).max() > 1e-3 for w, n in zip(pool.waveforms, pool.num_samples, strict=True))
    wav, ns = pool.requests(windows_per_request=4, count=2)[1]
    assert wav.shape == (4, 16_000) and ns.shape == (4, 1) and ns.dtype == np.int64


# --- ser loadtest --live-calls ----------------------------------------------------------------


def test_live_calls_against_a_server_without_the_streaming_model_is_one_line_naming_it_and_how_to_write_it(
        triton_server, tmp_path):
    proc = ser("loadtest", "--live-calls", "--url", triton_server.grpc_url, "--stream-model", "ser-stream-nope",
               "--users", "1", "--run-time", "1", "--out", str(tmp_path))
    assert_one_line_error(proc, "'ser-stream-nope'", "ser repository", "--stream-model")
    assert proc.returncode == 2 and not (tmp_path / "locust").exists()  # refused before any load


def test_live_calls_to_a_window_model_is_refused_as_not_a_streaming_model(triton_server, tmp_path):
    proc = ser("loadtest", "--live-calls", "--url", triton_server.grpc_url, "--stream-model", "ser_int8",
               "--users", "1", "--run-time", "1", "--out", str(tmp_path))
    assert_one_line_error(proc, "'ser_int8' is not a streaming model")
    assert proc.returncode == 2 and not (tmp_path / "locust").exists()


def test_live_calls_on_a_repository_without_the_streaming_model_is_refused_before_a_server_starts(
        portable_repository, tmp_path):
    proc = ser("loadtest", "--live-calls", "--repository", str(portable_repository), "--users", "1", "--run-time", "1",
               "--out", str(tmp_path))
    assert_one_line_error(proc, "no streaming model 'ser-stream'", "ser repository", "--stream-model")
    assert proc.returncode == 2 and not (tmp_path / "tritonserver-live-calls.log").exists()


def test_live_calls_read_the_hop_of_a_loopback_server_past_a_dead_proxy_of_the_environment(triton_server, monkeypatch):
    from loadtest.live_calls import stream_hop_ms

    for name in ("http_proxy", "https_proxy", "grpc_proxy"):  # gRPC would send 127.0.0.1 through it
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert stream_hop_ms(triton_server.grpc_url, "ser-stream") == 500


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_load_test_stopped_by_a_signal_leaves_no_locust_behind(triton_server, tmp_path, sig):
    command = [sys.executable, "-m", "ser", "loadtest", "--live-calls", "--url", triton_server.grpc_url, "--users", "1",
               "--run-time", "60", "--generated-clips", "1", "--out", str(tmp_path)]
    err = tmp_path / "stderr.txt"
    with open(err, "w") as err_fh:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err_fh)
    try:
        deadline = time.monotonic() + 90
        # Locust writes its statistics once its users run (a loaded host can take tens of seconds to get there)
        while not (tmp_path / "locust" / "live-calls-u1_stats.csv").is_file() and time.monotonic() < deadline \
                and proc.poll() is None:
            time.sleep(0.2)
        locust = _children(proc.pid)
        assert locust, f"no Locust started (load test exit {proc.poll()}): {err.read_text()[-2000:]}"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in locust) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(Path(f"/proc/{pid}").exists() for pid in locust), f"Locust {locust} outlived the load test"
    finally:
        proc.kill()
        proc.wait()


def test_a_second_load_test_into_the_same_out_folder_is_refused_while_the_first_runs(triton_server, tmp_path):
    command = [sys.executable, "-m", "ser", "loadtest", "--live-calls", "--url", triton_server.grpc_url, "--users", "1",
               "--run-time", "60", "--generated-clips", "1", "--out", str(tmp_path)]
    first = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "locust" / "live-calls-u1_stats.csv").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        # the same --out: its runs would delete or read the first one's Locust files as its own
        second = ser("loadtest", "--live-calls", "--url", triton_server.grpc_url, "--users", "1", "--run-time", "1",
                     "--generated-clips", "1", "--out", str(tmp_path))
        assert_one_line_error(second, str(tmp_path), f"pid {first.pid}", "--out")
        assert second.returncode == 2 and first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=30)
    again = ser("loadtest", "--live-calls", "--url", "127.0.0.1:1", "--users", "1", "--run-time", "1", "--out", str(tmp_path))
    assert "another load test" not in again.stderr  # the folder is free once the first run ended


@pytest.mark.parametrize(("extra", "named"), [
    (["--compare-server-side"], "--compare-server-side"),
    (["--compare-batching"], "--compare-batching"),
    (["--ort-baseline"], "--ort-baseline"),
    (["--compare-model", "ser_fp32", "--max-p95-ms", "100"], "--compare-model, --max-p95-ms"),
    (["--protocol", "http"], "--protocol"),
    (["--audio-dir", "clips"], "--audio-dir"),
])
def test_live_calls_with_an_option_it_cannot_honour_is_a_one_line_error_naming_it(extra, named, capsys):
    from ser.cli import main

    assert main(["loadtest", "--live-calls", "--url", "127.0.0.1:1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --live-calls with {named}:") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("extra", [["--chunk-ms", "50"], ["--stream-model", "ser-stream"], ["--max-update-lag-p99-ms", "500"]])
def test_a_live_call_option_without_live_calls_is_refused(extra, capsys):
    from ser.cli import main

    assert main(["loadtest", "--url", "127.0.0.1:1", *extra]) == 2
    assert capsys.readouterr().err.strip() == f"error: {extra[0]} without --live-calls: only the live-call sweep reads them"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"chunk_ms": 0}, "chunk_ms=0"),
    ({"chunk_ms": 1.5}, "chunk_ms=1.5"),
    ({"max_update_lag_p99_ms": -1.0}, "max_update_lag_p99_ms=-1.0"),
    ({"max_update_lag_p99_ms": math.inf}, "max_update_lag_p99_ms=inf"),
    ({"stream_model": ""}, "stream_model=''"),
])
def test_bad_live_call_settings_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        LiveCalls(**kwargs)


def test_a_live_call_config_refuses_what_the_sweep_cannot_do():
    live = LiveCalls()
    with pytest.raises(ConfigError, match="live_calls with compare_batching, ort_baseline"):
        LoadTestConfig(repository=Path("repo"), live_calls=live, compare_batching=True, ort_baseline=True)
    with pytest.raises(ConfigError, match="gRPC only"):
        LoadTestConfig(url="127.0.0.1:1", protocol="http", live_calls=live)
    config = LoadTestConfig(url="127.0.0.1:1", live_calls=live)
    assert config.locustfile.name == "locustfile_stream.py" and config.user_classes == ("LiveCallUser",)
