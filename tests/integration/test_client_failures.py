"""Hostile inputs to the client: each is a typed error with a one-line message naming the input.

Against the real session server (``triton_server``); the dead address is a port
nothing listens on. The CLI's exit codes for these are tested with the CLI.
"""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from client.errors import (
    AudioDecodeError,
    AudioError,
    ConfigError,
    ContractError,
    EmptyAudioError,
    InferenceError,
    ModelNotFoundError,
    NonFiniteAudioError,
    RequestTimeoutError,
    SerError,
    ServerUnavailableError,
    SilentAudioError,
)
from client.triton_client import SerClient, normalize_url, translate_error
from tests.helpers import server_url

PROTOCOLS = ("grpc", "http")


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


@pytest.fixture(scope="module")
def dead_address() -> str:
    """127.0.0.1:<port> where nothing listens (bound and released; nobody else binds loopback ports here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def int8_client(triton_server):
    with SerClient(triton_server.grpc_url, model="ser_int8") as client:
        yield client


# --- audio -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,error,reason",
    [
        ("garbage", AudioDecodeError, "cannot decode audio"),
        ("empty", AudioDecodeError, "0 bytes"),
        ("silent", SilentAudioError, "silent"),
    ],
)
def test_bad_audio_files_are_typed_errors_naming_the_file(int8_client, serving_clips, key, error, reason):
    with pytest.raises(error) as info:
        int8_client.classify(serving_clips[key])
    text = _one_line(info.value)
    assert str(serving_clips[key]) in text and reason in text


def test_a_missing_file_and_a_directory_are_decode_errors(int8_client, tmp_path):
    for source, reason in ((tmp_path / "missing.wav", "no such file"), (tmp_path, "is a directory")):
        with pytest.raises(AudioDecodeError, match=reason) as info:
            int8_client.classify(source)
        assert str(source) in _one_line(info.value)


def test_bad_arrays_and_bytes_are_typed_errors(int8_client):
    with pytest.raises(EmptyAudioError, match="upload"):
        int8_client.classify(np.zeros(0, np.float32), sample_rate=16_000, name="upload")
    with pytest.raises(NonFiniteAudioError):
        int8_client.classify(np.full(1_000, np.nan, np.float32), sample_rate=16_000)
    with pytest.raises(AudioDecodeError, match="<bytes>"):
        int8_client.classify(b"RIFF not really")
    with pytest.raises(ConfigError, match="sample_rate"):
        int8_client.classify(np.ones(100, np.float32))


# --- server, model and contract -----------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_dead_server_address_is_server_unavailable_naming_it(dead_address, protocol):
    with pytest.raises(ServerUnavailableError) as info:
        SerClient(dead_address, protocol=protocol, timeout_s=5).open()
    assert dead_address in _one_line(info.value) and protocol in str(info.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_address_that_accepts_but_never_answers_times_out_as_server_unavailable(protocol):
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        url = f"127.0.0.1:{mute.getsockname()[1]}"
        t0 = time.perf_counter()
        with pytest.raises(ServerUnavailableError) as info:
            SerClient(url, protocol=protocol, timeout_s=0.5).open()
    assert url in _one_line(info.value) and time.perf_counter() - t0 < 5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_wrong_model_name_is_model_not_found_listing_the_ready_models(triton_server, protocol):
    with pytest.raises(ModelNotFoundError) as info:
        SerClient(server_url(triton_server, protocol), model="ser_int4", protocol=protocol).open()
    text = _one_line(info.value)
    assert "'ser_int4'" in text and "not in the repository" in text and "ser_int8" in text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_without_the_contract_parameters_is_a_contract_error(triton_server, protocol):
    with pytest.raises(ContractError) as info:
        SerClient(server_url(triton_server, protocol), model="no_contract", protocol=protocol).open()
    text = _one_line(info.value)
    assert "'no_contract'" in text and "ser.labels" in text


def test_a_model_with_other_tensor_names_is_a_contract_error(triton_server):
    with pytest.raises(ContractError) as info:
        SerClient(triton_server.grpc_url, model="wrong_tensors").open()
    text = _one_line(info.value)
    assert "'wrong_tensors'" in text and "waveform" in text and "logits" in text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_the_server_refuses_is_an_inference_error(triton_server, protocol):
    with SerClient(server_url(triton_server, protocol), model="ser_int8", protocol=protocol) as client:
        with pytest.raises(InferenceError) as info:
            client.infer_windows(np.zeros((1, 123), np.float32), np.array([123]))
        text = _one_line(info.value)
        assert "ser_int8" in text and "waveform" in text and ("INVALID_ARGUMENT" in text or "400" in text)
        with pytest.raises(InferenceError, match="expected"):
            client.infer_windows(np.zeros((2, 16_000), np.float32), np.array([1]))
        # the connection stays usable after a refused request
        assert client.infer_windows(np.full((1, 16_000), 0.1, np.float32), [16_000])[1].shape == (1, 8)


def test_a_server_that_goes_away_between_calls_is_server_unavailable(portable_repository):
    from deploy.local_triton import LocalTriton

    with LocalTriton(portable_repository) as server:
        client = SerClient(server.grpc_url, model="ser_int8").open()
    try:
        with pytest.raises(ServerUnavailableError) as info:
            client.infer_windows(np.full((1, 16_000), 0.1, np.float32), [16_000])
        assert server.grpc_url in _one_line(info.value)
    finally:
        client.close()
        client.close()  # twice is safe


# --- options -------------------------------------------------------------------------


def test_bad_client_options_are_config_errors():
    for kwargs, match in (
        (dict(protocol="udp"), "protocol"),
        (dict(timeout_s=0), "timeout_s"),
        (dict(model=""), "model"),
    ):
        with pytest.raises(ConfigError, match=match):
            SerClient("127.0.0.1:8001", **kwargs)
    for url in ("https://example.org:443", "localhost", "host:port"):
        with pytest.raises(ConfigError, match="url"):
            normalize_url(url, protocol="grpc")
    assert normalize_url("grpc://127.0.0.1:8001", protocol="grpc") == "127.0.0.1:8001"
    assert normalize_url("http://localhost:8000/", protocol="http") == "localhost:8000"


def test_a_client_used_before_open_says_so():
    client = SerClient("127.0.0.1:8001")
    with pytest.raises(ConfigError, match="not open"):
        client.classify(np.ones(100, np.float32), sample_rate=16_000)


def test_tritonclient_errors_map_onto_the_hierarchy():
    from tritonclient.utils import InferenceServerException

    def mapped(status: str, msg: str = "m") -> type:
        exc = InferenceServerException(msg, status=status)
        return type(translate_error(exc, url="h:1", model="m", protocol="grpc", what="infer"))

    assert mapped("StatusCode.UNAVAILABLE") is ServerUnavailableError
    assert mapped("503", "anything") is ServerUnavailableError  # HTTP's UNAVAILABLE, whatever the words
    assert mapped("StatusCode.DEADLINE_EXCEEDED") is RequestTimeoutError  # one request's failure, not the server's
    assert mapped("504") is RequestTimeoutError
    assert mapped("StatusCode.NOT_FOUND") is ModelNotFoundError
    assert mapped("404") is ModelNotFoundError
    assert mapped("StatusCode.INVALID_ARGUMENT") is InferenceError
    assert mapped("400") is InferenceError
    assert mapped("StatusCode.INTERNAL", "Traceback\n  boom") is InferenceError
    assert type(translate_error(ConnectionRefusedError(111, "refused"), url="h:1", model="m", protocol="http", what="x")) is ServerUnavailableError
    late = translate_error(TimeoutError("timed out"), url="h:1", model="m", protocol="http", what="infer", timeout_s=1.5)
    assert type(late) is RequestTimeoutError and "within 1.5 s" in str(late) and "h:1" in str(late)
    err = translate_error(InferenceServerException("a\nb", status="StatusCode.INTERNAL"), url="h:1", model="m", protocol="grpc", what="infer")
    assert isinstance(err, SerError) and "\n" not in str(err)
    assert issubclass(AudioDecodeError, AudioError)


# --- retry, transport and directory-mode options ----------------------------------------


def test_bad_retry_and_transport_options_are_config_errors_naming_the_value(tmp_path):
    from client.triton_client import RetryPolicy, TransportOptions

    for kwargs, match in (
        (dict(max_attempts=0), "max_attempts=0"),
        (dict(max_attempts=2.5), "max_attempts=2.5"),
        (dict(initial_backoff_s=3, max_backoff_s=1), "initial_backoff_s=3"),
        (dict(multiplier=0.5), "multiplier=0.5"),
        (dict(jitter=1.0), "jitter=1.0"),
    ):
        with pytest.raises(ConfigError, match=match):
            RetryPolicy(**kwargs)
    key = tmp_path / "key.pem"
    key.write_text("x")
    for kwargs, match in (
        (dict(root_certificates=key), "ssl=False"),
        (dict(ssl=True, root_certificates=tmp_path / "nope.pem"), "nope.pem.*no such file"),
        (dict(ssl=True, private_key=key), "go together"),
        (dict(insecure=True), "insecure"),
        (dict(headers={"bad header": "v"}), "header name"),
        (dict(headers={"x-a": "line\nbreak"}), "single-line"),
        (dict(request_timeout_s=0), "request_timeout_s=0"),
    ):
        with pytest.raises(ConfigError, match=match) as info:
            TransportOptions(**kwargs)
        _one_line(info.value)
    with pytest.raises(ConfigError, match="RetryPolicy"):
        SerClient("127.0.0.1:8001", retry=3)


def test_directory_mode_refuses_what_it_cannot_resume_or_find(int8_client, tmp_path):
    from client.batch import find_audio, predict_files

    with pytest.raises(ConfigError, match="no audio files"):
        find_audio([tmp_path])
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"")
    with pytest.raises(ConfigError, match="needs an output file"):
        predict_files(int8_client, [clip], resume=True)
    bad = tmp_path / "out.jsonl"
    bad.write_text("this is not json\n")
    with pytest.raises(ConfigError, match="line 1 is not a JSON row"):
        predict_files(int8_client, [clip], output=bad, resume=True)
    other = tmp_path / "out.csv"
    other.write_text("file,ok,label\n")
    with pytest.raises(ConfigError, match="CSV columns"):
        predict_files(int8_client, [clip], output=other, resume=True)
    with pytest.raises(ConfigError, match="format='text'"):
        predict_files(int8_client, [clip], output=tmp_path / "x.txt", fmt="text")


def test_the_cli_refuses_a_malformed_header_in_one_line(serving_clips):
    from tests.helpers import assert_one_line_error, ser

    proc = ser("predict", str(serving_clips["short"]), "--header", "no-equals-sign")
    assert_one_line_error(proc, "--header 'no-equals-sign': expected KEY=VALUE")


# --- the audio contract's minimum length, on both paths ------------------------------------


@pytest.mark.parametrize("server_side", [False, True])
def test_a_clip_under_the_minimum_duration_is_refused_on_both_paths(triton_server, tmp_path, server_side):
    """The client decoding it and the server-side audio model (the same client/audio.py) refuse it alike."""
    import soundfile as sf

    from client.errors import AudioTooShortError

    model = "ser" if server_side else "ser_int8"
    for samples in (1, 1_599):  # one sample; 0.1 s less one
        path = tmp_path / f"{samples}.wav"
        sf.write(path, np.full(samples, 0.3, np.float32), 16_000, subtype="PCM_16")
        with SerClient(triton_server.grpc_url, model=model, server_side=server_side) as client:
            with pytest.raises(AudioTooShortError) as info:
                client.classify(path)
            assert str(path) in _one_line(info.value) and "< 0.1 s" in str(info.value)
            array = np.full(samples, 0.3, np.float32)
            with pytest.raises(AudioTooShortError):
                client.classify(array, sample_rate=16_000)
            assert client.classify(np.full(1_600, 0.3, np.float32), sample_rate=16_000).label  # 0.1 s is enough


# --- one run per output ------------------------------------------------------------------


def test_a_second_run_on_the_same_output_fails_at_once_naming_it(int8_client, serving_clips, tmp_path):
    import threading

    from client.batch import predict_files
    from client.errors import OutputLockedError

    out = tmp_path / "rows.jsonl"
    files = [serving_clips["short"], serving_clips["long"], serving_clips["very_long"]]
    first_row, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold_after_the_first_row(row: dict) -> None:
        first_row.set()
        release.wait(30)

    def first_run() -> None:
        try:
            predict_files(int8_client, files, output=out, resume=True, concurrency=1, on_row=hold_after_the_first_row)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    runner = threading.Thread(target=first_run)
    runner.start()
    try:
        assert first_row.wait(30)
        t0 = time.perf_counter()
        with pytest.raises(OutputLockedError) as info:
            predict_files(int8_client, files, output=out, resume=True)
        assert time.perf_counter() - t0 < 1.0  # fails at once, not after waiting for the lock
        assert str(out) in _one_line(info.value) and "another run is writing it" in str(info.value)
        assert isinstance(info.value, SerError)
    finally:
        release.set()
        runner.join(60)
    assert failures == []
    rows = [line for line in out.read_text().splitlines() if line]
    assert len(rows) == len(files)  # the refused run wrote nothing
    predict_files(int8_client, files, output=out, resume=True)  # the lock went with the first run


def test_the_cli_refuses_an_output_another_run_is_writing_in_one_line(triton_server, serving_clips, tmp_path):
    from client.output_file import output_lock
    from tests.helpers import assert_one_line_error, ser

    out = tmp_path / "rows.jsonl"
    with output_lock(out):
        proc = ser("predict", str(serving_clips["short"]), "--url", triton_server.grpc_url, "--output", str(out), "--resume")
    assert proc.returncode == 2
    assert_one_line_error(proc, f"error: {out}: another run is writing it")
    assert not out.exists()


def test_a_proxy_in_the_environment_does_not_catch_loopback_grpc_calls(triton_server, serving_clips, monkeypatch):
    import asyncio

    from client.async_client import AsyncSerClient
    from client.stream import StreamSession

    with socket.socket() as closed:  # a proxy address nothing listens on
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "grpc_proxy"):
        monkeypatch.setenv(name, proxy)
    url = triton_server.grpc_url  # 127.0.0.1:PORT
    with SerClient(url, model="ser_int8", timeout_s=10) as client:
        assert client.classify(serving_clips["short"]).label

    async def classify_async() -> str:
        async with AsyncSerClient(url, model="ser_int8", timeout_s=10) as client:
            return (await client.classify(serving_clips["short"])).label

    assert asyncio.run(classify_async())
    with StreamSession(url, timeout_s=10) as session:
        call = session.call(sample_rate=16_000, vad=False)
        call.send(np.full(16_000, 0.1, dtype=np.float32))
        assert call.end().call_id == call.call_id
