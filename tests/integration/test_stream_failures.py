"""Hostile input and lost calls on the streaming model ``ser-stream``, on the real tritonserver.

A bad chunk gets an error for its call alone: other calls on the same stream go on, the
python-backend stub lives and the server stays READY. Calls that go away (client gone, idle,
cancelled) are freed; a restarted server ends calls with :class:`CallLostError`. The session
server's limits are conftest's ``SERVING_STREAM_SETTINGS`` (6 calls, 30 s, idle 3 s, 5 s chunks).
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.request

import numpy as np
import pytest

from client.errors import CallLimitError, CallLostError, StreamError
from client.stream import StreamSession
from tests.conftest import SERVING_STREAM_SETTINGS

MODEL = "ser-stream"


def tone(seconds: float, sr: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def held_calls(server) -> int:
    """The streaming model's ``ser_stream_calls`` gauge from Triton's metrics endpoint."""
    text = urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10).read().decode()
    found = re.search(r'^ser_stream_calls\{model="%s"\} (\S+)$' % MODEL, text, re.M)
    assert found, "no ser_stream_calls gauge on the metrics endpoint"
    return int(float(found.group(1)))


def wait_for_calls(server, count: int, *, within_s: float) -> int:
    deadline = time.monotonic() + within_s
    while (held := held_calls(server)) != count and time.monotonic() < deadline:
        time.sleep(0.2)
    return held


def stream_stub(server) -> int:
    """PID of the streaming model's python-backend stub."""
    pids = [p for p in server.stub_pids() if f"/{MODEL}/" in open(f"/proc/{p}/cmdline").read().replace("\0", " ")]
    assert len(pids) == 1, pids
    return pids[0]


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def stub(triton_server) -> int:
    return stream_stub(triton_server)


def raw_send(session: StreamSession, call_id: int, arrays: dict, *, start=False, end=False) -> None:
    session.send(call_id, arrays, start=start, end=end, request_id=f"{call_id}:raw")


def error_of(call, within_s: float = 10.0) -> StreamError:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            call.poll()
        except StreamError as exc:
            return exc
        time.sleep(0.05)
    raise AssertionError(f"call {call.call_id}: no error within {within_s} s")


BAD_CHUNKS = {
    "NaN samples": (np.array([0.1, np.nan, 0.2], dtype=np.float32), "NonFiniteAudioError"),
    "a chunk longer than max_chunk_s": (np.zeros(16_000 * 6, dtype=np.float32), "max_chunk_s"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHUNKS))
def test_a_bad_chunk_is_refused_for_its_call_alone(triton_server, stub, case):
    chunk, reason = BAD_CHUNKS[case]
    with StreamSession(triton_server.grpc_url) as session:
        good = session.call(sample_rate=16_000, vad=False)
        bad = session.call(sample_rate=16_000, vad=False)
        good.send(tone(0.6))
        bad.send(tone(0.6))
        bad.send(chunk)
        good.send(tone(0.6))
        error = error_of(bad)
        assert reason in str(error) and f"call {bad.call_id}" in str(error)
        bad.send(tone(0.5))  # the call goes on after a refused chunk
        assert [u.end_s for u in bad.end().updates] == pytest.approx([0.5, 1.0, 1.1])
        assert [u.end_s for u in good.end().updates] == pytest.approx([0.5, 1.0, 1.2])
    assert stream_stub(triton_server) == stub
    assert triton_server.models()[MODEL] == "READY"


def test_requests_that_break_the_protocol_are_refused_naming_what_to_send(triton_server, stub):
    pcm = np.zeros((1, 160), dtype=np.float32)
    with StreamSession(triton_server.grpc_url) as session:
        cases = [
            ({"pcm": pcm}, True, "START needs 'sample_rate'"),
            ({"pcm": pcm, "pcm_s16": np.zeros((1, 160), np.int16), "sample_rate": np.array([[16000]], np.int32)},
             True, "not both"),
            ({"pcm": pcm, "sample_rate": np.array([[200]], np.int32)}, True, "sample rate 200 Hz"),
            ({"pcm": pcm, "sample_rate": np.array([[16000]], np.int32), "hop_ms": np.array([[5000]], np.int32)},
             True, "hop_ms=5000"),
            ({"pcm": pcm}, False, "start a new call"),
        ]
        for i, (arrays, start, reason) in enumerate(cases):
            call = session.call(sample_rate=16_000, call_id=9_000_000 + i)
            raw_send(session, call.call_id, arrays, start=start)
            error = error_of(call)
            assert reason in str(error), (reason, str(error))
            if not start:
                assert isinstance(error, CallLostError)
            call.ended = True
    assert wait_for_calls(triton_server, 0, within_s=5) == 0
    assert stream_stub(triton_server) == stub


