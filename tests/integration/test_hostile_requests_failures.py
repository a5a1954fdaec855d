"""Hostile requests to the served model: each is refused on its own, and the server keeps serving.

Against the real session server (``triton_server``, the bundled tritonserver 2.51 with the
portable python-backend models) over raw HTTP and raw gRPC, bypassing the bundle's client so
that nothing is cleaned up before it reaches the server. After every request the server must
be READY and answer a good request exactly as before. The one request that kills 2.51 (a huge
declared shape in an HTTP JSON body) is in ``tests/integration/test_supervisor_failures.py``, against a
server of its own.

Every server-side test runs on both repository runtimes (``runtime_server``). Shapes, dtypes,
names and batch sizes are refused by the server itself on both. Values are refused only by the
portable model: Triton's ONNX Runtime backend runs the graph on whatever arrives, so on the native
runtime ``num_samples`` outside ``[1, W]`` is clamped by the graph and a NaN/Inf window answers
NaN for that window alone (:data:`VALUE_CASES`); either way the server keeps serving and the
requests batched with it get their own answers. The value checks are also tested on
:func:`export.served.window_model.run_batched` directly, and the native graph's clamp on the
exported ONNX file with ONNX Runtime.
"""

from __future__ import annotations

import http.client
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import settled

MODEL = "ser_fp32"
W = 16_000  # the tiny session model's window
GOOD_N = 12_000


def _good_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    x = (0.2 * rng.standard_normal((1, W))).astype(np.float32)
    x[:, GOOD_N:] = 0.0
    return x, np.array([[GOOD_N]], np.int64)


# --- raw transports ------------------------------------------------------------------------------


def _http_post(server, body: bytes, headers: dict[str, str] | None = None, *, model: str = MODEL) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request("POST", f"/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def _json_body(x, n, *, x_shape=None, n_shape=None, x_type="FP32", extra=()) -> bytes:
    x = np.asarray(x)
    n = np.asarray(n)
    inputs = [
        {"name": "waveform", "shape": list(x_shape or x.shape), "datatype": x_type, "data": x.ravel().tolist()},
        {"name": "num_samples", "shape": list(n_shape or n.shape), "datatype": "INT64", "data": n.ravel().tolist()},
        *extra,
    ]
    return json.dumps({"inputs": inputs}).encode()


def _grpc_stub(server):
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    channel = grpc.insecure_channel(server.grpc_url)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _grpc_request(x: np.ndarray, n: np.ndarray, *, x_shape=None, x_type="FP32", x_bytes=None, n_bytes=None, extra=()):
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=MODEL)
    for name, datatype, shape in (("waveform", x_type, x_shape or x.shape), ("num_samples", "INT64", n.shape), *extra):
        t = req.inputs.add()
        t.name, t.datatype = name, datatype
        t.shape.extend(list(shape))
    raw = [x.tobytes() if x_bytes is None else x_bytes, n.tobytes() if n_bytes is None else n_bytes]
    raw += [np.zeros(1, np.int64).tobytes() for _ in extra]
    req.raw_input_contents.extend(raw)
    return req


def _grpc_infer(stub, request) -> tuple[str, str]:
    import grpc

    try:
        stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    return "OK", ""


# --- the good request, before and after ------------------------------------------------------------


@pytest.fixture
def reference(runtime_server) -> dict[str, np.ndarray]:
    """The good request's probabilities over HTTP JSON and gRPC, before the test's hostile request."""
    return _good_answers(runtime_server)


def _good_answers(server) -> dict[str, np.ndarray]:
    from tritonclient.grpc import service_pb2

    x, n = _good_inputs()
    status, text = _http_post(server, _json_body(x, n))
    assert status == 200, text
    http_probs = next(o for o in json.loads(text)["outputs"] if o["name"] == "probabilities")["data"]
    channel, stub = _grpc_stub(server)
    try:
        response = stub.ModelInfer(_grpc_request(x, n), timeout=30)
    finally:
        channel.close()
    assert isinstance(response, service_pb2.ModelInferResponse)
    names = [o.name for o in response.outputs]
    grpc_probs = np.frombuffer(response.raw_output_contents[names.index("probabilities")], np.float32)
    return {"http": np.asarray(http_probs, np.float32), "grpc": grpc_probs.copy()}


