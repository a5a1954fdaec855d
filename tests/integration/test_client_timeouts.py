"""Slow and unavailable answers from a real tritonserver: time-outs are per-file failures, UNAVAILABLE / 503 are retried.

The module starts a server of its own (``scripted_server``) serving ``scripted``: a
python-backend model with the bundle's contract (tensors and ``ser.*`` parameters)
whose behaviour a clip's length picks, so each case is deterministic on a busy host:

* a clip of :data:`SLOW_SAMPLES` samples is answered after :data:`SLOW_S` seconds;
* a clip of :data:`UNAVAILABLE_SAMPLES` samples is refused with Triton's UNAVAILABLE
  (``pb_utils.TritonError.UNAVAILABLE``: gRPC UNAVAILABLE, HTTP 503), as a model being
  reloaded is;
* any other clip is answered at once (uniform probabilities).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf

from client.batch import predict_files
from client.errors import RequestTimeoutError, ServerUnavailableError
from client.triton_client import AsyncSerClient, RetryPolicy, SerClient, TransportOptions
from tests.helpers import RAVDESS8, server_url

PROTOCOLS = ("grpc", "http")
MODEL = "scripted"
#: Clip lengths (16 kHz samples) the scripted model answers slowly / refuses as UNAVAILABLE.
SLOW_SAMPLES, UNAVAILABLE_SAMPLES = 4_321, 3_333
#: How long the scripted model takes over a slow clip, seconds (the tests' time limits are 1 s).
SLOW_S = 4.0

_SCRIPTED_MODEL_PY = f'''\
"""Test-only model with the bundle's contract; the clip's length picks its behaviour."""
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            n = pb_utils.get_input_tensor_by_name(request, "num_samples").as_numpy().reshape(-1)
            if {UNAVAILABLE_SAMPLES} in n:
                out.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("model is reloading", pb_utils.TritonError.UNAVAILABLE)))
                continue
            if {SLOW_SAMPLES} in n:
                time.sleep({SLOW_S})
            k = n.shape[0]
            logits = np.zeros((k, {len(RAVDESS8)}), np.float32)
            probs = np.full((k, {len(RAVDESS8)}), 1.0 / {len(RAVDESS8)}, np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", logits), pb_utils.Tensor("probabilities", probs)]))
        return out
'''


def _write_scripted_model(root):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from client.contract import ModelContract

    contract = ModelContract(labels=RAVDESS8, window_samples=16_000, hop_samples=8_000, variant="fp32", source="test")
    config = mc.ModelConfig(name=MODEL, backend="python", max_batch_size=8)
    config.input.add(name="waveform", data_type=mc.TYPE_FP32, dims=[16_000])
    config.input.add(name="num_samples", data_type=mc.TYPE_INT64, dims=[1])
    config.output.add(name="logits", data_type=mc.TYPE_FP32, dims=[len(RAVDESS8)])
    config.output.add(name="probabilities", data_type=mc.TYPE_FP32, dims=[len(RAVDESS8)])
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=4)  # slow clips in progress do not hold up the others
    for key, value in contract.to_parameters().items():
        config.parameters[key].string_value = value
    (root / MODEL / "1").mkdir(parents=True)
    (root / MODEL / "1" / "model.py").write_text(_SCRIPTED_MODEL_PY)
    (root / MODEL / "config.pbtxt").write_text(text_format.MessageToString(config))


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory):
    from deploy.local_triton import LocalTriton

    root = tmp_path_factory.mktemp("scripted-repository")
    _write_scripted_model(root)
    with LocalTriton(root, startup_timeout_s=120) as server:
        yield server


@pytest.fixture(scope="module")
def scripted_clips(tmp_path_factory) -> dict[str, object]:
    """``fast`` (four 0.5 s clips), ``slow`` and ``unavailable``: 16 kHz PCM_16 files."""
    root = tmp_path_factory.mktemp("scripted-clips")
    rng = np.random.default_rng(7)

    def clip(name: str, samples: int):
        path = root / name
        sf.write(path, (0.3 * rng.standard_normal(samples)).clip(-1, 1).astype(np.float32), 16_000, subtype="PCM_16")
        return path

    return {
        "fast": [clip(f"fast_{i}.wav", 8_000) for i in range(4)],
        "slow": clip("slow.wav", SLOW_SAMPLES),
        "unavailable": clip("unavailable.wav", UNAVAILABLE_SAMPLES),
    }


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_past_its_time_limit_is_that_files_timeout_row_and_the_run_goes_on(scripted_server, scripted_clips, protocol, tmp_path):
    fast = scripted_clips["fast"]
    files = [fast[0], fast[1], scripted_clips["slow"], fast[2], fast[3]]
    out = tmp_path / "rows.jsonl"
    with SerClient(server_url(scripted_server, protocol), protocol=protocol, model=MODEL, timeout_s=1.0) as client:
        t0 = time.perf_counter()
        # one worker: the files after the slow one go through the same connection (HTTP: a fresh one)
        summary = predict_files(client, files, output=out, concurrency=1)
        elapsed = time.perf_counter() - t0
        with pytest.raises(RequestTimeoutError):  # the same on the thread that opened the client
            client.classify(scripted_clips["slow"])
        t1 = time.perf_counter()
        assert client.classify(fast[0]).label and time.perf_counter() - t1 < 1.0
    rows = _rows(out)
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert [r["ok"] for r in rows] == [True, True, False, True, True]
    late = rows[2]
    assert late["error_type"] == "RequestTimeoutError" and "within 1 s" in late["error"] and MODEL in late["error"]
    assert summary.ok == 4 and summary.failed == 1
    assert elapsed < SLOW_S  # the late answer was not waited for

    # a resumed run with a longer limit classifies the file that timed out, and only it, replacing its row
    with SerClient(server_url(scripted_server, protocol), protocol=protocol, model=MODEL, timeout_s=SLOW_S + 10) as client:
        again = predict_files(client, files, output=out, resume=True)
    assert again.skipped == 4 and again.ok == 1 and again.failed == 0
    final = _rows(out)
    assert sorted(r["file"] for r in final) == sorted(str(f) for f in files) and all(r["ok"] for r in final)
    assert final[:4] == [rows[i] for i in (0, 1, 3, 4)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unavailable_is_retried_and_server_unavailable_over_both_protocols(scripted_server, scripted_clips, protocol, tmp_path):
    """UNAVAILABLE over gRPC and 503 over HTTP are one failure: retried per the policy, then ServerUnavailableError."""
    attempts: list[tuple[str, int]] = []
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    url = server_url(scripted_server, protocol)
    with SerClient(url, protocol=protocol, model=MODEL, retry=policy, on_attempt=lambda what, n: attempts.append((what, n))) as client:
        assert client.classify(scripted_clips["fast"][0]).label
        attempts.clear()
        with pytest.raises(ServerUnavailableError, match="model is reloading") as info:
            client.classify(scripted_clips["unavailable"])
        assert attempts == [("infer", 1), ("infer", 2), ("infer", 3)]
        assert url in str(info.value) and "\n" not in str(info.value)
        # in directory mode it stops the run, as a server that went away does, for --resume to finish
        files = [scripted_clips["fast"][0], scripted_clips["unavailable"], scripted_clips["fast"][1]]
        with pytest.raises(ServerUnavailableError, match="stopped after 1 of 3 files"):
            predict_files(client, files, output=tmp_path / "rows.jsonl", concurrency=1)
    assert [r["file"] for r in _rows(tmp_path / "rows.jsonl")] == [str(files[0])]


def test_the_async_http_clients_connection_limit_does_not_cut_a_slow_answer(scripted_server, scripted_clips):
    """tritonclient.http.aio's one limit bounds the whole call: connecting plus answering, not connecting alone."""
    import asyncio

    async def classify(transport: TransportOptions):
        async with AsyncSerClient(scripted_server.http_url, protocol="http", model=MODEL, transport=transport,
                                  timeout_s=SLOW_S + 10, retry=RetryPolicy.none()) as client:
            t0 = time.perf_counter()
            try:
                return await client.classify(scripted_clips["slow"]), time.perf_counter() - t0
            except RequestTimeoutError as exc:
                took = time.perf_counter() - t0
                t1 = time.perf_counter()
                assert (await client.classify(scripted_clips["fast"][0])).label  # the next call is not behind the late one
                assert time.perf_counter() - t1 < 1.0
                return exc, took

    answer, took = asyncio.run(classify(TransportOptions(connection_timeout_s=0.5)))
    assert not isinstance(answer, Exception) and answer.label and took >= SLOW_S
    # the network limit still bounds a slow answer: 0.5 s to connect + 1 s to answer
    late, took = asyncio.run(classify(TransportOptions(connection_timeout_s=0.5, network_timeout_s=1.0)))
    assert isinstance(late, RequestTimeoutError) and "within 1.5 s" in str(late)
    assert 1.4 <= took < SLOW_S
