"""``ser batch`` on a real local Ray cluster (2 CPUs) against two real tritonservers.

Every file is scored exactly once, a corrupt file is an error row, a re-run skips what is done,
and the job survives a server killed, a scoring actor killed and the driver killed mid-job
(the re-run then finishes it). The archive is a few tens of short seeded clips; the model is the
tiny portable one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import REPO_ROOT

ray = pytest.importorskip("ray", reason="Ray Data not installed (make venv installs the ray extra)")
pytest.importorskip("pyarrow")

from client.triton_client import SerClient  # noqa: E402
from deploy.bulk.config import BulkConfig  # noqa: E402
from deploy.bulk.job import run_batch  # noqa: E402
from deploy.bulk.output import MANIFEST, read_rows  # noqa: E402

MODEL = "ser_fp32"
CLIPS = 40
CORRUPT = ("empty.wav", "garbage.flac")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs whose workers import this checkout."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """:data:`CLIPS` seeded clips of 1 to 3 s in nested folders, two corrupt files and a text file to ignore."""
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(11)
    for i in range(CLIPS):
        folder = root / f"speaker_{i % 4}"
        folder.mkdir(exist_ok=True)
        t = np.arange(int((1 + 2 * rng.random()) * 16_000)) / 16_000
        y = 0.3 * np.sin(2 * np.pi * (100 + 5 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(folder / f"clip_{i:03d}.wav", y.astype(np.float32), 16_000, subtype="PCM_16")
    (root / "speaker_0" / CORRUPT[0]).write_bytes(b"")
    (root / "speaker_1" / CORRUPT[1]).write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    (root / "notes.txt").write_text("not audio")
    return root


def _config(archive: Path, out: Path, servers, **options) -> BulkConfig:
    url = ",".join(s.grpc_url for s in servers)
    return BulkConfig(sources=(str(archive),), out=str(out), url=url, model=MODEL,
                      **{"actors": 2, "files_per_batch": 2, **options})


def _check_each_file_once(archive: Path, out: Path) -> list[dict]:
    rows = read_rows(str(out))
    counts = Counter(r["source"] for r in rows)
    expected = {str(p) for p in archive.rglob("*") if p.suffix in (".wav", ".flac")}
    assert set(counts) == expected and len(expected) == CLIPS + len(CORRUPT)
    assert max(counts.values()) == 1, [s for s, c in counts.items() if c > 1]
    return rows


def _successes(server) -> int:
    with SerClient(server.grpc_url, model=MODEL) as client:
        return client.statistics().success_count


def _parts(out: Path) -> int:
    return len(list(out.rglob("*.parquet"))) if out.exists() else 0


def _when_first_part_is_written(out: Path, action, *, timeout_s: float = 120.0, seen: list | None = None) -> threading.Thread:
    """Run ``action()`` in a thread as soon as a Parquet part appears under ``out``; ``seen`` gets the parts then."""
    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            parts = _parts(out)
            if parts:
                action()
                if seen is not None:
                    seen.append(parts)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_every_file_is_scored_once_over_both_servers_and_corrupt_files_are_error_rows(ray_cluster, two_servers, archive, tmp_path):
    out = tmp_path / "scores"
    before = [_successes(s) for s in two_servers]
    summary = run_batch(_config(archive, out, two_servers), print_fn=lambda _: None)
    assert (summary.total, summary.skipped, summary.scored, summary.failed) == (CLIPS + 2, 0, CLIPS + 2, 2)
    rows = _check_each_file_once(archive, out)
    labels = json.loads((out / MANIFEST).read_text())["labels"]
    for row in rows:
        if Path(row["source"]).name in CORRUPT:
            assert row["error_type"] in ("EmptyAudioError", "AudioDecodeError") and row["label"] == ""
            assert row["source"] in row["error"] and row["probabilities"] == []
        else:
            assert row["error_type"] == "" and row["label"] in labels and row["windows"] >= 1
            assert len(row["probabilities"]) == len(labels) and abs(sum(row["probabilities"]) - 1) < 1e-4
            assert 1.0 <= row["duration_s"] <= 3.0 and (row["model"], row["model_version"]) == (MODEL, "1")
    gained = [_successes(s) - b for s, b in zip(two_servers, before, strict=True)]
    assert min(gained) >= 3, gained  # both servers took requests

    again = run_batch(_config(archive, out, two_servers), print_fn=lambda _: None)
    assert (again.skipped, again.scored) == (CLIPS + 2, 0)
    _check_each_file_once(archive, out)


@pytest.mark.slow
def test_a_server_killed_mid_job_costs_no_file_and_no_duplicate(ray_cluster, two_servers, archive, tmp_path):
    out = tmp_path / "scores"
    victim = two_servers[1]
    seen: list[int] = []
    watcher = _when_first_part_is_written(out, lambda: os.kill(victim.pid, signal.SIGKILL), seen=seen)
    try:
        summary = run_batch(_config(archive, out, two_servers), print_fn=lambda _: None)
        watcher.join()
        assert not victim.is_running() and seen[0] < _parts(out), "the server was not killed while the job ran"
    finally:
        victim.stop()
        victim.start()
    assert (summary.scored, summary.failed) == (CLIPS + 2, 2)
    rows = _check_each_file_once(archive, out)
    assert sorted(Path(r["source"]).name for r in rows if r["error_type"]) == sorted(CORRUPT)


def _scoring_actors() -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        text = " ".join(proc.info["cmdline"] or [])
        if text.startswith("ray::") and "Scorer" in text:
            found.append(proc)
    return found


@pytest.mark.slow
def test_a_scoring_actor_killed_mid_job_is_replaced_and_its_batch_scored_once(ray_cluster, two_servers, archive, tmp_path):
    out = tmp_path / "scores"
    killed: list[int] = []

    def kill_one_actor() -> None:
        actors = _scoring_actors()
        if actors:
            actors[0].kill()
            killed.append(actors[0].pid)

    seen: list[int] = []
    watcher = _when_first_part_is_written(out, kill_one_actor, seen=seen)
    summary = run_batch(_config(archive, out, two_servers), print_fn=lambda _: None)
    watcher.join()
    assert killed and seen[0] < _parts(out), "no scoring actor was killed while the job ran"
    assert (summary.scored, summary.failed) == (CLIPS + 2, 2)
    _check_each_file_once(archive, out)


@pytest.mark.slow
def test_a_rerun_after_the_driver_is_killed_finishes_the_job_writing_each_file_once(ray_cluster, two_servers, archive, tmp_path):
    out = tmp_path / "scores"
    url = ",".join(s.grpc_url for s in two_servers)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "driver.log"
    with open(log, "wb") as sink:  # its own session: the kill takes the local Ray cluster it started with it
        driver = subprocess.Popen(
            [sys.executable, "-m", "ser", "batch", str(archive), "--out", str(out), "--url", url, "--model", MODEL,
             "--actors", "1", "--files-per-batch", "1", "--num-cpus", "2"],
            cwd=REPO_ROOT, env=env, start_new_session=True, stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        _when_first_part_is_written(out, lambda: os.killpg(driver.pid, signal.SIGKILL), timeout_s=120).join()
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    written = len(read_rows(str(out)))
    assert 0 < written < CLIPS + 2, "the driver was not killed mid-job"

    rerun = subprocess.run(  # the same command again (an undecodable file is a row, not a failure, here)
        [sys.executable, "-m", "ser", "batch", str(archive), "--out", str(out), "--url", url, "--model", MODEL,
         "--num-cpus", "2", "--error-rows-ok"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{CLIPS + 2 - written} files scored" in rerun.stderr and f"{written} already done" in rerun.stderr
    _check_each_file_once(archive, out)