def _assert_still_serving(server, reference: dict[str, np.ndarray]) -> None:
    assert server.is_running(), server.log_text()[-2000:]
    for path in ("/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        with urllib.request.urlopen(urllib.request.Request(f"http://{server.http_url}{path}", headers={"Connection": "close"}), timeout=10) as r:
            assert r.status == 200, path
    now = _good_answers(server)
    for protocol in ("http", "grpc"):
        np.testing.assert_array_equal(now[protocol], reference[protocol], err_msg=protocol)
    assert np.isfinite(now["grpc"]).all() and abs(float(now["grpc"].sum()) - 1.0) < 1e-4


# --- HTTP ---------------------------------------------------------------------------------------------


def _nan_waveform():
    x, n = _good_inputs()
    x = x.copy()
    x[0, 7] = np.nan
    return x, n


def _inf_waveform():
    x, n = _good_inputs()
    x = x.copy()
    x[0, 100] = -np.inf
    return x, n


X, N = _good_inputs()
HTTP_CASES = {
    # name: (body, extra headers, expected status, words the error must contain[, model])
    "wrong-dtype": (_json_body(X.astype(np.float64), N, x_type="FP64"), {}, 400, ["waveform", "FP64", "FP32"]),
    "wrong-shape": (_json_body(X[:, :100], N), {}, 400, ["waveform", "[1,100]"]),
    "batch-over-max": (_json_body(np.zeros((9, W), np.float32), np.ones((9, 1), np.int64)), {}, 400, ["batch-size must be <= 8"]),
    "missing-input": (json.dumps({"inputs": [{"name": "waveform", "shape": [1, W], "datatype": "FP32", "data": X.ravel().tolist()}]}).encode(),
                      {}, 400, ["missing required input", "num_samples"]),
    "extra-input": (_json_body(X, N, extra=[{"name": "bogus", "shape": [1, 1], "datatype": "INT64", "data": [1]}]), {}, 400, ["bogus"]),
    "num-samples-zero": (_json_body(X, [[0]]), {}, 400, ["'num_samples' = 0", f"[1, {W}]"]),
    "num-samples-negative": (_json_body(X, [[-5]]), {}, 400, ["'num_samples' = -5", f"[1, {W}]"]),
    "num-samples-over-window": (_json_body(X, [[W + 1]]), {}, 400, [f"'num_samples' = {W + 1}", f"[1, {W}]"]),
    "nan-waveform": (_json_body(*_nan_waveform()), {}, 400, ["'waveform'", "NaN or Inf"]),
    "inf-waveform": (_json_body(*_inf_waveform()), {}, 400, ["'waveform'", "NaN or Inf"]),
    "unknown-model": (_json_body(X, N), {}, 404, ["nope"], "nope"),
    # A body 2.51 cannot parse: 500 with the parser's reason (upstream answers these 400 since the JSON fixes).
    "malformed-json": (b'{"inputs": [{"name": ', {}, 500, ["failed to parse the request JSON"]),
    "not-json": (b"\x00\x01\x02garbage", {}, 500, ["failed to parse the request JSON"]),
    "negative-shape": (_json_body(X, N, x_shape=[-1, W]), {}, 500, ["shape"]),
    "too-few-values": (_json_body(X[:, :10], N, x_shape=[1, W]), {}, 500, ["does not match", "data"]),
}


def _binary_body(x: np.ndarray, n: np.ndarray, *, x_shape=None, x_bytes=None) -> tuple[bytes, dict[str, str]]:
    xb = x.tobytes() if x_bytes is None else x_bytes
    header = json.dumps({"inputs": [
        {"name": "waveform", "shape": list(x_shape or x.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(xb)}},
        {"name": "num_samples", "shape": list(n.shape), "datatype": "INT64", "parameters": {"binary_data_size": 8 * n.size}},
    ]}).encode()
    return header + xb + n.tobytes(), {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def _binary_cases():
    huge_body, huge_headers = _binary_body(X[:, :10], N, x_shape=[1, 1_000_000 * 32_000])
    over_body, over_headers = _binary_body(np.zeros((64, W), np.float32), np.ones((64, 1), np.int64))
    short_body, short_headers = _binary_body(X, N)
    lying_body, lying_headers = _binary_body(X, N)
    return {
        # The huge declared shape that kills 2.51 over JSON is refused cleanly by the binary extension.
        "binary-huge-declared-shape": (huge_body, huge_headers, 400, ["waveform"]),
        "binary-4-MB-over-max-batch": (over_body, over_headers, 400, ["batch-size must be <= 8"]),
        "binary-truncated-body": (short_body[:-1000], short_headers, 400, ["waveform"]),
        "binary-header-length-lies": (lying_body, {**lying_headers, "Inference-Header-Content-Length": str(10**9)}, 400,
                                      ["inference header size"]),
    }


HTTP_CASES.update(_binary_cases())


#: Requests whose shapes are right and whose values are not: refused by the portable model, passed to the
#: graph by the native runtime (num_samples clamped into [1, W]; NaN/Inf samples answer NaN for their window).
VALUE_CASES = frozenset({"num-samples-zero", "num-samples-negative", "num-samples-over-window", "nan-waveform", "inf-waveform"})


def _native_value_answer(text: str, case: str) -> None:
    probabilities = np.asarray(next(o for o in json.loads(text)["outputs"] if o["name"] == "probabilities")["data"])
    if "waveform" in case:
        assert np.isnan(probabilities).all(), f"{case}: {probabilities}"
    else:
        assert np.isfinite(probabilities).all() and abs(probabilities.sum() - 1) < 1e-4, f"{case}: {probabilities}"


@pytest.mark.parametrize("case", sorted(HTTP_CASES))
def test_a_hostile_http_request_is_refused_with_a_clear_error_and_the_server_keeps_serving(runtime, runtime_server, reference, case):
    body, headers, status, words, *model = HTTP_CASES[case]
    got, text = _http_post(runtime_server, body, headers, model=model[0] if model else MODEL)
    if runtime == "native" and case in VALUE_CASES:
        assert got == 200, f"{case}: HTTP {got}: {text}"
        _native_value_answer(text, case)
        _assert_still_serving(runtime_server, reference)
        return
    assert got == status, f"{case}: HTTP {got}: {text}"
    message = json.loads(text)["error"]
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    _assert_still_serving(runtime_server, reference)


# --- gRPC ---------------------------------------------------------------------------------------------


def _grpc_cases():
    x, n = _good_inputs()
    nan_x, _ = _nan_waveform()
    return {
        # name: (request, expected code, words the error must contain)
        "wrong-dtype": (_grpc_request(x.astype(np.float64), n, x_type="FP64"), "INVALID_ARGUMENT", ["FP64"]),
        "wrong-shape": (_grpc_request(x[:, :100], n), "INVALID_ARGUMENT", ["waveform", "[1,100]"]),
        "batch-over-max": (_grpc_request(np.zeros((64, W), np.float32), np.ones((64, 1), np.int64)), "INVALID_ARGUMENT",
                           ["batch-size must be <= 8"]),
        "missing-data": (_grpc_request(x, n, n_bytes=b""), "INVALID_ARGUMENT", ["num_samples"]),
        "extra-input": (_grpc_request(x, n, extra=[("bogus", "INT64", (1, 1))]), "INVALID_ARGUMENT", ["bogus"]),
        "byte-size-lies": (_grpc_request(x, n, x_bytes=x.tobytes()[:-3]), "INVALID_ARGUMENT", ["byte size mismatch"]),
        "huge-declared-shape": (_grpc_request(x[:, :10], n, x_shape=(1_000_000, 32_000)), "INVALID_ARGUMENT", ["waveform"]),
        "num-samples-zero": (_grpc_request(x, np.array([[0]], np.int64)), "INVALID_ARGUMENT", ["'num_samples' = 0"]),
        "num-samples-over-window": (_grpc_request(x, np.array([[W + 7]], np.int64)), "INVALID_ARGUMENT", [f"= {W + 7}", f"[1, {W}]"]),
        "nan-waveform": (_grpc_request(nan_x, n), "INVALID_ARGUMENT", ["'waveform'", "NaN or Inf"]),
    }


GRPC_CASES = _grpc_cases()


@pytest.mark.parametrize("case", sorted(GRPC_CASES))
def test_a_hostile_grpc_request_is_invalid_argument_and_the_server_keeps_serving(runtime, runtime_server, reference, case):
    request, code, words = GRPC_CASES[case]
    if runtime == "native" and case in VALUE_CASES:
        code, words = "OK", []
    channel, stub = _grpc_stub(runtime_server)
    try:
        got, message = _grpc_infer(stub, request)
    finally:
        channel.close()
    assert got == code, f"{case}: {got}: {message}"
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    _assert_still_serving(runtime_server, reference)


def test_bytes_that_are_no_grpc_message_are_refused_and_the_server_keeps_serving(runtime_server, reference):
    import grpc

    channel = grpc.insecure_channel(runtime_server.grpc_url)
    try:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff\x00not a protobuf", timeout=30)
    finally:
        channel.close()
    assert info.value.code() == grpc.StatusCode.INTERNAL and "parse" in info.value.details()  # grpc's own deserializer
    _assert_still_serving(runtime_server, reference)


# --- a bad request does not fail the good ones batched with it --------------------------------------------


def test_concurrent_bad_requests_fail_alone_and_the_good_ones_batched_with_them_are_answered(runtime, runtime_server, reference):
    import queue

    import tritonclient.grpc as grpcclient

    x, n = _good_inputs()
    nan_x, _ = _nan_waveform()
    bad = {1: (x, np.array([[0]], np.int64)), 3: (nan_x, n), 5: (x, np.array([[W + 1]], np.int64)), 6: (x, np.array([[-3]], np.int64))}
    client = grpcclient.InferenceServerClient(runtime_server.grpc_url)
    done: queue.Queue = queue.Queue()
    try:
        before = client.get_inference_statistics(MODEL, as_json=True)
        for i in range(8):
            xi, ni = bad.get(i, (x, n))
            inputs = [grpcclient.InferInput("waveform", [1, W], "FP32"), grpcclient.InferInput("num_samples", [1, 1], "INT64")]
            inputs[0].set_data_from_numpy(xi)
            inputs[1].set_data_from_numpy(ni)
            client.async_infer(MODEL, inputs, callback=lambda result, error, i=i: done.put((i, result, error)))
        answers = dict((i, (r, e)) for i, r, e in (done.get(timeout=60) for _ in range(8)))
        after = settled(lambda: client.get_inference_statistics(MODEL, as_json=True))
    finally:
        client.close()
    for i, (result, error) in sorted(answers.items()):
        if i in bad and runtime == "native":  # answered (clamped, or NaN for the NaN window alone)
            assert error is None, (i, error)
        elif i in bad:
            assert result is None and "StatusCode.INVALID_ARGUMENT" in str(error.status()), (i, error)
        else:
            assert error is None, (i, error)
            np.testing.assert_array_equal(result.as_numpy("probabilities")[0], reference["grpc"])
    stats = [s for s in after["model_stats"] if s["version"] == "1"][0]
    old = [s for s in before["model_stats"] if s["version"] == "1"][0]
    requests = int(stats["inference_stats"]["success"]["count"]) - int(old["inference_stats"]["success"]["count"])
    executions = int(stats["execution_count"]) - int(old["execution_count"])
    print(f"\n8 concurrent requests (4 bad) -> {executions} executions")
    assert requests == 8 and executions < requests, "the bad requests were never batched with good ones"


# --- the same checks without a server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_model(portable_repository):
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    from export.served.window_model import make_session, parse_model_config

    model = Path(portable_repository) / MODEL
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    spec = parse_model_config(json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)))
    return make_session(model / "1" / "model.onnx", intra_op_threads=1), spec


