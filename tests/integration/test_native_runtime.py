"""The native repository on Triton's own ONNX Runtime backend, as the NGC container serves it.

The backend is built by ``make venv`` from the release that matches the bundled 2.51 server. The
client, hostile-request and server-side-audio tests run on both runtimes (``runtime_server``); this
file holds what is the native runtime's own: it starts with Triton's default flags on a CPU-only
node, the server keeps every config field the writer set, and its ONNX Runtime threads come from the
node.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from client.triton_client import SerClient
from deploy.local_triton import LocalTriton, free_ports
from deploy.native_backend.locate import find_onnxruntime_backend
from deploy.node import usable_cpus
from deploy.triton_binary import find_installation, make_backend_directory, server_env

MODELS = ("ser_fp32", "ser_int8")


def _http_status(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as r:
            return r.status
    except OSError:
        return 0


def test_the_native_repository_starts_with_tritons_default_flags_on_a_cpu_only_node(native_repository):
    """No model list, no model-control mode, no thread flags: what `tritonserver --model-repository=/models` does."""
    inst = find_installation()
    http, grpc, metrics = free_ports(3)
    with tempfile.TemporaryDirectory(prefix="ser-default-flags-") as tmp:
        backends = make_backend_directory(inst, Path(tmp), onnxruntime=find_onnxruntime_backend())
        log = Path(tmp) / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(inst.server), f"--model-repository={native_repository}", f"--backend-directory={backends}",
                 "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}"],
                stdout=out, stderr=subprocess.STDOUT, env=server_env(), cwd=tmp, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while _http_status(f"http://127.0.0.1:{http}/v2/health/ready") != 200:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            for model in MODELS:
                assert _http_status(f"http://127.0.0.1:{http}/v2/models/{model}/ready") == 200
                with SerClient(f"127.0.0.1:{grpc}", model=model) as client:
                    _, probs = client.infer_windows(np.zeros((1, client.contract.window_samples), np.float32) + 0.01,
                                                    np.array([client.contract.window_samples]))
                assert abs(float(probs.sum()) - 1) < 1e-4
            text = log.read_text()
            # KIND_AUTO resolved to CPU instances on this node; no GPU was asked for.
            assert "ser_fp32_0 (CPU device 0)" in text or "ser_fp32_0_0 (CPU device 0)" in text, text[-3000:]
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0


def test_the_server_keeps_every_config_field_the_writer_set_and_warns_about_none(native_triton_server, native_serving_repository):
    """A field the backend ignores or refuses would be missing here, differ, or be warned about in the log."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(native_triton_server.grpc_url)
    try:
        for model in MODELS:
            written = text_format.Parse((native_serving_repository / model / "config.pbtxt").read_text(), mc.ModelConfig())
            served = client.get_model_config(model).config
            want = json_format.MessageToDict(written, preserving_proto_field_name=True)
            got = json_format.MessageToDict(served, preserving_proto_field_name=True)
            for key in ("platform", "backend", "max_batch_size", "input", "output", "dynamic_batching", "parameters",
                        "model_warmup", "version_policy", "optimization"):
                if key in want:
                    assert _subset(want[key], got.get(key)), f"{model}.{key}: wrote {want[key]}, served {got.get(key)}"
            # The instance kind: CPU as written, or KIND_AUTO resolved to CPU on this GPU-less node.
            assert [g["kind"] for g in got["instance_group"]] == ["KIND_CPU"]
    finally:
        client.close()
    for line in native_triton_server.log_text().splitlines():
        if line[:1] in ("W", "E") and any(m in line for m in MODELS):
            pytest.fail(f"the server warned about a model's config: {line}")


def _subset(want, got) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_subset(v, got.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(_subset(a, b) for a, b in zip(want, got, strict=True))
    return want == got


def test_every_native_model_shares_one_onnxruntime_pool_as_wide_as_the_node(native_triton_server):
    text = native_triton_server.log_text()
    assert '"enable-global-threadpool":"1"' in text
    assert f'"intra_op_thread_count":"{usable_cpus()}"' in text
    assert native_triton_server.onnxruntime_threads == usable_cpus()


def test_an_explicit_thread_count_reaches_the_backend(native_repository, tmp_path):
    with LocalTriton(native_repository, onnxruntime_threads=1, log_path=tmp_path / "log") as server:
        assert server.models() == {m: "READY" for m in MODELS}
    assert '"intra_op_thread_count":"1"' in (tmp_path / "log").read_text()


def test_a_native_server_stops_with_nothing_left(native_repository):
    server = LocalTriton(native_repository)
    with server:
        pid = server.pid
    assert server.returncode == 0
    assert not Path(f"/proc/{pid}").exists() and server.shm_regions() == []


@pytest.mark.slow
def test_the_runtime_comparison_serves_both_runtimes_alternately_and_tables_them(portable_repository, native_repository, tmp_path):
    from loadtest.runtime_compare import compare, markdown

    lines: list[str] = []
    cells = compare({"portable": portable_repository, "native": native_repository}, model="ser_int8", users=(2,),
                    run_time_s=2, rounds=2, out_dir=tmp_path, log=lines.append)
    assert [line.split()[2] for line in lines] == ["portable", "native", "native", "portable"]  # alternating rounds
    assert {(c.runtime, c.users) for c in cells} == {("portable", 2), ("native", 2)}
    assert all(c.failures == 0 and c.windows_per_s > 0 and 0 < c.p50_ms <= c.p99_ms for c in cells)
    table = markdown(cells)
    by = {c.runtime: c for c in cells}
    assert f"| 2 | {by['portable'].windows_per_s:.1f} |" in table
    assert f"{by['native'].windows_per_s / by['portable'].windows_per_s:.2f}×" in table and "failed requests: 0" in table
