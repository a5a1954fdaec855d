"""Live calls against the real tritonserver: the streaming model ``ser-stream`` in both runtimes.

The session servers' ``ser-stream`` (conftest ``_write_stream_model``) sends its windows to
``ser_fp32`` through BLS; its limits are conftest's ``SERVING_STREAM_SETTINGS``. Audio is the
load test's generated speech (silero-vad calls most of it speech) and plain silence.
"""

from __future__ import annotations

import numpy as np
import pytest

from client.stream import StreamSession
from client.triton_client import SerClient


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 3 s of generated speech at 16 kHz (float32), most of it speech to silero-vad."""
    from loadtest.payload import generated_clips

    return generated_clips(3, 0)[2][1]


def chunks(y: np.ndarray, size: int):
    return [y[i:i + size] for i in range(0, y.size, size)]


def stream_call(session: StreamSession, y: np.ndarray, *, sample_rate: int = 16_000, chunk: int = 1600, **options):
    call = session.call(sample_rate=sample_rate, **options)
    for part in chunks(y, chunk):
        call.send(part)
    return call.end()


def test_a_call_gets_an_update_every_hop_and_its_segments_at_end(runtime_server, speech):
    with StreamSession(runtime_server.grpc_url) as session:
        result = stream_call(session, speech)
    ends = [u.end_s for u in result.updates]
    duration = speech.size / 16_000
    assert ends == pytest.approx([0.5 * k for k in range(1, int(duration / 0.5) + 1)] + [duration])
    assert all(u.end_s - u.start_s <= 1.0 + 1e-9 for u in result.updates)
    heard = [u for u in result.updates if u.speech]
    assert heard, "silero-vad heard no speech in generated speech"
    for u in heard:
        assert sum(u.scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert sum(u.smoothed.values()) == pytest.approx(1.0, abs=1e-4)
        assert u.label in u.scores
    assert result.duration_s == pytest.approx(duration)
    assert result.segments[0].start_s == 0.0 and result.segments[-1].end_s == pytest.approx(duration)
    for a, b in zip(result.segments, result.segments[1:], strict=False):
        assert a.end_s == pytest.approx(b.start_s) and a.label != b.label
    assert {s.label for s in result.segments} <= set(session.labels) | {"no_speech"}


def test_window_scores_are_the_window_models_for_the_same_audio(triton_server, speech):
    """With the gate off, every update's raw scores are ser_fp32's for that span of the call."""
    with StreamSession(triton_server.grpc_url) as session:
        result = stream_call(session, speech, chunk=1234, vad=False)
    spans = [(round(u.start_s * 16_000), round(u.end_s * 16_000)) for u in result.updates]
    waves = np.zeros((len(spans), 16_000), dtype=np.float32)
    for i, (a, b) in enumerate(spans):
        waves[i, : b - a] = speech[a:b]
    with SerClient(triton_server.grpc_url, model="ser_fp32") as client:
        _, expected = client.infer_windows(waves, np.array([b - a for a, b in spans]))
    got = np.array([[u.scores[name] for name in session.labels] for u in result.updates])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    smoothed = expected[0]
    for row, update in zip(expected[1:], result.updates[1:], strict=True):  # exponential smoothing, weight 0.5 on the newest
        smoothed = 0.5 * row + 0.5 * smoothed
        np.testing.assert_allclose([update.smoothed[n] for n in session.labels], smoothed, atol=1e-4)


def test_int16_pcm_at_8_khz_is_resampled_and_timed_in_the_calls_seconds(runtime_server, speech):
    import soxr

    y8 = soxr.resample(speech, 16_000, 8_000)
    pcm = np.round(np.clip(y8, -1, 1) * 32767).astype(np.int16)
    with StreamSession(runtime_server.grpc_url) as session:
        result = stream_call(session, pcm, sample_rate=8_000, chunk=333)
    assert result.duration_s == pytest.approx(pcm.size / 8_000, abs=2e-3)
    assert result.updates[0].end_s == pytest.approx(0.5)
    assert any(u.speech for u in result.updates)


def test_silence_gets_no_speech_updates_and_never_reaches_the_window_model(triton_server):
    rng = np.random.default_rng(0)
    quiet = np.concatenate([np.zeros(16_000), 0.003 * rng.standard_normal(16_000)]).astype(np.float32)
    with SerClient(triton_server.grpc_url, model="ser_fp32") as client:
        before = client.statistics().inference_count
        with client.stream() as session:
            result = stream_call(session, quiet)
        after = client.statistics().inference_count
    assert [u.end_s for u in result.updates] == [0.5, 1.0, 1.5, 2.0]
    assert all(not u.speech and u.scores is None and u.label == "" for u in result.updates)
    assert [s.label for s in result.segments] == ["no_speech"]
    assert after == before


def test_a_call_may_ask_for_its_own_hop(triton_server, speech):
    with StreamSession(triton_server.grpc_url) as session:
        result = stream_call(session, speech[:16_000], hop_ms=250)
    assert [u.end_s for u in result.updates] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_many_calls_on_one_stream_each_get_their_own_updates_in_order(runtime_server, speech):
    parts = chunks(speech, 1600)
    with StreamSession(runtime_server.grpc_url) as session:
        solo = stream_call(session, speech, vad=False)
        calls = [session.call(sample_rate=16_000, vad=False) for _ in range(4)]
        for part in parts:  # interleaved: each chunk of each call in turn
            for call in calls:
                call.send(part)
        results = [call.end() for call in calls]
    for result in results:
        assert [u.end_s for u in result.updates] == [u.end_s for u in solo.updates]
        assert [u.label for u in result.updates] == [u.label for u in solo.updates]
        assert result.segments == solo.segments


def test_windows_of_concurrent_calls_are_batched_at_the_window_model(triton_server, speech):
    with SerClient(triton_server.grpc_url, model="ser_fp32") as client:
        before = client.statistics()
        with client.stream() as session:
            calls = [session.call(sample_rate=16_000, vad=False) for _ in range(6)]
            for part in chunks(speech, 8000):
                for call in calls:
                    call.send(part)
            for call in calls:
                call.end()
        after = client.statistics()
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == 6 * (int(speech.size / 8000) + 1)
    assert executions < inferences


def test_updates_arrive_while_the_call_is_still_sending(triton_server, speech):
    with StreamSession(triton_server.grpc_url) as session:
        call = session.call(sample_rate=16_000, vad=False)
        call.send(speech[:8_000])
        first = next(call.updates(timeout_s=10))
        assert first.end_s == pytest.approx(0.5) and first.label
        call.send(speech[8_000:24_000])
        result = call.end()
    assert [u.end_s for u in result.updates] == pytest.approx([0.5, 1.0, 1.5])
