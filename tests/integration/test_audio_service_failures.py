"""Hostile input to the server-side audio model ``ser`` on the real tritonserver.

Every bad clip gets INVALID_ARGUMENT (gRPC) / 400 (HTTP) with a message naming the reason; the
python-backend stubs never die and the server stays READY. The session server's ``ser`` has small
limits (conftest ``SERVING_AUDIO_LIMITS``: 1 MiB, 30 s, 1,000,000 decoded samples).

Requests that *declare* several hundred MB go over gRPC and HTTP's binary extension only: a JSON
body declaring a huge shape aborts the bundled tritonserver 2.51 (docs/server-side-audio.md).
"""

from __future__ import annotations

import io
import json
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import settled

HUGE = 500_000_000  # bytes declared by the oversized requests


@pytest.fixture(scope="module")
def stubs_at_start(triton_server) -> set[int]:
    """The server's python-backend stub PIDs before any hostile request."""
    return set(triton_server.stub_pids())


def _encoded(y: np.ndarray, sr: int, *, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.repeat(y[:, None], channels, axis=1) if channels > 1 else y


def _grpc(server, model: str = "ser", **tensors):
    """Send ``model`` a request over gRPC; returns ``(status name, message)`` of the refusal."""
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException, triton_to_np_dtype

    client = tc.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, (dtype, value) in tensors.items():
        arr = np.asarray(value, dtype=triton_to_np_dtype(dtype))
        tensor = tc.InferInput(name, list(arr.shape), dtype)
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    try:
        client.infer(model, inputs, client_timeout=60)
    except InferenceServerException as exc:
        return str(exc.status()).replace("StatusCode.", ""), exc.message()
    finally:
        client.close()
    pytest.fail("the request was answered, not refused")


def _http_binary(server, header: dict, body: bytes) -> tuple[int, str]:
    head = json.dumps(header).encode()
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/ser/infer", data=head + body, method="POST",
                                 headers={"Inference-Header-Content-Length": str(len(head)), "Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]


def _ready(server) -> None:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/ser/ready", timeout=5) as resp:
        assert resp.status == 200
    assert server.is_running()


CLIPS = {
    "empty": (lambda: b"", "AudioDecodeError: audio: cannot decode audio (0 bytes)"),
    "not audio": (lambda: b"%PDF-1.7 " + bytes(range(256)) * 8, "AudioDecodeError: audio: cannot decode audio (not a format libsndfile reads"),
    "truncated wav": (lambda: _encoded(_tone(1.0, 16_000), 16_000)[:20_000], "AudioDecodeError: audio: cannot decode audio (truncated"),
    "silent": (lambda: _encoded(np.zeros(16_000, np.float32), 16_000), "SilentAudioError: audio: audio is silent (peak 0.00e+00"),
    "nan samples": (lambda: _encoded(np.where(np.arange(16_000) == 99, np.nan, _tone(1.0, 16_000)).astype(np.float32), 16_000,
                                     subtype="FLOAT"), "NonFiniteAudioError: audio: audio contains NaN or Inf samples (1 of"),
    "over max_bytes": (lambda: _encoded(_tone(40.0, 16_000), 16_000, subtype="PCM_16"),
                       "AudioTooLargeError: audio: audio is larger than the allowed maximum (1280044 bytes > ser.audio.max_bytes=1048576)"),
    "over max_duration": (lambda: _encoded(_tone(35.0, 8_000), 8_000, subtype="PCM_U8"),
                          "AudioTooLongError: audio: audio is longer than the allowed maximum (35.0 s > 30 s)"),
    "declares too many samples": (lambda: _encoded(0.01 * _tone(3.0, 48_000, channels=8), 48_000, fmt="FLAC"),
                                  "AudioTooLargeError: audio: audio is larger than the allowed maximum (declares 144000 frames x 8 channels"),
    "rate 500 Hz": (lambda: _encoded(_tone(1.0, 500), 500), "AudioFormatError: audio: unsupported audio format (sample rate 500 Hz outside"),
    "40 channels": (lambda: _encoded(_tone(0.1, 16_000, channels=40), 16_000), "AudioFormatError: audio: unsupported audio format (40 channels outside 1..32)"),
}


@pytest.mark.parametrize("case", list(CLIPS))
def test_a_bad_clip_is_refused_as_invalid_argument_naming_the_reason(triton_server, stubs_at_start, case):
    make, expected = CLIPS[case]
    status, message = _grpc(triton_server, audio=("BYTES", [make()]))
    assert status == "INVALID_ARGUMENT" and message.startswith(expected), message
    _ready(triton_server)


@pytest.mark.parametrize("case", ["not audio", "silent", "over max_bytes"])
def test_over_http_a_bad_clip_is_a_400_naming_the_reason(triton_server, stubs_at_start, case):
    make, expected = CLIPS[case]
    data = make()
    code, message = _http_binary(
        triton_server,
        {"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(data) + 4}}]},
        struct.pack("<I", len(data)) + data,
    )
    assert code == 400 and message.startswith(expected), message
    _ready(triton_server)


PCM = {
    "nan": (lambda: (("FP32", np.full(8_000, np.nan, np.float32)), ("INT32", [16_000])), "NonFiniteAudioError: pcm: audio contains NaN or Inf"),
    "inf": (lambda: (("FP32", np.r_[_tone(0.5, 16_000), np.inf].astype(np.float32)), ("INT32", [16_000])), "NonFiniteAudioError: pcm:"),
    "empty": (lambda: (("FP32", np.zeros(0, np.float32)), ("INT32", [16_000])), "EmptyAudioError: pcm: audio is empty"),
    "silent": (lambda: (("FP32", np.zeros(16_000, np.float32)), ("INT32", [16_000])), "SilentAudioError: pcm: audio is silent"),
    "rate 0": (lambda: (("FP32", _tone(0.5, 16_000)), ("INT32", [0])), "AudioFormatError: pcm: unsupported audio format (sample rate 0 Hz"),
    "rate 1e9": (lambda: (("FP32", _tone(0.5, 16_000)), ("INT32", [10**9])), "AudioFormatError: pcm: unsupported audio format (sample rate 1000000000 Hz"),
    "too long": (lambda: (("FP32", _tone(31.0, 1_000)), ("INT32", [1_000])), "AudioTooLongError: pcm: audio is longer than the allowed maximum (31.0 s > 30 s)"),
    "too many samples": (lambda: (("FP32", _tone(21.0, 48_000)), ("INT32", [48_000])),
                         "AudioTooLargeError: pcm: audio is larger than the allowed maximum (1008000 samples > ser.audio.max_decoded_samples=1000000)"),
}


@pytest.mark.parametrize("case", list(PCM))
def test_bad_pcm_is_refused_naming_the_reason(triton_server, stubs_at_start, case):
    make, expected = PCM[case]
    pcm, rate = make()
    status, message = _grpc(triton_server, pcm=pcm, sample_rate=rate)
    assert status == "INVALID_ARGUMENT" and message.startswith(expected), message
    _ready(triton_server)


def test_a_request_that_is_not_one_clip_is_refused_naming_what_to_send(triton_server, stubs_at_start):
    wav = _encoded(_tone(0.5, 16_000), 16_000)
    pcm, rate = ("FP32", _tone(0.5, 16_000)), ("INT32", [16_000])
    cases = [
        ({"timeline": ("BOOL", [True])}, "BadRequest: send exactly one of 'audio' (encoded file) or 'pcm'"),
        ({"audio": ("BYTES", [wav]), "pcm": pcm, "sample_rate": rate}, "BadRequest: send exactly one of"),
        ({"pcm": pcm}, "BadRequest: 'pcm' needs 'sample_rate' (one INT32, Hz)"),
        ({"audio": ("BYTES", [wav]), "sample_rate": rate}, "BadRequest: 'sample_rate' goes with 'pcm'"),
        ({"audio": ("BYTES", [wav, wav])}, "unexpected shape for input 'audio'"),  # Triton's own check: dims [1]
    ]
    for tensors, expected in cases:
        status, message = _grpc(triton_server, **tensors)
        assert status == "INVALID_ARGUMENT" and expected in message, message
    _ready(triton_server)


def test_vad_true_on_a_model_written_without_the_speech_gate_is_refused(triton_server, stubs_at_start):
    status, message = _grpc(triton_server, audio=("BYTES", [_encoded(_tone(0.5, 16_000), 16_000)]), vad=("BOOL", [True]))
    assert status == "INVALID_ARGUMENT" and "BadRequest: vad=true, but model 'ser' was written without" in message, message
    _ready(triton_server)


def test_a_clip_without_speech_is_refused_by_the_gate_and_the_client_raises_no_speech(triton_server, stubs_at_start):
    from client.errors import NoSpeechError
    from client.triton_client import SerClient
    from tests.conftest import SERVING_VAD_MODEL

    quiet = (0.003 * np.random.default_rng(0).standard_normal(48_000)).astype(np.float32)  # 3 s: not silent, no speech
    with SerClient(triton_server.grpc_url, model="ser_fp32") as window_model:
        before = settled(window_model.statistics).inference_count
        status, message = _grpc(triton_server, SERVING_VAD_MODEL, pcm=("FP32", quiet), sample_rate=("INT32", [16_000]))
        with SerClient(triton_server.grpc_url, model=SERVING_VAD_MODEL, server_side=True) as client, \
                pytest.raises(NoSpeechError, match=r"^hum.wav: no speech in the audio \(at most \d+ ms of speech in one of 5 "
                                                   r"windows; a window needs 200 ms, ser.audio.vad_min_speech_ms\)$"):
            client.classify(_encoded(quiet, 16_000), name="hum.wav")
        assert settled(window_model.statistics).inference_count == before  # nothing reached the window model
    assert status == "INVALID_ARGUMENT" and message.startswith("NoSpeechError: pcm: no speech in the audio (at most"), message
    _ready(triton_server)


def test_requests_declaring_hundreds_of_megabytes_are_refused_before_the_model(triton_server, stubs_at_start):
    """Over gRPC and HTTP's binary extension (a JSON body with a huge shape aborts tritonserver 2.51)."""
    import tritonclient.grpc as tc
    from tritonclient.grpc import service_pb2

    client = tc.InferenceServerClient(triton_server.grpc_url)
    stub = client._client_stub  # the raw gRPC stub: tritonclient itself never sends a shape its data does not fill
    refusals = []
    try:
        for name, dtype, shape, raw in (
            ("pcm", "FP32", [HUGE // 4], b"\0" * 16),
            ("audio", "BYTES", [1], struct.pack("<I", HUGE) + b"RIFF"),
        ):
            request = service_pb2.ModelInferRequest(model_name="ser")
            tensor = request.inputs.add(name=name, datatype=dtype)
            tensor.shape.extend(shape)
            request.raw_input_contents.append(raw)
            with pytest.raises(Exception) as caught:
                stub.ModelInfer(request, timeout=60)
            refusals.append((caught.value.code().name, caught.value.details()))
    finally:
        client.close()
    assert refusals[0][0] == "INVALID_ARGUMENT" and "input byte size mismatch for input 'pcm'" in refusals[0][1]
    assert "Expected 500000000, got 16" in refusals[0][1]
    assert refusals[1][0] == "INVALID_ARGUMENT" and "expecting string of length 500000000" in refusals[1][1]
    for header, body, expected in (
        ({"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": HUGE}}]},
         struct.pack("<I", 10) + b"0123456789", "unexpected size for input 'audio'"),
        ({"inputs": [{"name": "pcm", "datatype": "FP32", "shape": [HUGE // 4], "parameters": {"binary_data_size": 16}},
                     {"name": "sample_rate", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 4}}]},
         b"\0" * 20, "input byte size mismatch for input 'pcm'"),
    ):
        code, message = _http_binary(triton_server, header, body)
        assert code == 400 and expected in message, message
    _ready(triton_server)


def test_the_server_side_client_refuses_a_too_large_file_before_sending_it(triton_server, tmp_path):
    from client.errors import AudioTooLargeError
    from client.triton_client import SerClient

    big = tmp_path / "big.wav"
    big.write_bytes(CLIPS["over max_bytes"][0]())
    with SerClient(triton_server.grpc_url, server_side=True) as client:
        before = client.statistics()
        with pytest.raises(AudioTooLargeError, match=r"big.wav: audio is larger than the allowed maximum \(1280044 bytes > the server's"):
            client.classify(big)
        assert client.statistics().failure_count == before.failure_count  # never reached the server


def test_after_all_of_it_the_server_and_every_stub_are_still_up(triton_server, stubs_at_start, serving_clips):
    from client.triton_client import SerClient

    _ready(triton_server)
    assert set(triton_server.stub_pids()) == stubs_at_start, "a python-backend stub died or was restarted"
    with SerClient(triton_server.grpc_url, server_side=True) as client:
        assert client.classify(serving_clips["short"]).label


@pytest.mark.slow
def test_without_a_ready_window_model_the_answer_is_unavailable_until_one_is_loaded(serving_repository, serving_clips, tmp_path):
    """A second server on the same repository, loading only ``ser``: the client retries UNAVAILABLE, then gives up."""
    from client.errors import ServerUnavailableError
    from client.triton_client import RetryPolicy, SerClient
    from deploy.local_triton import LocalTriton

    attempts = []
    with LocalTriton(serving_repository, load_models=["ser"], log_path=tmp_path / "triton.log") as server:
        with SerClient(server.grpc_url, server_side=True, retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.01),
                       on_attempt=lambda what, n: attempts.append((what, n))) as client:
            with pytest.raises(ServerUnavailableError, match=r"none of the window models \['ser_fp32', 'ser_int8'\] is ready"):
                client.classify(serving_clips["short"])
            assert [a for a in attempts if a[0] == "infer"] == [("infer", 1), ("infer", 2)]
            import tritonclient.grpc as tc

            admin = tc.InferenceServerClient(server.grpc_url)
            try:
                admin.load_model("ser_int8")
            finally:
                admin.close()
            assert client.classify(serving_clips["short"]).label  # the audio model picks it up at the next request
