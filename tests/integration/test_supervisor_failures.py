"""One request that kills tritonserver 2.51, and how the bundle survives it.

The bundled 2.51 aborts on an HTTP JSON body that declares a huge shape (it allocates the
declared size before it reads the data). Here ``ser serve`` (a real subprocess, the
supervisor restarting the real server) receives that request; the service must answer
again within :data:`RECOVERY_S` with nothing leaked, and a batch job running through it
must finish every file exactly once without ``--resume``. Also: ``--no-http`` closes that
path, a crash loop ends after ``max_restarts``, and the client fails fast on what a retry
cannot fix (a refused restricted API).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from client.errors import AccessDeniedError, ConfigError, ServerError, ServerUnavailableError
from client.triton_client import RetryPolicy, SerClient
from deploy.cleanup import pid_alive
from deploy.local_triton import LocalTriton, free_ports
from deploy.triton_binary import STUB_NAME
from tests.helpers import REPO_ROOT

#: The service answers a good request again within this many seconds of the killing request.
RECOVERY_S = 30.0
#: What the client of a batch job rides out (``ser predict --retry-for``).
JOB_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.1, max_backoff_s=1.0, retry_for_s=RECOVERY_S)
ADMIN_KEY = "test-admin-key"
W = 16_000


def killing_body() -> bytes:
    """An HTTP JSON inference body declaring ``[1000000, 32000]`` (128 GB of FP32) and carrying 10 values."""
    return json.dumps({"inputs": [
        {"name": "waveform", "shape": [1_000_000, 32_000], "datatype": "FP32", "data": [0.0] * 10},
        {"name": "num_samples", "shape": [1_000_000, 1], "datatype": "INT64", "data": [1] * 10},
    ]}).encode()


def send_killing_request(http_port: int, model: str = "ser_fp32") -> str:
    """POST :func:`killing_body`; returns what came back (2.51 dies: no response)."""
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
    try:
        conn.request("POST", f"/v2/models/{model}/infer", body=killing_body(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return f"HTTP {resp.status}: {resp.read()[:200]!r}"
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def _stubs(owner_pid: int) -> list[int]:
    """Live python-backend stubs of the servers that process ``owner_pid`` launched (their shm prefix names it)."""
    tag = f"ser_{owner_pid}_".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if STUB_NAME.encode() in cmdline and tag in cmdline and pid_alive(int(entry.name)):
                out.append(int(entry.name))
    return sorted(out)


def _regions(owner_pid: int) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"ser_{owner_pid}_*"))


class Served:
    """A ``ser serve`` subprocess on fixed loopback ports (free ones unless given), its stderr lines collected."""

    def __init__(self, repository: Path, log: Path, *, ports: tuple[int, int, int] | None = None,
                 env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> None:
        self.http_port, self.grpc_port, self.metrics_port = ports or free_ports(3)
        key_file = log.with_name("admin-key")
        key_file.write_text(ADMIN_KEY + "\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ser", "serve", "--repository", str(repository), "--http-port", str(self.http_port),
             "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), "--log", str(log),
             "--admin-key-file", str(key_file), *extra],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_for(self, text: str, *, timeout_s: float, after: int = 0) -> str:
        """The first stderr line from index ``after`` on that contains ``text``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.lines[after:]:
                if text in line:
                    return line
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from ser serve (rc={self.proc.poll()}):\n" + "\n".join(self.lines))
            try:
                self._new.get(timeout=0.2)
            except queue.Empty:
                pass


@pytest.fixture(scope="module")
def served(portable_repository, tmp_path_factory):
    s = Served(portable_repository, tmp_path_factory.mktemp("served") / "tritonserver.log")
    try:
        s.wait_for("tritonserver ready", timeout_s=120)
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
        try:
            rc = s.proc.wait(timeout=60)
        finally:
            if s.proc.poll() is None:
                s.proc.kill()
    assert rc == 0, "\n".join(s.lines)
    assert "tritonserver stopped (rc=0)" in s.lines[-1]
    assert _stubs(s.proc.pid) == [] and _regions(s.proc.pid) == [], "stubs or shm regions left behind"