@pytest.mark.parametrize(
    "n, nan_at, words",
    [
        (0, None, ["'num_samples' = 0 in row 1", f"[1, {W}]"]),
        (-5, None, ["'num_samples' = -5 in row 1"]),
        (W + 1, None, [f"'num_samples' = {W + 1} in row 1"]),
        (GOOD_N, (1, 5), ["'waveform' holds 1 NaN or Inf value(s) in row 1"]),
    ],
    ids=["zero", "negative", "over-window", "nan"],
)
def test_run_batched_refuses_values_the_model_cannot_mean_and_answers_the_other_requests(python_model, n, nan_at, words):
    from export.served.window_model import RequestError, length_bound, run_batched

    session, spec = python_model
    assert length_bound(spec) == W
    x, good_n = _good_inputs()
    good = {"waveform": x, "num_samples": good_n}
    bx = np.repeat(x, 3, axis=0)
    bn = np.repeat(good_n, 3, axis=0)
    bn[1, 0] = n
    if nan_at is not None:
        bx[nan_at] = np.nan
    results = run_batched(session, [good, {"waveform": bx, "num_samples": bn}, good], spec=spec)
    assert isinstance(results[1], RequestError) and not results[1].internal
    for word in words:
        assert word in str(results[1])
    alone = run_batched(session, [good], spec=spec)[0]
    for got in (results[0], results[2]):
        np.testing.assert_allclose(got["probabilities"], alone["probabilities"], atol=1e-6)


