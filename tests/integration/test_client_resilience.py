"""The client when the server goes away: retries with backoff, and directory mode's --resume.

These tests stop and restart a server of their own (``own_server``: fixed ports, so its
address survives a restart), never the session's.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import soundfile as sf

from client.batch import find_audio, predict_files
from client.errors import InferenceError, ModelNotFoundError, ServerUnavailableError
from client.triton_client import RetryPolicy, SerClient, is_retryable

FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff_s=0.05, max_backoff_s=0.05)


@pytest.fixture(scope="module")
def own_server(portable_repository):
    from deploy.local_triton import LocalTriton, free_ports

    http, grpc, metrics = free_ports(3)
    server = LocalTriton(portable_repository, http_port=http, grpc_port=grpc, metrics_port=metrics, startup_timeout_s=120)
    with server:
        yield server


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """36 short clips in nested folders, plus a 0-byte and a garbage file, plus a non-audio file to ignore."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(5)
    for i in range(36):
        sub = root / f"speaker_{i % 3}" / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        t = np.arange(8_000) / 16_000
        y = 0.3 * np.sin(2 * np.pi * (120 + 7 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(sub / f"clip_{i:02d}.wav", y.astype(np.float32), 16_000, subtype="PCM_16")
    (root / "speaker_0" / "empty.wav").write_bytes(b"")
    (root / "speaker_1" / "garbage.flac").write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    (root / "notes.txt").write_text("not audio")
    return root


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_server_stopped_mid_run_then_restarted_lets_resume_finish_every_file_exactly_once(own_server, clip_dir, tmp_path):
    files = find_audio([clip_dir])
    assert len(files) == 38 and not any(f.suffix == ".txt" for f in files)
    out = tmp_path / "predictions.jsonl"
    seen: list[dict] = []

    def stop_the_server_after_five_rows(row: dict) -> None:
        seen.append(row)
        if len(seen) == 5:
            own_server.stop()

    with SerClient(own_server.grpc_url, retry=FAST_RETRY) as client:
        # a stopping Triton first unloads its models (NOT_FOUND), then closes (UNAVAILABLE): either stops the run
        with pytest.raises((ServerUnavailableError, ModelNotFoundError), match="rerun with --resume") as info:
            predict_files(client, files, output=out, concurrency=4, on_row=stop_the_server_after_five_rows)
    assert "\n" not in str(info.value) and own_server.grpc_url in str(info.value)
    first = _rows(out)
    assert 5 <= len(first) < len(files)
    with open(out, "a") as fh:
        fh.write('{"file": "' + str(files[-1])[:20])  # as if killed in the middle of writing a row

    own_server.start()
    with SerClient(own_server.grpc_url, retry=FAST_RETRY) as client:
        summary = predict_files(client, files, output=out, resume=True, concurrency=4)
    rows = _rows(out)
    assert sorted(r["file"] for r in rows) == sorted(str(f) for f in files)  # every file, exactly once
    kept = [r for r in first if r["ok"]]  # a failed row of the first run is classified again
    assert rows[: len(kept)] == kept  # no result written before was touched
    assert summary.skipped == len(kept) and summary.ok + summary.failed == len(files) - len(kept)
    bad = {r["file"]: r for r in rows if not r["ok"]}
    assert sorted(bad) == sorted(str(f) for f in files if f.name in ("empty.wav", "garbage.flac"))
    assert {r["error_type"] for r in bad.values()} == {"AudioDecodeError"}
    assert all(r["file"] in r["error"] for r in bad.values())
    # resuming a finished job classifies again only the files whose rows record failures, replacing those rows
    with SerClient(own_server.grpc_url) as client:
        again = predict_files(client, files, output=out, resume=True)
    assert again.skipped == len(files) - 2 and again.ok == 0 and again.failed == 2
    final = _rows(out)
    assert [r for r in final if r["ok"]] == [r for r in rows if r["ok"]]
    assert sorted(r["file"] for r in final) == sorted(str(f) for f in files)


@pytest.mark.slow
def test_a_client_opened_while_the_server_is_down_connects_when_it_comes_up_during_the_backoff(own_server, clip_dir):
    own_server.stop()
    attempts: list[tuple[str, int]] = []
    starter = threading.Timer(0.2, own_server.start)
    starter.start()
    try:
        policy = RetryPolicy(max_attempts=100, initial_backoff_s=0.2, max_backoff_s=0.5)
        with SerClient(own_server.grpc_url, retry=policy, on_attempt=lambda what, n: attempts.append((what, n))) as client:
            assert client.classify(next(clip_dir.rglob("clip_00.wav"))).label
    finally:
        starter.join()
    live = [n for what, n in attempts if what == "liveness check"]
    assert live[0] == 1 and live[-1] >= 2, attempts  # failed at least once, then succeeded on a retry
    assert all(n == 1 for what, n in attempts if what == "infer")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_refused_request_is_attempted_exactly_once(triton_server, protocol):
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    attempts: list[tuple[str, int]] = []
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.01)
    with SerClient(url, protocol=protocol, retry=policy, on_attempt=lambda what, n: attempts.append((what, n))) as client:
        attempts.clear()
        with pytest.raises(InferenceError, match="INVALID_ARGUMENT|400"):
            client.infer_windows(np.zeros((1, 123), np.float32), [123])
    assert attempts == [("infer", 1)]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_dead_address_is_tried_max_attempts_times_then_server_unavailable(protocol):
    from deploy.local_triton import free_ports

    url = f"127.0.0.1:{free_ports(1)[0]}"
    attempts: list[int] = []
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    with pytest.raises(ServerUnavailableError, match=url):
        SerClient(url, protocol=protocol, retry=policy, timeout_s=5, on_attempt=lambda what, n: attempts.append(n)).open()
    assert attempts == [1, 2, 3]


def test_only_transport_failures_are_retryable_and_backoff_grows_with_jitter():
    import random

    from tritonclient.utils import InferenceServerException

    assert is_retryable(InferenceServerException("x", status="StatusCode.UNAVAILABLE"))
    assert is_retryable(InferenceServerException("model is reloading", status="503"))  # HTTP's UNAVAILABLE: status, not words
    assert not is_retryable(InferenceServerException("unavailable", status="504"))  # a time-out, worded or not
    assert is_retryable(ConnectionRefusedError(111, "refused"))
    assert is_retryable(InferenceServerException("[Errno 111] Connection refused"))
    for status in ("StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.INTERNAL", "StatusCode.DEADLINE_EXCEEDED", "400"):
        assert not is_retryable(InferenceServerException("connection refused?", status=status)), status
    assert not is_retryable(TimeoutError("timed out")) and not is_retryable(ValueError("x"))
    policy = RetryPolicy(initial_backoff_s=0.1, multiplier=2, max_backoff_s=0.35, jitter=0.2)
    rng = random.Random(0)
    waits = [[policy.backoff_s(r, rng=rng) for r in (1, 2, 3, 4)] for _ in range(50)]
    for w1, w2, w3, w4 in waits:
        assert 0.08 <= w1 <= 0.12 and 0.16 <= w2 <= 0.24 and 0.28 <= w3 <= 0.42 and 0.28 <= w4 <= 0.42
    assert len({round(w[0], 6) for w in waits}) > 10  # jitter spreads the waits
    assert RetryPolicy(jitter=0).backoff_s(1) == 0.1 and RetryPolicy.none().max_attempts == 1