def _good(client: SerClient) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = (0.2 * rng.standard_normal((2, W))).astype(np.float32)
    return client.infer_windows(x, np.array([W, W // 2]))[1]


def test_the_request_that_aborts_tritonserver_is_survived_within_30_s_with_nothing_leaked(served):
    with SerClient(served.grpc_url, model="ser_fp32", retry=RetryPolicy.none()) as client:
        before = _good(client)
    stubs, regions = _stubs(served.proc.pid), _regions(served.proc.pid)
    assert stubs and regions
    mark = len(served.lines)

    t0 = time.monotonic()
    answer = send_killing_request(served.http_port)
    assert not answer.startswith("HTTP"), f"the bundled tritonserver answered the killing request: {answer}"
    died = served.wait_for("tritonserver died", timeout_s=RECOVERY_S, after=mark)
    assert "rc=-6" in died and "aborted by signal 6 (uncaught std::bad_alloc)" in died and "restart 1 of 5" in died, died
    with SerClient(served.grpc_url, model="ser_fp32", retry=JOB_RETRY) as client:
        after = _good(client)
    recovered_s = time.monotonic() - t0
    restarted = served.wait_for("tritonserver restarted", timeout_s=5, after=mark)
    print(f"\nkilling request -> answering again after {recovered_s:.1f} s ({restarted.split(': ', 1)[-1]})")
    assert recovered_s < RECOVERY_S
    np.testing.assert_array_equal(after, before)
    assert not any(pid_alive(p) for p in stubs), "the dead server's stubs were not killed"
    assert len(_stubs(served.proc.pid)) == len(stubs) and len(_regions(served.proc.pid)) == len(regions)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """30 short clips in two folders, plus a 0-byte file."""
    root = tmp_path_factory.mktemp("job-clips")
    rng = np.random.default_rng(7)
    for i in range(30):
        sub = root / f"speaker_{i % 2}"
        sub.mkdir(exist_ok=True)
        t = np.arange(8_000) / 16_000
        y = 0.3 * np.sin(2 * np.pi * (110 + 9 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(sub / f"clip_{i:02d}.wav", y.astype(np.float32), 16_000, subtype="PCM_16")
    (root / "speaker_0" / "empty.wav").write_bytes(b"")
    return root


def test_a_batch_job_rides_out_the_crash_and_restart_and_writes_every_file_exactly_once(served, clip_dir, tmp_path):
    from client.batch import find_audio, predict_files

    files = find_audio([clip_dir])
    out = tmp_path / "predictions.jsonl"
    mark = len(served.lines)
    killed: list[str] = []

    def kill_after_five_rows(row: dict) -> None:
        if len(killed) == 0 and sum(1 for _ in open(out)) >= 5:
            killed.append(send_killing_request(served.http_port))

    t0 = time.monotonic()
    with SerClient(served.grpc_url, model="ser_fp32", retry=JOB_RETRY) as client:
        summary = predict_files(client, files, output=out, concurrency=4, on_row=kill_after_five_rows)
    elapsed = time.monotonic() - t0
    assert killed and not killed[0].startswith("HTTP"), killed
    served.wait_for("tritonserver restarted", timeout_s=5, after=mark)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["file"] for r in rows) == sorted(str(f) for f in files)  # every file, exactly once, one run
    assert summary.ok == len(files) - 1 and summary.failed == 1
    assert [r["error_type"] for r in rows if not r["ok"]] == ["AudioDecodeError"]
    print(f"\n{len(files)} files through a crash and restart in {elapsed:.1f} s")


def test_a_refused_restricted_api_fails_at_once_as_access_denied_not_unavailable(served):
    attempts: list[tuple[str, int]] = []
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.2, retry_for_s=10)
    client = SerClient(served.grpc_url, model="ser_fp32", retry=policy, on_attempt=lambda what, n: attempts.append((what, n)))
    t0 = time.monotonic()
    with pytest.raises(AccessDeniedError, match="restricted") as info:
        client.repository_index()
    assert attempts == [("repository index", 1)] and time.monotonic() - t0 < 5
    assert served.grpc_url in str(info.value) and "\n" not in str(info.value)


def test_without_http_the_server_serves_grpc_and_the_killing_request_finds_no_listener(portable_repository):
    with LocalTriton(portable_repository, http=False) as server:
        assert "--allow-http=false" in server.command()
        assert set(server.models().values()) == {"READY"}
        with SerClient(server.grpc_url, model="ser_fp32", retry=RetryPolicy.none()) as client:
            assert np.isfinite(_good(client)).all()
        answer = send_killing_request(server.http_port)
        assert answer.startswith("ConnectionRefusedError"), answer
        assert server.is_running()


def test_a_server_that_keeps_dying_is_restarted_max_restarts_times_then_the_error_names_why(runtime, runtime_repository):
    from deploy.supervisor import RestartPolicy, Supervisor

    server = LocalTriton(runtime_repository)  # on both runtimes: the native one has no stubs, only the server
    lines: list[str] = []
    supervisor = Supervisor(server, policy=RestartPolicy(max_restarts=1, initial_backoff_s=0.1, max_backoff_s=0.1), log=lines.append)
    stop = threading.Event()
    outcome: list[BaseException | int] = []
    ready = threading.Event()

    def run() -> None:
        try:
            outcome.append(supervisor.run(stop, on_ready=lambda s: ready.set()))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(120)
        ports = (server.http_port, server.grpc_port)
        pids = [server.pid, *server.stub_pids()]
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not (supervisor.restarts and supervisor.restarts[0].down_s is not None and server.is_running()):
            assert time.monotonic() < deadline and thread.is_alive(), lines
            time.sleep(0.1)
        assert (server.http_port, server.grpc_port) == ports  # restarted where clients look
        pids += [server.pid, *server.stub_pids()]
        os.kill(server.pid, signal.SIGKILL)
        thread.join(60)
    finally:
        stop.set()
        thread.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], ServerError), (outcome, lines)
    assert "rc=-9" in str(outcome[0]) and "1 restart(s) in a row" in str(outcome[0])
    assert [r.returncode for r in supervisor.restarts] == [-9, -9] and supervisor.restarts[1].down_s is None
    assert "restart 1 of 1" in lines[0] and "restarted" in lines[1]
    assert "killed by SIGKILL" in lines[0], lines  # not a stale line of its log
    assert not any(pid_alive(p) for p in pids) and server.shm_regions() == []


def test_restart_policy_and_launcher_options_check_themselves(portable_repository, tmp_path):
    from deploy.flags import GrpcTls
    from deploy.supervisor import RestartPolicy

    policy = RestartPolicy(initial_backoff_s=1, max_backoff_s=5)
    assert [policy.backoff_s(r) for r in (1, 2, 3, 4)] == [1, 2, 4, 5]
    for bad in (dict(max_restarts=-1), dict(max_restarts=1.5), dict(initial_backoff_s=3, max_backoff_s=2), dict(window_s=0)):
        with pytest.raises(ConfigError):
            RestartPolicy(**bad)
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("PEM")
    with pytest.raises(ConfigError, match="http=False with grpc_tls"):
        LocalTriton(portable_repository, http=False, grpc_tls=GrpcTls(cert=tmp_path / "tls.crt", key=tmp_path / "tls.key"))


def test_the_retry_budget_waits_for_a_server_that_is_away_and_a_dead_address_fails_when_it_is_spent():
    port = free_ports(1)[0]
    policy = RetryPolicy(max_attempts=1, initial_backoff_s=0.1, max_backoff_s=0.2, retry_for_s=1.5)
    attempts: list[int] = []
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=str(port)):
        SerClient(f"127.0.0.1:{port}", retry=policy, timeout_s=2, on_attempt=lambda what, n: attempts.append(n)).open()
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 6 and len(attempts) >= 5, (elapsed, attempts)
    assert RetryPolicy(max_attempts=2, retry_for_s=1.0, jitter=0).delay_s(2, 0.9) == pytest.approx(0.1)
    assert RetryPolicy(max_attempts=2, retry_for_s=1.0).delay_s(2, 1.0) is None
    with pytest.raises(ConfigError, match="retry_for_s"):
        RetryPolicy(retry_for_s=-1)


