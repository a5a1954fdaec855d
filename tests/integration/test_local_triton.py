"""The local tritonserver launcher, against the real server binary; and the GPU run script, offline.

Each test here starts its own short-lived server (they stop it, kill it, or make
it fail); the shared session server is ``triton_server`` in conftest.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.errors import ConfigError, ServerStartError
from deploy.cleanup import pid_alive
from deploy.local_triton import LocalTriton, free_ports
from deploy.server_log import summarize_failure
from deploy.triton_binary import find_installation
from tests.helpers import REPO_ROOT

RUN_TRITON = REPO_ROOT / "deploy" / "gpu" / "run-triton.sh"


def _leftovers(server: LocalTriton, pids: list[int]) -> tuple[list[int], list[Path]]:
    return [p for p in pids if pid_alive(p)], server.shm_regions()


def test_the_bundled_tritonserver_binary_backend_and_stub_are_found():
    inst = find_installation()
    assert inst.server.name == "tritonserver" and os.access(inst.server, os.X_OK)
    assert inst.stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert inst.python_backend.name == "libtriton_python.so"


def test_the_failure_summary_names_the_model_and_drops_the_traceback():
    log = (
        'I1124 07:57:36.500125 4978 model_lifecycle.cc:472] "loading: ser_broken:1"\n'
        'E1124 07:57:36.864219 4978 model_lifecycle.cc:642] "failed to load \'ser_broken\' version 1: '
        'Internal: RuntimeError: bad onnx\\n\\nAt:\\n  /r/ser_broken/1/model.py(9): initialize\\n"\n'
        "| ser_broken | 1       | UNAVAILABLE: Internal: RuntimeError: bad onnx |\n"
    )
    assert summarize_failure(log) == "model 'ser_broken' failed to load: Internal: RuntimeError: bad onnx"
    assert summarize_failure("") == "no output"


def test_a_directory_that_is_not_a_repository_is_refused_before_launch(tmp_path):
    with pytest.raises(ServerStartError, match="not a Triton model repository"):
        LocalTriton(tmp_path)
    with pytest.raises(ServerStartError, match="not a directory"):
        LocalTriton(tmp_path / "nope")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text("")
    with pytest.raises(ConfigError, match="model_control"):
        LocalTriton(tmp_path, model_control="sometimes")
    with pytest.raises(ConfigError, match="distinct"):
        LocalTriton(tmp_path, http_port=8000, grpc_port=8000)


@pytest.mark.slow
def test_a_port_already_taken_is_a_server_start_error_naming_the_address(portable_repository):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LocalTriton(portable_repository, grpc_port=port)
        with pytest.raises(ServerStartError, match=f"127.0.0.1:{port} already in use"):
            server.start()
    assert server.stub_pids() == [] and server.shm_regions() == []


@pytest.mark.slow
def test_start_and_stop_leave_no_process_or_shm_region_and_stop_twice_is_safe(portable_repository):
    server = LocalTriton(portable_repository)
    t0 = time.perf_counter()
    with server:
        start_s = time.perf_counter() - t0
        assert server.is_running()
        assert set(server.models().values()) == {"READY"}
        pids = [server.pid, *server.stub_pids()]
        assert len(pids) >= 2, "expected the python backend stubs to be running"
        assert server.shm_regions(), "expected python-backend shm regions while serving"
        assert all(r.name.startswith(server.shm_prefix) for r in server.shm_regions())
        assert re.fullmatch(r"127\.0\.0\.1:\d+", server.grpc_url)
        t1 = time.perf_counter()
        rc = server.stop()
        stop_s = time.perf_counter() - t1
    assert rc == 0
    assert _leftovers(server, pids) == ([], [])
    assert server.stop() == 0  # twice, and a third time through __exit__ above: no error
    assert "Started GRPCInferenceService at 127.0.0.1" in server.log_text()
    print(f"\nlocal tritonserver: ready in {start_s:.2f} s, stopped in {stop_s:.2f} s")


@pytest.mark.slow
def test_stop_cleans_up_after_a_server_that_was_killed_hard(portable_repository):
    server = LocalTriton(portable_repository).start()
    try:
        pids = [server.pid, *server.stub_pids()]
        os.kill(server.pid, signal.SIGKILL)  # the stubs are orphaned, their shm regions stay
    finally:
        rc = server.stop()
    assert rc == -signal.SIGKILL
    assert _leftovers(server, pids) == ([], [])


@pytest.mark.slow
def test_a_model_that_fails_to_load_is_a_server_start_error_naming_it(portable_repository, tmp_path):
    name = "ser_fp32" if (Path(portable_repository) / "ser_fp32").is_dir() else sorted(Path(portable_repository).iterdir())[0].name
    repo = tmp_path / "repo"
    shutil.copytree(Path(portable_repository) / name, repo / "ser_broken")
    config = repo / "ser_broken" / "config.pbtxt"
    config.write_text(config.read_text().replace(f'"{name}"', '"ser_broken"'))
    (repo / "ser_broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    server = LocalTriton(repo, startup_timeout_s=60)
    t0 = time.perf_counter()
    with pytest.raises(ServerStartError) as info:
        server.start()
    message = str(info.value)
    assert "ser_broken" in message and "failed to load" in message and "\n" not in message
    assert time.perf_counter() - t0 < 30, "a failing model must fail fast, not wait for the timeout"
    assert server.shm_regions() == [] and server.stub_pids() == [] and not server.is_running()


@pytest.mark.slow
def test_serve_forever_serves_until_sigterm_then_stops_cleanly(portable_repository, tmp_path):
    code = (
        "import sys; from deploy.supervisor import serve_forever; "
        f"sys.exit(serve_forever({str(portable_repository)!r}, http_port=None, grpc_port=None, metrics_port=None))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        line = proc.stderr.readline()
        while line.startswith("removed the /dev/shm regions"):  # of servers whose owner was killed before
            line = proc.stderr.readline()
        assert "tritonserver ready" in line and "READY" in line, line
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "tritonserver stopped (rc=0)" in rest
    assert not list(Path("/dev/shm").glob(f"ser_{proc.pid}_*")), "shm regions left behind"


# --- deploy/gpu/run-triton.sh (no Docker here: checked offline) -----------------------


def test_the_gpu_run_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(RUN_TRITON)], check=True)
    assert os.access(RUN_TRITON, os.X_OK)


def _script_default(name: str) -> str:
    m = re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"', RUN_TRITON.read_text(), re.M)
    assert m, f"{name} default not found in {RUN_TRITON}"
    return m.group(1)


def test_the_gpu_run_script_agrees_with_the_client_cli_and_repository_defaults():
    from client.triton_client import DEFAULT_GRPC_URL, DEFAULT_HTTP_URL
    from ser.cli import build_parser

    text = RUN_TRITON.read_text()
    tag = re.search(r"^TRITON_TAG=(\S+)$", (REPO_ROOT / "deploy" / "triton.env").read_text(), re.M).group(1)
    assert tag == "26.07"  # tritonserver 2.71.0, with upstream's HTTP input-size fixes; named once, in deploy/triton.env
    assert 'source "${TRITON_ENV}"' in text
    assert 'DEFAULT_REPOSITORY="model_repository/native"' in text
    assert "native/" in (REPO_ROOT / "model_repository" / "README.md").read_text()
    ports = {k: _script_default(f"{k.upper()}_PORT") for k in ("http", "grpc", "metrics")}
    assert DEFAULT_GRPC_URL.endswith(":" + ports["grpc"]) and DEFAULT_HTTP_URL.endswith(":" + ports["http"])
    serve = build_parser().parse_args(["serve"])
    assert (str(serve.http_port), str(serve.grpc_port), str(serve.metrics_port)) == (
        ports["http"], ports["grpc"], ports["metrics"]
    )
    predict = build_parser().parse_args(["predict", "x.wav"])
    assert predict.url is None  # SerClient(url=None) picks DEFAULT_GRPC_URL or DEFAULT_HTTP_URL by protocol


@pytest.mark.slow
def test_the_gpu_run_script_mounts_the_native_repository_read_only_and_serves_the_writers_models(native_repository):
    native = Path(native_repository)
    written = sorted(p.name for p in native.iterdir() if (p / "config.pbtxt").is_file())
    assert written, "the writer wrote no models"
    env = {**os.environ, "REPOSITORY": str(native)}
    out = subprocess.run([str(RUN_TRITON), "print"], env=env, capture_output=True, text=True, check=True).stdout
    command, models, ports = out.splitlines()[:3]
    assert f"-v {native}:/models:ro" in command and "--model-repository=/models" in command
    assert "--gpus all" in command and "--shm-size 1g" in command
    assert "nvcr.io/nvidia/tritonserver:26.07-py3" in command
    for host, inside in (("8000", "8000"), ("8001", "8001"), ("8002", "8002")):
        assert f":{host}:{inside}" in command
    assert models.split(":", 1)[1].split() == written
    assert "ser_int8" in written  # the client's and CLI's default model
    assert ports == "ports: http=8000 grpc=8001 metrics=8002"
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from client.contract import INPUT_NAMES, OUTPUT_NAMES, ModelContract
    from export.repository import model_name

    assert written == sorted(model_name(v) for v in ("fp32", "int8"))
    for name in written:  # what a client of the GPU node will read from the container
        config = text_format.Parse((native / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime"
        contract = ModelContract.from_parameters({k: v.string_value for k, v in config.parameters.items()}, model=name)
        assert contract.window_samples == 16_000 and config.max_batch_size > 0
        assert tuple(t.name for t in config.input) == INPUT_NAMES and tuple(t.name for t in config.output) == OUTPUT_NAMES


def test_the_gpu_run_script_refuses_a_missing_repository(tmp_path):
    env = {**os.environ, "REPOSITORY": str(tmp_path / "nope")}
    proc = subprocess.run([str(RUN_TRITON), "print"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "no such repository" in proc.stderr


# --- stopping, dying, taken ports and proxies: `ser serve` as a real subprocess ------------

_SLOW_CONFIG = """name: "slow"
backend: "python"
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""
_SLOW_MODEL = '''import time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        time.sleep({load_s})  # a model that takes this long to load

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
                for r in requests]
'''


