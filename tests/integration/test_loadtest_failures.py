"""Hostile input to the load test: every mistake is a typed SerError naming the value, before any load."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client.contract import ModelContract
from client.errors import ConfigError, ModelNotFoundError, ServerUnavailableError
from deploy.local_triton import free_ports
from loadtest.gates import Thresholds, evaluate
from loadtest.locust_run import REPO_ROOT, LocustRunError, final_stats_csv, run_locust
from loadtest.payload import AudioSourceConfig, build_window_pool
from loadtest.run_config import LOCUSTFILE, LoadTestConfig
from loadtest.runner import run_loadtest
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
