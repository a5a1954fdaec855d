"""The streaming model's call logic without a server: windows every hop, ring buffer, gate, smoothing, hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from client.contract import ModelContract
from client.errors import AudioFormatError, ConfigError, NonFiniteAudioError
from client.stream_service import CallState, StreamSettings, read_chunk
from client.vad import NO_SPEECH, VAD_FRAME, VadTrack

LABELS = ("angry", "calm", "happy")
CONTRACT = ModelContract(labels=LABELS, window_samples=16_000, hop_samples=8_000, variant="fp32", source="test")


def call(**settings) -> CallState:
    s = StreamSettings(**settings)
    return CallState(1, sample_rate=16_000, contract=CONTRACT, settings=s, hop_samples=s.hop_samples(CONTRACT), vad=None)


def ramp(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n) % 1000 / 1000).astype(np.float32)


def test_windows_end_every_hop_span_at_most_w_and_end_flushes_the_rest():
    state = call()
    windows = []
    sent = 0
    for size in (3000, 5000, 7, 9000, 4000, 1993):  # 23,000 samples in odd chunks
        windows += state.push(ramp(size, sent))
        sent += size
    windows += state.finish()
    assert [(w.start, w.end) for w in windows] == [(0, 8000), (0, 16000), (7000, 23000)]
    full = ramp(23_000)
    for w in windows:
        np.testing.assert_array_equal(w.waveform[: w.num_samples], full[w.start:w.end])
        assert not w.waveform[w.num_samples:].any()


def test_the_buffer_holds_one_window_plus_a_chunk_however_long_the_call():
    state = call()
    for i in range(200):  # 20 s in 100 ms chunks
        state.push(ramp(1600, i * 1600))
        assert state.buffered_samples <= CONTRACT.window_samples + 1600
    assert state.received == 320_000


def test_a_call_of_no_audio_has_no_window_and_no_segment():
    state = call()
    assert state.finish() == [] and state.segments() == ()


def test_smoothing_and_a_label_that_changes_only_after_the_hysteresis():
    state = call(smoothing=0.5, hysteresis=2)
    windows = state.push(ramp(16_000 * 3))
    p = {"angry": [0.8, 0.1, 0.1], "calm": [0.0, 1.0, 0.0]}
    seen = [state.update(w, np.array(p[k], np.float32)) for w, k in zip(
        windows, ["angry", "calm", "calm", "calm", "angry", "calm"], strict=True)]
    labels = [t["label"][0, 0].decode() for t in seen]
    # smoothed after each: angry .8 -> calm leads .55 (1st lead) -> .775 (2nd: label changes) -> ... -> angry .49 vs calm .44
    assert labels == ["angry", "angry", "calm", "calm", "calm", "calm"]
    np.testing.assert_allclose(seen[1]["smoothed"][0], [0.4, 0.55, 0.05], atol=1e-6)
    np.testing.assert_allclose(seen[1]["scores"][0], p["calm"])
    assert [s.label for s in state.segments()] == ["angry", "calm"]


def test_windows_the_gate_held_back_are_no_speech_and_leave_the_smoothing_alone():
    state = call()
    windows = state.push(ramp(16_000 * 2))
    first = state.update(windows[0], np.array([0.2, 0.7, 0.1], np.float32))
    gap = state.update(windows[1], None)
    assert gap["scores"].shape == (1, 0) and gap["label"][0, 0] == b"calm"
    np.testing.assert_array_equal(gap["smoothed"], first["smoothed"])
    state.update(windows[2], np.array([0.2, 0.7, 0.1], np.float32))
    state.update(windows[3], np.array([0.2, 0.7, 0.1], np.float32))
    segments = state.segments()
    assert [s.label for s in segments] == ["calm", NO_SPEECH, "calm"]
    assert segments[0].start_s == 0.0 and segments[-1].end_s == 2.0
    assert all(a.end_s == b.start_s for a, b in zip(segments, segments[1:], strict=False))


def test_the_detector_sees_whole_frames_and_a_window_needs_its_minimum_of_speech():
    calls = []

    def loud_frames(x, state):  # a fake detector: speech where the frame is loud
        calls.append(x.shape)
        return np.array([[float(np.abs(x[0, 64:]).mean() > 0.1)]], np.float32), state + 1

    settings = StreamSettings(vad_min_speech_ms=200)
    state = CallState(1, sample_rate=16_000, contract=CONTRACT, settings=settings, hop_samples=8000, vad=loud_frames)
    quiet, loud = np.zeros(8000, np.float32), np.full(8000, 0.5, np.float32)
    windows = state.push(quiet) + state.push(np.concatenate([loud[:2000], quiet[:6000]])) + state.push(loud)
    assert all(shape == (1, 64 + VAD_FRAME) for shape in calls) and len(calls) == 24000 // VAD_FRAME
    assert [w.speech for w in windows] == [False, False, True]
    assert windows[1].speech_ratio == pytest.approx(4 / 31, abs=0.04)  # ~2000 loud samples: under 200 ms


def test_vad_track_forgets_old_frames():
    track = VadTrack(lambda x, s: (np.array([[0.9]], np.float32), s), threshold=0.5)
    for _ in range(100):
        track.push(np.zeros(16_000, np.float32))
        track.forget_before(track.frames_seen * VAD_FRAME - 16_000)
    assert track.frames_held <= 16_000 // VAD_FRAME + 1
    assert track.frames_seen == 100 * 16_000 // VAD_FRAME


def test_a_call_is_resampled_as_it_streams():
    s = StreamSettings()
    state = CallState(1, sample_rate=8_000, contract=CONTRACT, settings=s, hop_samples=8000, vad=None)
    windows = []
    for _ in range(10):
        windows += state.push(np.zeros(800, np.float32) + 0.1)
    windows += state.finish()
    assert state.received == 16_000 and [w.end for w in windows] == [8000, 16000]


def test_chunks_are_read_as_float_and_refused_naming_the_call():
    np.testing.assert_allclose(read_chunk(None, np.array([-32768, 16384], np.int16), call_id=5, sample_rate=8000,
                                          max_chunk_s=1), [-1.0, 0.5])
    with pytest.raises(NonFiniteAudioError, match="call 5"):
        read_chunk(np.array([np.inf], np.float32), None, call_id=5, sample_rate=8000, max_chunk_s=1)
    with pytest.raises(AudioFormatError, match="max_chunk_s=1"):
        read_chunk(np.zeros(8001, np.float32), None, call_id=5, sample_rate=8000, max_chunk_s=1)
    with pytest.raises(ConfigError, match="not both"):
        read_chunk(np.zeros(1, np.float32), np.zeros(1, np.int16), call_id=5, sample_rate=8000, max_chunk_s=1)


def test_a_call_past_its_longest_duration_is_refused():
    state = call(max_call_s=1.0)
    state.push(np.zeros(16_000, np.float32))
    with pytest.raises(AudioFormatError, match="max_call_s=1"):
        state.push(np.zeros(1, np.float32))


def test_settings_round_trip_through_parameters_and_refuse_nonsense():
    s = StreamSettings(hop_ms=250, smoothing=0.3, hysteresis=3, max_calls=9, vad="off", idle_timeout_s=12.5)
    assert StreamSettings.from_parameters(s.to_parameters()) == s
    assert s.hop_samples(CONTRACT) == 4000 and StreamSettings().hop_samples(CONTRACT) == 8000
    for bad in ({"smoothing": 0.0}, {"hysteresis": 0}, {"vad": "webrtc"}, {"idle_timeout_s": 0.01}, {"max_calls": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            StreamSettings(**bad)
    with pytest.raises(ConfigError, match="hop_ms=50"):
        StreamSettings().hop_samples(CONTRACT, 50)
    with pytest.raises(ConfigError, match="not a number"):
        StreamSettings.from_parameters({"ser.stream.max_calls": "many"})


def test_the_clip_gate_lets_a_window_shorter_than_the_speech_it_asks_for_through_when_all_of_it_is_speech():
    from client.vad import window_speech

    def speech_from(first_loud: int):  # silero's interface; frame i counts as speech from first_loud on
        seen = {"frames": 0}

        def run(x, state):
            seen["frames"] += 1
            return np.array([[0.9 if seen["frames"] > first_loud else 0.1]], np.float32), state
        return run

    short = np.zeros(2_400, np.float32)  # 0.15 s: 4 whole frames (128 ms), under the 200 ms a window needs
    speech, passes = window_speech(speech_from(0), short, np.array([0]), np.array([2_400]), threshold=0.5, min_speech_ms=200)
    assert speech.tolist() == [2_048] and passes.tolist() == [True]
    speech, passes = window_speech(speech_from(1), short, np.array([0]), np.array([2_400]), threshold=0.5, min_speech_ms=200)
    assert speech.tolist() == [1_536] and passes.tolist() == [False]  # one frame not speech: 96 ms is not enough
    long = np.zeros(16_000, np.float32)  # a 1 s window needs its 200 ms, whatever share that is
    speech, passes = window_speech(speech_from(25), long, np.array([0]), np.array([16_000]), threshold=0.5, min_speech_ms=200)
    assert speech.tolist() == [6 * 512] and passes.tolist() == [False]