def _slow_repository(root: Path, *, load_s: float) -> Path:
    """A repository of one python-backend model ``slow`` (``x`` -> ``y``) that takes ``load_s`` seconds to load."""
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "config.pbtxt").write_text(_SLOW_CONFIG)
    (root / "slow" / "1" / "model.py").write_text(_SLOW_MODEL.format(load_s=load_s))
    return root


def _serve(repo: Path, err: Path, *, ports=None, env=None, extra=()) -> subprocess.Popen:
    http_port, grpc_port, metrics_port = ports or free_ports(3)
    with open(err, "w") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "ser", "serve", "--repository", str(repo), "--http-port", str(http_port),
             "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), *extra],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=handle, env=env or {**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _wait_until(check, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


def _serve_ready(repo: Path, err: Path, **options) -> subprocess.Popen:
    """:func:`_serve`, returned once it says ready (or has exited)."""
    proc = _serve(repo, err, **options)
    try:
        _wait_until(lambda: "tritonserver ready" in err.read_text() or proc.poll() is not None, timeout_s=60,
                    what=f"ser serve ready ({err})")
    except BaseException:
        proc.kill()
        raise
    return proc


def _family(owner: int) -> list[int]:
    """Live tritonserver children of ``owner`` and the backend stubs of the servers it launched."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(int(entry.name)):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if (b"tritonserver" in cmdline.split(b"\0")[0] and ppid == owner) or f"ser_{owner}_".encode() in cmdline:
            found.append(int(entry.name))
    return found


def _reap(pids: list[int], owner: int) -> None:
    """What a failing test leaves (the code under test is meant to leave nothing): killed and removed."""
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    for region in Path("/dev/shm").glob(f"ser_{owner}_*"):
        region.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_while_a_model_loads_exits_within_5_s_and_leaves_nothing(tmp_path, sig):
    repo = _slow_repository(tmp_path / "repo", load_s=30)
    proc = _serve(repo, tmp_path / "serve.err")
    pids: list[int] = []
    try:
        _wait_until(lambda: len(_family(proc.pid)) >= 2, timeout_s=60, what="the server and the loading model's stub")
        pids = _family(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=40)
        exit_s = time.monotonic() - t0
    finally:
        proc.kill()
        left = [p for p in pids if pid_alive(p)]
        _reap(pids, proc.pid)
    err = (tmp_path / "serve.err").read_text()
    print(f"\n{sig.name} while the model loads: ser serve exited in {exit_s:.2f} s")
    assert rc == 0 and exit_s < 5, (rc, exit_s, err)
    assert left == [] and not list(Path("/dev/shm").glob(f"ser_{proc.pid}_*")), (left, err)
    assert "tritonserver ready" not in err and "tritonserver stopped" in err, err


@pytest.mark.slow
def test_a_sigkilled_ser_serve_leaves_no_tritonserver_or_stub_behind(tmp_path):
    repo = _slow_repository(tmp_path / "repo", load_s=0)
    err = tmp_path / "serve.err"
    proc = _serve_ready(repo, err)
    pids: list[int] = []
    try:
        pids = _family(proc.pid)
        assert len(pids) >= 2, err.read_text()
        proc.kill()  # as the OOM killer, or a closed terminal's SIGHUP where it is not handled
        proc.wait(timeout=10)
        t0 = time.monotonic()
        _wait_until(lambda: not any(pid_alive(p) for p in pids), timeout_s=15, what=f"server and stubs {pids} gone")
        print(f"\nser serve SIGKILLed: its tritonserver and stubs gone after {time.monotonic() - t0:.1f} s")
        assert not list(Path("/dev/shm").glob(f"ser_{proc.pid}_*"))  # the stubs unlink them as they exit
    finally:
        _reap(pids, proc.pid)


@pytest.mark.slow
def test_ser_serve_removes_the_regions_of_a_server_killed_with_its_stubs_and_owner(tmp_path):
    repo = _slow_repository(tmp_path / "repo", load_s=0)
    err = tmp_path / "serve.err"
    proc = _serve_ready(repo, err)
    pids: list[int] = []
    try:
        pids = _family(proc.pid)
        for pid in [proc.pid, *pids]:  # all at once, as a cgroup's OOM kill or `systemctl kill -s KILL` does
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        _wait_until(lambda: not any(pid_alive(p) for p in pids), timeout_s=15, what="all killed")
        regions = sorted(Path("/dev/shm").glob(f"ser_{proc.pid}_*"))
        assert regions  # nobody was left to unlink them
        again = _serve_ready(repo, tmp_path / "again.err")
        try:
            assert "tritonserver ready" in (tmp_path / "again.err").read_text()
        finally:
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=30) == 0
        assert not any(r.exists() for r in regions)
        assert f"ser_{proc.pid}_" in (tmp_path / "again.err").read_text().splitlines()[0]
    finally:
        _reap(pids, proc.pid)


@pytest.mark.slow
def test_a_second_ser_serve_on_taken_ports_fails_naming_the_port_and_never_says_ready(tmp_path):
    from tests.helpers import assert_one_line_error, ser

    repo = _slow_repository(tmp_path / "repo", load_s=0)
    with LocalTriton(repo) as first:
        t0 = time.monotonic()
        proc = ser("serve", "--repository", str(repo), "--http-port", str(first.http_port),
                   "--grpc-port", str(first.grpc_port), "--metrics-port", str(first.metrics_port), timeout=60)
        assert time.monotonic() - t0 < 30
        assert_one_line_error(proc, f"127.0.0.1:{first.http_port} already in use (the HTTP port)")
        assert "tritonserver ready" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert first.is_running() and first.models() == {"slow": "READY"}


@pytest.mark.slow
def test_readiness_comes_from_our_own_process_not_another_server_on_the_port(tmp_path, monkeypatch):
    import deploy.local_triton as local_triton

    repo = _slow_repository(tmp_path / "repo", load_s=0)
    with LocalTriton(repo) as first:
        # Past the check before launch (a port taken in between): the other server's 200 must not count.
        monkeypatch.setattr(local_triton, "port_taken", lambda port, host="127.0.0.1": False, raising=False)
        second = LocalTriton(repo, http_port=first.http_port, grpc_port=first.grpc_port, metrics_port=first.metrics_port)
        with pytest.raises(ServerStartError, match="already in use"):
            second.start()
        assert second.startup_s is None and not second.is_running() and first.is_running()


@pytest.mark.slow
@pytest.mark.parametrize("http", [True, False], ids=["http", "grpc-only"])
def test_a_proxy_in_the_environment_does_not_catch_the_loopback_probes(tmp_path, http):
    closed = free_ports(1)[0]  # a proxy that refuses every connection
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update({name: f"http://127.0.0.1:{closed}" for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "grpc_proxy")})
    env["PYTHONUNBUFFERED"] = "1"
    repo = _slow_repository(tmp_path / "repo", load_s=0)
    ports = free_ports(3)
    err = tmp_path / "serve.err"
    proc = _serve_ready(repo, err, ports=ports, env=env, extra=() if http else ("--no-http",))
    try:
        assert "slow (READY)" in err.read_text(), err.read_text()
        scrape = subprocess.run(
            [sys.executable, "-c", f"from loadtest.metrics import scrape; print(len(scrape('127.0.0.1:{ports[2]}')))"],
            cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=60,
        )
        assert scrape.returncode == 0 and int(scrape.stdout) > 0, scrape.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_stop_signal_while_a_crashed_models_reload_runs_is_not_held_up_by_the_reload(tmp_path):
    repo = _slow_repository(tmp_path / "repo", load_s=0)
    model_py = repo / "slow" / "1" / "model.py"  # from now on the model takes 30 s to load
    err = tmp_path / "serve.err"
    proc = _serve_ready(repo, err)
    pids: list[int] = []
    try:
        model_py.write_text(_SLOW_MODEL.format(load_s=30))
        pids = _family(proc.pid)
        stub = next(p for p in pids if b"slow_0_0" in Path(f"/proc/{p}/cmdline").read_bytes())
        os.kill(stub, signal.SIGKILL)
        _wait_until(lambda: "reloading it" in err.read_text(), timeout_s=10, what="the stub's death noticed")
        time.sleep(1)  # the reload is under way
        pids = _family(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        exit_s = time.monotonic() - t0
    finally:
        proc.kill()
        left = [p for p in pids if pid_alive(p)]
        _reap(pids, proc.pid)
    print(f"\nSIGTERM during a 30 s model reload: ser serve exited in {exit_s:.2f} s")
    assert rc == 0 and exit_s < 5 and left == [], (rc, exit_s, left, err.read_text())
    assert "the reload of model 'slow' is still running" in err.read_text()