def test_the_native_graph_clamps_num_samples_into_one_to_w(exported_tiny):
    """Where nothing validates (Triton's onnxruntime backend), a length outside [1, W] reads as its nearest bound."""
    from export.served.window_model import make_session

    session = make_session(Path(exported_tiny) / "fp32" / "model.onnx", intra_op_threads=1)
    x, _ = _good_inputs()
    xs = np.repeat(x, 5, axis=0)

    def probs(values):
        return session.run(["probabilities"], {"waveform": xs, "num_samples": np.array(values, np.int64).reshape(-1, 1)})[0]

    got = probs([0, -5, -(2**62), W + 1, 2**62])
    want = probs([1, 1, 1, W, W])
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_the_graph_answers_nan_for_a_non_finite_window_and_its_neighbours_keep_their_answers(exported_tiny, variant):
    """Where nothing validates values, a NaN/Inf window answers NaN alone; the batch's other windows are not thrown off."""
    from export.served.window_model import make_session

    session = make_session(Path(exported_tiny) / variant / "model.onnx", intra_op_threads=1)
    x, n = _good_inputs()
    xs, ns = np.repeat(x, 3, axis=0), np.repeat(n, 3, axis=0)
    xs[1, 7], xs[2, 11] = np.nan, np.inf
    clean = xs.copy()
    clean[1, 7] = clean[2, 11] = 0.0  # what the graph makes of the bad samples before the model sees them
    logits, probs = session.run(["logits", "probabilities"], {"waveform": xs, "num_samples": ns})
    assert np.isfinite(probs[0]).all() and np.isnan(probs[1:]).all() and np.isnan(logits[1:]).all()
    want = session.run(["probabilities"], {"waveform": clean, "num_samples": ns})[0]
    np.testing.assert_array_equal(probs[0], want[0])
