"""The server-side audio model ``ser`` on the real tritonserver: same answers as the client, batching, other callers.

``ser`` sends its windows to ``ser_fp32`` on the session server (conftest: fp32 first, so
answers compare within 1e-4 with the client-side path on ``ser_fp32``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from client.timeline import timeline_of
from client.triton_client import AsyncSerClient, SerClient
from tests.helpers import node_example_modules, settled

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs" / "server-side-audio.md"
EXAMPLES = REPO_ROOT / "client" / "examples"
TOL = 1e-4


@pytest.fixture(scope="module")
def reference(triton_server, serving_clips):
    """``{clip key: Prediction}`` of the client-side path on ser_fp32, the window model behind ``ser``."""
    return _client_side(triton_server, serving_clips)


def _client_side(server, clips) -> dict:
    with SerClient(server.grpc_url, model="ser_fp32") as client:
        return {k: client.classify(clips[k]) for k in ("short", "long", "very_long")}


def _same(pred, ref) -> None:
    assert pred.label == ref.label
    assert list(pred.probabilities) == list(ref.probabilities)
    np.testing.assert_allclose(list(pred.probabilities.values()), list(ref.probabilities.values()), atol=TOL)
    np.testing.assert_allclose(pred.window_probabilities, ref.window_probabilities, atol=TOL)
    np.testing.assert_array_equal(pred.window_offsets, ref.window_offsets)
    np.testing.assert_array_equal(pred.window_num_samples, ref.window_num_samples)


def test_the_stub_runs_the_audio_contract_packaged_with_the_model(triton_server, serving_repository):
    from export.audio_repository import installed_code_matches

    assert f"model 'ser': audio contract from {serving_repository / 'ser' / '1' / 'client'}" in triton_server.log_text()
    assert installed_code_matches(serving_repository / "ser")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_server_side_path_answers_as_the_client_side_path_does(runtime, runtime_server, serving_clips, reference, protocol):
    # On the native repository 'ser' sends its windows through BLS to window models on Triton's ONNX Runtime backend.
    triton_server = runtime_server
    if runtime == "native":
        native = _client_side(runtime_server, serving_clips)
        for key, ref in reference.items():  # the two runtimes' window models answer alike (reference: portable)
            np.testing.assert_allclose(list(native[key].probabilities.values()), list(ref.probabilities.values()), atol=TOL)
        reference = native
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    with SerClient(url, protocol=protocol, server_side=True) as client:
        assert client.model == "ser" and client.contract.labels == tuple(reference["short"].probabilities)
        for key, ref in reference.items():
            pred = client.classify(serving_clips[key], top_k=3)
            _same(pred, ref)
            assert pred.source == str(serving_clips[key]) and len(pred.top_k) == 3 and pred.top_k[0][0] == pred.label
            rate = client.contract.sample_rate
            assert timeline_of(pred, sample_rate=rate).segments == timeline_of(ref, sample_rate=rate).segments
    assert reference["very_long"].num_windows == 12  # more windows than one request to ser_fp32 holds (max_batch_size 8)


@pytest.mark.parametrize("fmt", ["FLAC/PCM_16", "OGG/VORBIS", "OGG/OPUS", "MP3/MPEG_LAYER_III"])
def test_every_format_the_decoder_reads_gets_the_client_side_answer(triton_server, fmt):
    import io

    import soundfile as sf

    container, subtype = fmt.split("/")
    t = np.arange(int(1.8 * 48_000)) / 48_000
    y = (0.3 * np.sin(2 * np.pi * 180 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t)) * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, 48_000, format=container, subtype=subtype)
    data = buf.getvalue()
    with SerClient(triton_server.grpc_url, model="ser_fp32") as window, SerClient(triton_server.grpc_url, server_side=True) as audio:
        _same(audio.classify(data), window.classify(data))


def test_the_answer_carries_a_timeline_of_segments_that_tile_the_clip(triton_server, serving_clips, reference):
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(triton_server.grpc_url)
    try:
        audio = tc.InferInput("audio", [1], "BYTES")
        audio.set_data_from_numpy(np.array([serving_clips["very_long"].read_bytes()], dtype=np.object_))
        flag = tc.InferInput("timeline", [1], "BOOL")
        flag.set_data_from_numpy(np.array([True]))
        result = client.infer("ser", [audio, flag])
        plain = client.infer("ser", [audio])
    finally:
        client.close()
    ref = timeline_of(reference["very_long"], sample_rate=16_000)
    labels = [s.decode() for s in result.as_numpy("segment_label")]
    starts, ends = result.as_numpy("segment_start_s"), result.as_numpy("segment_end_s")
    assert labels == [s.label for s in ref.segments] and len(labels) >= 1
    np.testing.assert_allclose(starts, [s.start_s for s in ref.segments])
    np.testing.assert_allclose(ends, [s.end_s for s in ref.segments])
    assert starts[0] == 0.0 and ends[-1] == pytest.approx(6.2) and (starts[1:] == ends[:-1]).all()
    assert result.as_numpy("duration_s").tolist() == [pytest.approx(6.2)]
    np.testing.assert_allclose(result.as_numpy("window_start_s"), ref.start_s)
    assert result.as_numpy("window_scores").shape == (12, 8)
    assert plain.as_numpy("window_scores") is None and plain.as_numpy("segment_label") is None  # only on request


def test_pcm_with_its_rate_answers_as_the_file_it_came_from(triton_server, serving_clips, reference):
    import soundfile as sf

    y, sr = sf.read(serving_clips["long"], dtype="float32")  # stereo 22.05 kHz: the client mixes, the server resamples
    with SerClient(triton_server.grpc_url, server_side=True) as client:
        pred = client.classify(y, sample_rate=sr, name="long-pcm")
        ints = client.classify((y * 32767).astype(np.int16), sample_rate=sr)
    _same(pred, reference["long"])
    assert pred.source == "long-pcm" and ints.label == pred.label and ints.source == "<array>"


def test_the_async_client_has_the_server_side_mode_too(triton_server, serving_clips, reference):
    import asyncio

    async def run():
        async with AsyncSerClient(triton_server.grpc_url, server_side=True) as client:
            return await client.classify_many([serving_clips["short"], serving_clips["silent"]], concurrency=2)

    ok, silent = asyncio.run(run())
    _same(ok.prediction, reference["short"])
    assert type(silent.error).__name__ == "SilentAudioError" and str(silent.error).startswith(str(serving_clips["silent"]))


def test_windows_of_concurrent_clips_are_batched_at_the_window_model(runtime_server, tmp_path):
    triton_server = runtime_server
    import soundfile as sf

    rng = np.random.default_rng(7)
    clips = []
    for i in range(48):  # 0.6 s each: one window per clip, so a batch of several windows merges several requests
        t = np.arange(9_600) / 16_000
        y = 0.3 * np.sin(2 * np.pi * (150 + 5 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(tmp_path / f"c{i}.wav", y.astype(np.float32), 16_000, subtype="PCM_16")
        clips.append((tmp_path / f"c{i}.wav").read_bytes())
    with SerClient(triton_server.grpc_url, model="ser_fp32") as inner, \
            SerClient(triton_server.grpc_url, server_side=True) as outer:
        before, outer_before = settled(inner.statistics), settled(outer.statistics)
        results = list(outer.classify_many(clips, concurrency=16))
        after, outer_after = settled(inner.statistics), settled(outer.statistics)
    assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok][:3]
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert outer_after.success_count - outer_before.success_count == 48
    # Read once the counts settle: the python backend counts a request just after answering it.
    assert inferences == 48, "one window per clip reached the window model"
    assert executions < inferences, f"{inferences} windows ran in {executions} executions: no batching across requests"
    print(f"\n48 clips -> window model: {inferences} inferences in {executions} executions "
          f"(mean batch {inferences / executions:.2f})")


# --- callers that are not the Python client ----------------------------------------------------


def _documented_block(marker: str) -> str:
    text = DOCS.read_text()
    m = re.search(rf"<!-- {re.escape(marker)} -->\s*```(?:bash|sh)\n(.*?)```", text, re.S)
    assert m, f"{DOCS} has no ```bash block after <!-- {marker} -->"
    return m.group(1)


def _probabilities_close(answer: dict, ref) -> None:
    assert answer["label"] == ref.label
    assert list(answer["probabilities"]) == list(ref.probabilities)
    np.testing.assert_allclose(list(answer["probabilities"].values()), list(ref.probabilities.values()), atol=TOL)


def test_the_documented_curl_command_answers_as_the_client_does(triton_server, serving_clips, reference):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed (make system-tools installs it as root)")
    block = _documented_block("test: curl")
    env = {**os.environ, "AUDIO": str(serving_clips["long"]), "URL": triton_server.http_url}
    out = subprocess.run(["bash", "-c", block], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    outputs = {o["name"]: o["data"] for o in json.loads(out.stdout)["outputs"]}
    _probabilities_close({"label": outputs["label"][0], "probabilities": dict(zip(outputs["names"], outputs["scores"], strict=True))},
                         reference["long"])
    env["AUDIO"] = str(serving_clips["garbage"])
    bad = subprocess.run(["bash", "-c", block], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 22 and "AudioDecodeError: audio: cannot decode audio" in bad.stdout  # HTTP 400, reason in the body


def test_the_tritonclient_only_example_answers_as_the_client_does(triton_server, serving_clips, reference):
    script = EXAMPLES / "classify_tritonclient.py"
    assert len([ln for ln in script.read_text().splitlines() if ln.strip() and not ln.startswith(("#", '"""', "Usage"))]) <= 14
    # no audio stack: the bundle's client, soundfile and soxr are made unimportable
    code = ("import runpy, sys; sys.modules.update(client=None, soundfile=None, soxr=None, librosa=None); "
            f"sys.argv = ['x', {str(serving_clips['very_long'])!r}, {triton_server.grpc_url!r}]; runpy.run_path({str(script)!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    _probabilities_close(json.loads(out.stdout), reference["very_long"])


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``@grpc/grpc-js`` + ``@grpc/proto-loader`` as pinned in the example's package.json, installed once under .cache/."""
    return node_example_modules()


def test_the_node_grpc_example_answers_as_the_client_does(triton_server, serving_clips, reference, node_modules, tmp_path):
    descriptors = tmp_path / "triton.desc"
    subprocess.run([sys.executable, str(EXAMPLES / "node" / "triton_descriptors.py"), str(descriptors)], check=True, timeout=60)
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    script = str(EXAMPLES / "node" / "classify.js")
    out = subprocess.run(["node", script, str(descriptors), str(serving_clips["short"]), triton_server.grpc_url],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    _probabilities_close(json.loads(out.stdout), reference["short"])
    bad = subprocess.run(["node", script, str(descriptors), str(serving_clips["silent"]), triton_server.grpc_url],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "INVALID_ARGUMENT: SilentAudioError: audio: audio is silent" in bad.stderr


# --- ser predict --server-side ------------------------------------------------------------------


def test_predict_server_side_classifies_a_directory_resumes_and_matches_the_client_side_rows(triton_server, serving_clips, tmp_path):
    from ser.cli import main

    folder = tmp_path / "clips"
    folder.mkdir()
    for key in ("short", "long", "very_long", "silent"):
        shutil.copyfile(serving_clips[key], folder / serving_clips[key].name)
    out_server, out_client = tmp_path / "server.jsonl", tmp_path / "client.jsonl"
    assert main(["predict", str(folder), "--url", triton_server.grpc_url, "--server-side", "-o", str(out_server)]) == 1
    assert main(["predict", str(folder), "--url", triton_server.grpc_url, "--model", "ser_fp32", "-o", str(out_client)]) == 1
    server = [json.loads(line) for line in out_server.read_text().splitlines()]
    client = [json.loads(line) for line in out_client.read_text().splitlines()]
    assert [r["file"] for r in server] == [r["file"] for r in client] and len(server) == 4
    for s, c in zip(server, client, strict=True):
        assert s["ok"] == c["ok"] and s.get("label") == c.get("label") and s.get("windows") == c.get("windows")
        assert s.get("error_type") == c.get("error_type") and s.get("error") == c.get("error")
        if s["ok"]:
            np.testing.assert_allclose(list(s["probabilities"].values()), list(c["probabilities"].values()), atol=2e-6 + TOL)
    assert [r["error_type"] for r in server if not r["ok"]] == ["SilentAudioError"]
    # resume: drop the last two rows, run again: only those two are classified
    lines = out_server.read_text().splitlines(keepends=True)
    out_server.write_text("".join(lines[:2]))
    t0 = time.monotonic()
    assert main(["predict", str(folder), "--url", triton_server.grpc_url, "--server-side", "-o", str(out_server), "--resume"]) == 1
    assert time.monotonic() - t0 < 60
    again = [json.loads(line) for line in out_server.read_text().splitlines()]
    assert [r["file"] for r in again] == [r["file"] for r in server]
    assert [r.get("label") for r in again] == [r.get("label") for r in server]


def test_a_server_side_client_refuses_a_window_model_and_window_calls(triton_server):
    from client.errors import ConfigError, ContractError

    with pytest.raises(ContractError, match="not a server-side audio model"):
        SerClient(triton_server.grpc_url, model="ser_fp32", server_side=True).open()
    with SerClient(triton_server.grpc_url, server_side=True) as client, pytest.raises(ConfigError, match="sends clips, not windows"):
        client.infer_windows(np.zeros((1, 16_000), np.float32), [16_000])


# --- the speech gate: ``ser-vad`` (conftest SERVING_VAD_MODEL) is ``ser`` with silero-vad before the window model ---


@pytest.fixture(scope="module")
def speech_in_silence() -> np.ndarray:
    """2 s of faint noise, 3 s of generated speech (silero-vad calls most of it speech), 2 s of faint noise; 16 kHz."""
    from loadtest.payload import generated_clips

    rng = np.random.default_rng(0)
    quiet = lambda: (0.003 * rng.standard_normal(32_000)).astype(np.float32)  # noqa: E731 - above the silence peak
    return np.concatenate([quiet(), generated_clips(3, 0)[2][1], quiet()]).astype(np.float32)


def _fp32_inferences(server) -> int:
    """The window model's inference count once it settles (a request is counted just after its answer)."""
    with SerClient(server.grpc_url, model="ser_fp32") as client:
        return settled(client.statistics).inference_count


def _expected_speech(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(window offsets, passes [k] bool)``: the gate's verdict, from the installed silero-vad and the client's windows."""
    from client.audio import make_windows
    from client.vad import DEFAULT_VAD_MIN_SPEECH_MS, DEFAULT_VAD_THRESHOLD, open_vad, window_speech
    from export.audio_repository import installed_vad_model

    windows = make_windows(y, window_samples=16_000, hop_samples=8_000)
    _, passes = window_speech(open_vad(installed_vad_model()), y, windows.offsets, windows.offsets + windows.num_samples,
                              threshold=DEFAULT_VAD_THRESHOLD, min_speech_ms=DEFAULT_VAD_MIN_SPEECH_MS)
    return windows.offsets, passes


def test_the_speech_gate_classifies_only_speech_windows_and_marks_the_silence_no_speech(triton_server, speech_in_silence):
    from client.audio import aggregate
    from tests.conftest import SERVING_VAD_MODEL

    offsets, passes = _expected_speech(speech_in_silence)
    assert not passes[0] and not passes[-1] and passes.any(), "silero-vad did not hear speech only in the middle"
    with SerClient(triton_server.grpc_url, server_side=True) as plain:
        every = plain.classify(speech_in_silence, sample_rate=16_000)
    before = _fp32_inferences(triton_server)
    with SerClient(triton_server.grpc_url, model=SERVING_VAD_MODEL, server_side=True) as client:
        pred = client.classify(speech_in_silence, sample_rate=16_000, name="speech-in-silence")
    assert _fp32_inferences(triton_server) - before == int(passes.sum())  # the window model saw the speech windows only
    np.testing.assert_array_equal(pred.window_offsets, offsets)
    scored = ~np.isnan(pred.window_probabilities).all(axis=1)
    np.testing.assert_array_equal(scored, passes)
    np.testing.assert_allclose(pred.window_probabilities[passes], every.window_probabilities[passes], atol=TOL)
    expected = aggregate(every.window_probabilities[passes], every.window_num_samples[passes])
    np.testing.assert_allclose(list(pred.probabilities.values()), expected, atol=TOL)  # the speech windows' scores only
    segments = timeline_of(pred, sample_rate=16_000).segments
    assert segments[0].label == segments[-1].label == "no_speech" and segments[0].start_s == 0.0
    assert {s.label for s in segments[1:-1]} <= set(pred.probabilities) and len(segments) >= 3
    assert segments[-1].end_s == pytest.approx(speech_in_silence.size / 16_000)


def test_the_gated_timeline_over_http_json_is_strict_json_with_zero_rows_for_windows_held_back(triton_server,
                                                                                              speech_in_silence):
    import urllib.request

    from tests.conftest import SERVING_VAD_MODEL

    _, passes = _expected_speech(speech_in_silence)
    body = {"inputs": [{"name": "pcm", "shape": [speech_in_silence.size], "datatype": "FP32", "data": speech_in_silence.tolist()},
                       {"name": "sample_rate", "shape": [1], "datatype": "INT32", "data": [16_000]},
                       {"name": "timeline", "shape": [1], "datatype": "BOOL", "data": [True]}]}
    request = urllib.request.Request(f"http://{triton_server.http_url}/v2/models/{SERVING_VAD_MODEL}/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read().decode()

    def refuse(constant: str):  # what JSON.parse in Node.js or Go's encoding/json do with NaN
        raise ValueError(f"{constant} is not JSON")

    outputs = {o["name"]: o for o in json.loads(text, parse_constant=refuse)["outputs"]}
    rows = np.array(outputs["window_scores"]["data"], dtype=np.float32).reshape(outputs["window_scores"]["shape"])
    np.testing.assert_array_equal(rows.sum(axis=1) > 0.5, passes)  # a classified row sums to 1, a held-back one is 0
    assert not rows[~passes].any() and outputs["segment_label"]["data"][0] == "no_speech"


def test_vad_false_in_a_request_skips_the_gate_and_answers_as_the_model_without_one(triton_server, speech_in_silence):
    import tritonclient.grpc as tc

    from tests.conftest import SERVING_VAD_MODEL

    def infer(model: str, **flags):
        pcm = tc.InferInput("pcm", [speech_in_silence.size], "FP32")
        pcm.set_data_from_numpy(speech_in_silence)
        rate = tc.InferInput("sample_rate", [1], "INT32")
        rate.set_data_from_numpy(np.array([16_000], dtype=np.int32))
        extra = []
        for name, value in flags.items():
            extra.append(tc.InferInput(name, [1], "BOOL"))
            extra[-1].set_data_from_numpy(np.array([value]))
        return client.infer(model, [pcm, rate, *extra])

    client = tc.InferenceServerClient(triton_server.grpc_url)
    try:
        plain = infer("ser", timeline=True)
        before = _fp32_inferences(triton_server)
        ungated = infer(SERVING_VAD_MODEL, timeline=True, vad=False)
        sent = _fp32_inferences(triton_server) - before
    finally:
        client.close()
    from client.audio import make_windows

    windows = plain.as_numpy("window_scores")
    count = len(make_windows(speech_in_silence, window_samples=16_000, hop_samples=8_000))
    assert sent == windows.shape[0] == count and not np.isnan(ungated.as_numpy("window_scores")).any()
    np.testing.assert_allclose(ungated.as_numpy("scores"), plain.as_numpy("scores"), atol=TOL)
    np.testing.assert_allclose(ungated.as_numpy("window_scores"), windows, atol=TOL)
    assert ungated.as_numpy("segment_label").tolist() == plain.as_numpy("segment_label").tolist()
    assert b"no_speech" not in ungated.as_numpy("segment_label").tolist()
