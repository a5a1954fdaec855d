"""The client against the real local tritonserver serving the portable repository of the tiny model.

No mocks: ``runtime_server`` (conftest, serving section) is the bundled
tritonserver binary running the repository writer's python-backend models, and
every served result is compared with ONNX Runtime in this process.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from client.audio import aggregate, load_audio, make_windows
from client.contract import ModelContract
from client.triton_client import ClassifyResult, SerClient
from tests.helpers import RAVDESS8, REPO_ROOT, server_url, settled

PROTOCOLS = ("grpc", "http")
TOL = 1e-5
#: The tiny checkpoint's labels (conftest ``tiny_checkpoint``), in logit order.


def _ort_session(repository: Path, model: str):
    import onnxruntime as ort

    return ort.InferenceSession(str(Path(repository) / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def _ort_run(session, waveforms: np.ndarray, num_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, probs = session.run(
        ["logits", "probabilities"],
        {"waveform": waveforms.astype(np.float32), "num_samples": np.asarray(num_samples, np.int64).reshape(-1, 1)},
    )
    return logits, probs


def _windows(seed: int, k: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` random speech-level windows ``[k, W]`` float32 with varied valid lengths ``[k]`` int64."""
    rng = np.random.default_rng(seed)
    x = (0.2 * rng.standard_normal((k, width))).astype(np.float32)
    n = rng.integers(width // 4, width + 1, size=k).astype(np.int64)
    n[0] = width
    for i, valid in enumerate(n):
        x[i, valid:] = 0.0
    return x, n


def test_importing_the_client_leaves_torch_and_transformers_out():
    code = (
        "import sys, client.triton_client, tritonclient.grpc, tritonclient.http; "
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_client_configures_itself_from_the_served_contract(runtime_server, runtime_models, protocol):
    for model in runtime_models:
        with SerClient(server_url(runtime_server, protocol), model=model, protocol=protocol) as client:
            assert isinstance(client.contract, ModelContract)
            assert client.contract.labels == RAVDESS8
            labels_txt = (runtime_server.repository / model / "labels.txt").read_text().splitlines()
            assert tuple(labels_txt) == client.contract.labels
            assert client.contract.window_samples == 16_000 and client.contract.hop_samples == 8_000
            assert client.audio.sample_rate == client.contract.sample_rate == 16_000
            assert client.max_batch_size >= 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_served_windows_equal_in_process_onnxruntime(runtime_server, runtime_models, protocol):
    for model in runtime_models:
        session = _ort_session(runtime_server.repository, model)
        with SerClient(server_url(runtime_server, protocol), model=model, protocol=protocol) as client:
            k = min(5, client.max_batch_size)
            x, n = _windows(7, k, client.contract.window_samples)
            logits, probs = client.infer_windows(x, n)
            ref_logits, ref_probs = _ort_run(session, x, n)
        assert logits.shape == probs.shape == (k, len(RAVDESS8)) and probs.dtype == np.float32
        assert np.abs(logits - ref_logits).max() <= TOL, f"{model} over {protocol}: logits differ"
        assert np.abs(probs - ref_probs).max() <= TOL, f"{model} over {protocol}: probabilities differ"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classify_combines_window_probabilities_exactly_as_the_audio_contract(
    runtime_server, runtime_models, serving_clips, protocol
):
    model = "ser_fp32" if "ser_fp32" in runtime_models else "ser_int8"
    session = _ort_session(runtime_server.repository, model)
    with SerClient(server_url(runtime_server, protocol), model=model, protocol=protocol) as client:
        for key, expected_windows in (("short", 1), ("long", 4)):
            pred = client.classify(serving_clips[key])
            y = load_audio(serving_clips[key])
            w = make_windows(y, window_samples=16_000, hop_samples=8_000)
            ref = aggregate(_ort_run(session, w.waveforms, w.num_samples)[1], w.num_samples)
            assert pred.num_windows == expected_windows == len(w)
            assert pred.source == str(serving_clips[key])
            assert list(pred.probabilities) == list(RAVDESS8)
            assert np.abs(np.array(list(pred.probabilities.values())) - ref).max() <= TOL
            assert pred.label == RAVDESS8[int(np.argmax(ref))] and pred.confidence == max(pred.probabilities.values())
            assert abs(sum(pred.probabilities.values()) - 1) < 1e-5 and pred.latency_s > 0


def test_paths_bytes_and_arrays_of_the_same_clip_give_the_same_prediction(runtime_server, serving_clips):
    path = serving_clips["long"]
    with SerClient(runtime_server.grpc_url, model="ser_int8") as client:
        a = client.classify(path)
        b = client.classify(path.read_bytes(), name="upload.wav")
        y = load_audio(path)
        c = client.classify(y, sample_rate=16_000)
    assert b.source == "upload.wav" and c.source == "<array>"
    for other in (b, c):
        assert other.label == a.label
        assert np.abs(other.window_probabilities - a.window_probabilities).max() <= TOL


def test_a_clip_with_more_windows_than_max_batch_size_is_split_across_requests(runtime_server, serving_clips):
    with SerClient(runtime_server.grpc_url, model="ser_int8") as client:
        before = settled(client.statistics)
        pred = client.classify(serving_clips["very_long"])
        after = settled(client.statistics)
        assert pred.num_windows == 12 > client.max_batch_size
    assert after.inference_count - before.inference_count == 12
    assert after.success_count - before.success_count == -(-12 // client.max_batch_size)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_32_concurrent_requests_are_merged_by_the_dynamic_batcher(runtime_server, protocol):
    rng = np.random.default_rng(3)
    clips = [(0.3 * rng.standard_normal(16_000)).astype(np.float32) for _ in range(32)]
    with SerClient(server_url(runtime_server, protocol), model="ser_int8", protocol=protocol) as client:
        before = settled(client.statistics)
        results = list(client.classify_many(clips, concurrency=32, sample_rate=16_000))
        after = settled(client.statistics)
    assert [r.index for r in results] == list(range(32)) and all(r.ok for r in results)
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    print(f"\n{protocol}: 32 concurrent requests -> {executions} executions (mean batch {inferences / executions:.1f})")
    assert inferences == 32
    assert executions < inferences, f"no batching over {protocol}: {executions} executions for 32 requests"


def test_classify_many_keeps_input_order_and_reports_bad_files_without_raising(runtime_server, serving_clips):
    sources = [serving_clips["short"], serving_clips["empty"], serving_clips["long"], Path("/nonexistent.wav"),
               serving_clips["garbage"], serving_clips["silent"], serving_clips["short"]]
    with SerClient(runtime_server.grpc_url, model="ser_int8") as client:
        results = list(client.classify_many(sources, concurrency=3))
        alone = client.classify(serving_clips["short"])
    assert [r.source for r in results] == [str(s) for s in sources]
    assert [r.ok for r in results] == [True, False, True, False, False, False, True]
    for r in results:
        assert isinstance(r, ClassifyResult)
        if not r.ok:
            assert r.prediction is None and r.source in str(r.error) and "\n" not in str(r.error)
    assert results[0].prediction.label == results[6].prediction.label == alone.label


def test_grpc_and_http_agree_and_one_tiny_request_is_fast(runtime_server):
    x, n = _windows(11, 1, 16_000)
    timings, outputs = {}, {}
    for protocol in PROTOCOLS:
        with SerClient(server_url(runtime_server, protocol), model="ser_int8", protocol=protocol) as client:
            client.infer_windows(x, n)  # warm-up
            samples = []
            for _ in range(15):
                t0 = time.perf_counter()
                outputs[protocol] = client.infer_windows(x, n)[1]
                samples.append(time.perf_counter() - t0)
            timings[protocol] = statistics.median(samples)
    assert np.abs(outputs["grpc"] - outputs["http"]).max() <= TOL
    print("\none 1-window request, median of 15: " + ", ".join(f"{p} {t * 1e3:.1f} ms" for p, t in timings.items()))
    assert max(timings.values()) < 2.0


def test_one_client_can_be_shared_by_threads(runtime_server, serving_clips):
    errors: list[BaseException] = []
    with SerClient(runtime_server.http_url, model="ser_int8", protocol="http") as client:
        expected = client.classify(serving_clips["short"]).label

        def work() -> None:
            try:
                for _ in range(3):
                    assert client.classify(serving_clips["short"]).label == expected
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def _connections_to(port: int) -> int:
    """Open TCP connections of this process to ``port`` on loopback."""
    import psutil

    return sum(1 for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port
               and c.status == psutil.CONN_ESTABLISHED)


def test_threads_that_come_and_go_leave_no_http_connections_behind(triton_server, serving_clips):
    """Each calling thread gets its own HTTP client; those of ended threads are closed, not kept until close()."""
    port = int(triton_server.http_url.rsplit(":", 1)[1])
    before = _connections_to(port)
    errors: list[BaseException] = []
    with SerClient(triton_server.http_url, model="ser_int8", protocol="http") as client:

        def work() -> None:
            try:
                client.classify(serving_clips["short"])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        for _ in range(10):  # 40 short-lived threads, 4 at a time, as a web server's request threads come and go
            batch = [threading.Thread(target=work) for _ in range(4)]
            for t in batch:
                t.start()
            for t in batch:
                t.join()
        during = _connections_to(port) - before
    assert errors == []
    assert during <= 5, f"{during} connections open after 40 threads (the opening thread's, at most 4 of the last ones)"
    assert _connections_to(port) - before == 0  # close() closes what is left