#: A model whose backend stub was killed answers again within this many seconds of the kill.
STUB_RECOVERY_S = 15.0


def test_a_killed_backend_stub_is_noticed_and_its_model_reloaded_so_requests_succeed_again(served):
    with SerClient(served.grpc_url, model="ser_int8", retry=RetryPolicy.none()) as client:
        before = _good(client)
    victim = next(p for p in _stubs(served.proc.pid) if b"ser_int8_0" in Path(f"/proc/{p}/cmdline").read_bytes())
    fp32_stubs = [p for p in _stubs(served.proc.pid) if b"ser_fp32" in Path(f"/proc/{p}/cmdline").read_bytes()]
    mark = len(served.lines)

    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)  # as the kernel's OOM killer would
    died = served.wait_for("backend stub of model 'ser_int8' died", timeout_s=STUB_RECOVERY_S, after=mark)
    assert f"pid {victim}" in died, died
    served.wait_for("model 'ser_int8' reloaded", timeout_s=STUB_RECOVERY_S, after=mark)
    with SerClient(served.grpc_url, model="ser_int8", retry=RetryPolicy.none()) as client:
        after = _good(client)
    recovered_s = time.monotonic() - t0
    print(f"\nstub SIGKILLed -> ser_int8 answering again after {recovered_s:.1f} s")
    assert recovered_s < STUB_RECOVERY_S
    np.testing.assert_array_equal(after, before)
    assert not any("tritonserver died" in line for line in served.lines[mark:])  # a model reload, not a restart
    assert fp32_stubs and all(pid_alive(p) for p in fp32_stubs)  # the other model was not touched
    assert any(b"ser_int8_0_0" in Path(f"/proc/{p}/cmdline").read_bytes() for p in _stubs(served.proc.pid))  # a new stub


