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
from deploy.local_triton import LocalTriton
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