def test_calls_beyond_the_cap_are_refused_and_the_others_go_on(triton_server, stub):
    cap = SERVING_STREAM_SETTINGS["max_calls"]
    with StreamSession(triton_server.grpc_url) as session:
        calls = [session.call(sample_rate=16_000, vad=False) for _ in range(cap)]
        for call in calls:
            call.send(tone(0.2))
        assert wait_for_calls(triton_server, cap, within_s=5) == cap
        extra = session.call(sample_rate=16_000)
        extra.send(tone(0.2))
        error = error_of(extra)
        assert isinstance(error, CallLimitError) and "max_calls=6" in str(error)
        extra.ended = True
        for call in calls:
            call.send(tone(0.4))
            assert [u.end_s for u in call.end().updates] == pytest.approx([0.5, 0.6])
        again = session.call(sample_rate=16_000)
        again.send(tone(0.5))
        again.end()
    assert wait_for_calls(triton_server, 0, within_s=5) == 0


def test_a_call_past_its_longest_duration_ends_with_a_limit_error(triton_server):
    limit = SERVING_STREAM_SETTINGS["max_call_s"]
    with StreamSession(triton_server.grpc_url) as session:
        call = session.call(sample_rate=8_000, vad=False, hop_ms=1000)
        for _ in range(int(limit / 5) + 1):
            call.send(np.zeros(8_000 * 5, dtype=np.int16) + 100)
        error = error_of(call, within_s=30)
        assert isinstance(error, CallLimitError) and "max_call_s" in str(error)
        call.send(np.zeros(800, dtype=np.int16))
        assert isinstance(error_of(call), CallLostError)
        call.ended = True
    assert wait_for_calls(triton_server, 0, within_s=5) == 0