def test_a_server_that_hangs_alive_is_killed_and_restarted(portable_repository):
    from deploy.supervisor import Supervisor

    server = LocalTriton(portable_repository)
    lines: list[str] = []
    supervisor = Supervisor(server, log=lines.append, live_every_s=1.0, live_misses=3)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), kwargs={"on_ready": lambda s: ready.set()}, daemon=True)
    thread.start()
    try:
        assert ready.wait(120)
        hung = [server.pid, *server.stub_pids()]
        t0 = time.monotonic()
        os.kill(server.pid, signal.SIGSTOP)  # alive, answering nothing: a deadlock looks the same from outside
        deadline = time.monotonic() + 60
        while not (supervisor.restarts and supervisor.restarts[0].down_s is not None):
            assert time.monotonic() < deadline and thread.is_alive(), lines
            time.sleep(0.1)
        with SerClient(server.grpc_url, model="ser_fp32", retry=RetryPolicy.none()) as client:
            assert np.isfinite(_good(client)).all()
        print(f"\nSIGSTOPped server -> serving again after {time.monotonic() - t0:.1f} s: {lines}")
    finally:
        stop.set()
        thread.join(60)
    assert "not answering liveness 3 times in a row" in lines[0] and "restart 1 of 5" in lines[0], lines
    assert supervisor.restarts[0].returncode == -signal.SIGKILL
    assert not any(pid_alive(p) for p in hung) and server.shm_regions() == []