def test_a_call_whose_client_vanished_is_swept_after_the_idle_timeout(triton_server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    client.start_stream(callback=lambda result, error: None)
    pcm = grpcclient.InferInput("pcm", [1, 1600], "FP32")
    pcm.set_data_from_numpy(tone(0.1)[None])
    rate = grpcclient.InferInput("sample_rate", [1, 1], "INT32")
    rate.set_data_from_numpy(np.array([[16000]], np.int32))
    client.async_stream_infer(MODEL, [pcm, rate], sequence_id=777_001, sequence_start=True)
    assert wait_for_calls(triton_server, 1, within_s=5) == 1
    client.stop_stream(cancel_requests=True)  # gone without END
    client.close()
    idle = SERVING_STREAM_SETTINGS["idle_timeout_s"]
    assert wait_for_calls(triton_server, 0, within_s=idle + 3) == 0
    with StreamSession(triton_server.grpc_url) as session:
        call = session.call(sample_rate=16_000, call_id=777_001)
        raw_send(session, call.call_id, {"pcm": tone(0.1)[None]})  # a chunk of the swept call, without START
        assert isinstance(error_of(call), CallLostError)
        call.ended = True


def test_a_session_closed_mid_call_frees_the_call_at_once(triton_server):
    with StreamSession(triton_server.grpc_url) as session:
        call = session.call(sample_rate=16_000)
        call.send(tone(0.3))
        assert wait_for_calls(triton_server, 1, within_s=5) == 1
    assert wait_for_calls(triton_server, 0, within_s=1.5) == 0  # well before the 3 s idle timeout


def test_thousands_of_short_calls_leave_no_state_and_flat_stub_memory(triton_server, stub):
    audio = tone(0.3)

    def round_of_calls(count: int) -> None:
        with StreamSession(triton_server.grpc_url) as session:
            for _ in range(0, count, 5):
                calls = [session.call(sample_rate=16_000) for _ in range(5)]
                for call in calls:
                    call.send(audio, end=True)
                for call in calls:
                    call.end()

    round_of_calls(200)  # warm-up: allocator pools, ONNX Runtime arenas
    assert wait_for_calls(triton_server, 0, within_s=5) == 0
    before = rss_mib(stub)
    round_of_calls(1000)
    assert wait_for_calls(triton_server, 0, within_s=5) == 0
    growth = rss_mib(stub) - before
    assert growth < 20, f"stub RSS grew {growth:.1f} MiB over 1000 calls"


def test_a_restarted_server_ends_open_calls_with_a_reason(serving_repository, session_dir):
    from deploy.local_triton import LocalTriton

    repo = session_dir / "stream-restart"
    repo.mkdir()
    for name in ("ser_fp32", MODEL):
        shutil.copytree(serving_repository / name, repo / name)
    server = LocalTriton(repo, startup_timeout_s=120, log_path=session_dir / "triton-stream-restart.log").start()
    server.keep_ports()
    try:
        session = StreamSession(server.grpc_url).open()
        call = session.call(sample_rate=16_000)
        call.send(tone(0.6))
        next(call.updates(timeout_s=20))
        server.stop()
        error = error_of(call, within_s=20)
        assert isinstance(error, CallLostError) and "the server stopped or restarted" in str(error)
        with pytest.raises(CallLostError):
            call.send(tone(0.1))
        session.close()
        server.start()
        with StreamSession(server.grpc_url) as fresh:
            lost = fresh.call(sample_rate=16_000, call_id=call.call_id)
            raw_send(fresh, lost.call_id, {"pcm": tone(0.1)[None]})  # the old call's next chunk, to the new server
            assert isinstance(error_of(lost), CallLostError)
            lost.ended = True
            assert fresh.call(sample_rate=16_000).send(tone(0.6)) is None
    finally:
        server.stop()


def test_a_result_that_does_not_come_in_time_is_a_typed_time_out_naming_the_call(triton_server):
    from client.errors import RequestTimeoutError, SerError

    with StreamSession(triton_server.grpc_url) as session:
        call = session.call(sample_rate=16_000)
        call.send(tone(1.5))
        with pytest.raises(RequestTimeoutError, match=f"call {call.call_id}: no result within") as caught:
            call.end(timeout_s=1e-9)  # no server answers END within a nanosecond
    assert isinstance(caught.value, SerError) and isinstance(caught.value, TimeoutError)  # `ser stream`: one error line


@pytest.mark.slow
def test_a_killed_server_does_not_leave_the_streaming_stub_behind(serving_repository, session_dir):
    import os
    import re as _re
    import signal

    from deploy.local_triton import LocalTriton

    repo = session_dir / "stream-orphan"
    repo.mkdir()
    for name in ("ser_fp32", MODEL):
        shutil.copytree(serving_repository / name, repo / name)
    config = repo / MODEL / "config.pbtxt"  # a 0.2 s idle timeout: the sweeper wakes every 50 ms
    text = _re.sub(r'(key: "ser\.stream\.idle_timeout_s"\s*value \{\s*string_value: )"[^"]*"', r'\1"0.2"', config.read_text())
    config.write_text(_re.sub(r"max_sequence_idle_microseconds: \d+", "max_sequence_idle_microseconds: 200000", text))
    server = LocalTriton(repo, startup_timeout_s=120, log_path=session_dir / "triton-stream-orphan.log").start()
    try:
        stub_pid = stream_stub(server)
        os.kill(server.pid, signal.SIGKILL)  # what a dead supervisor does to it: no stop(), no clean-up
        os.waitpid(server.pid, 0)  # reaped, as init reaps it: only then do its stubs see it gone
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(stub_pid):
            time.sleep(0.1)
        assert not _alive(stub_pid), f"the streaming stub {stub_pid} outlived its server (blocked in a metric update)"
    finally:
        server.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
