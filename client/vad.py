"""silero-vad over a stream of 16 kHz audio: which 32 ms frames are speech, and which windows hold enough of it.

The detector is silero-vad's ONNX file (MIT; the PyPI package ``silero-vad``), copied into a
repository by the streaming model's writer (and by the audio model's, when its gate is on); the
streaming model runs it on every call, the audio model once over each clip (:func:`window_speech`).
This module holds the frame bookkeeping in plain numpy; the ONNX Runtime session is opened by
:func:`open_vad`, which imports ONNX Runtime only when called.

The file's interface at 16 kHz: ``input`` float32 ``[B, 64 + 512]`` (the previous frame's last 64
samples, then 512 new ones), ``state`` float32 ``[2, B, 128]`` (zeros at start), ``sr`` int64
scalar 16000; outputs ``output`` ``[B, 1]`` (the frame's speech probability) and ``stateN``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

#: silero-vad's frame at 16 kHz: 512 new samples after the previous frame's last 64.
VAD_FRAME, VAD_CONTEXT, VAD_RATE = 512, 64, 16_000
#: The file the writers copy beside a model.
VAD_FILENAME = "silero_vad.onnx"
#: Speech probability from which a frame counts as speech.
DEFAULT_VAD_THRESHOLD = 0.5
#: Speech (ms of speech frames) a window needs to go to the emotion model.
DEFAULT_VAD_MIN_SPEECH_MS = 200
#: Segment label of windows the detector held back.
NO_SPEECH = "no_speech"
#: The detector settings' values: silero-vad, or no gate.
VAD_SILERO, VAD_OFF = "silero", "off"

#: ``run(frames [B, 576] float32, state [2, B, 128] float32) -> (probs [B, 1], state)``: silero-vad.
VadRunner = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray]"]


class VadTrack:
    """silero-vad over one call's audio, frame by frame, at 16 kHz; keeps the recent frames' speech flags."""

    def __init__(self, run: VadRunner, *, threshold: float) -> None:
        self._run = run
        self._threshold = threshold
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(VAD_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._first = 0  # frame index of _speech[0]
        self._speech = np.zeros(0, dtype=bool)

    def push(self, y: np.ndarray) -> None:
        """Run the detector over every whole frame of ``y`` (16 kHz float32) and what was pending."""
        data = np.concatenate([self._pending, y]) if self._pending.size else y
        count = data.size // VAD_FRAME
        flags = np.empty(count, dtype=bool)
        for i in range(count):
            frame = data[i * VAD_FRAME:(i + 1) * VAD_FRAME]
            x = np.concatenate([self._context, frame])[None, :]
            prob, self._state = self._run(x, self._state)
            flags[i] = float(np.asarray(prob).reshape(-1)[0]) >= self._threshold
            self._context = frame[-VAD_CONTEXT:]
        self._pending = data[count * VAD_FRAME:].copy()
        self._speech = np.concatenate([self._speech, flags])

    def speech_ratio(self, start: int, end: int) -> tuple[float, int]:
        """``(share of speech frames, speech samples)`` among the frames whose centre lies in ``[start, end)``."""
        centres = (np.arange(self._speech.size) + self._first) * VAD_FRAME + VAD_FRAME // 2
        inside = self._speech[(centres >= start) & (centres < end)]
        if inside.size == 0:
            return 0.0, 0
        return float(inside.mean()), int(inside.sum()) * VAD_FRAME

    @property
    def frames_held(self) -> int:
        """Frames whose speech flags are kept (from the oldest a window may still ask for)."""
        return int(self._speech.size)

    @property
    def frames_seen(self) -> int:
        """Frames run through the detector so far."""
        return self._first + int(self._speech.size)

    def forget_before(self, sample: int) -> None:
        """Drop the flags of frames that end before ``sample`` (no window will ask for them again)."""
        drop = min(max(0, sample // VAD_FRAME - self._first), self._speech.size)
        self._speech = self._speech[drop:]
        self._first += drop

    def min_speech_samples(self, min_speech_ms: int) -> int:
        """Samples of speech frames a window needs: ``min_speech_ms`` at 16 kHz, at least 1."""
        return max(1, min_speech_ms * VAD_RATE // 1000)


def vad_settings_problems(vad: str, threshold: float, min_speech_ms: int) -> list[str]:
    """Which of a model's detector settings are out of range (by field name: ``vad``, ``vad_threshold``...)."""
    checks = [("vad", vad in (VAD_SILERO, VAD_OFF)), ("vad_threshold", 0.0 < threshold < 1.0),
              ("vad_min_speech_ms", min_speech_ms >= 0)]
    return [name for name, ok in checks if not ok]


def window_speech(run: VadRunner, samples: np.ndarray, starts: np.ndarray, ends: np.ndarray, *, threshold: float,
                  min_speech_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """The detector over one whole clip, once: each window's speech and whether it is let through.

    Args:
        run: silero-vad (:func:`open_vad`).
        samples: ``[n]`` float32, the clip at 16 kHz.
        starts: ``[k]`` int, where each window's valid samples begin in the clip.
        ends: ``[k]`` int, where they end (exclusive).
        threshold: speech probability from which a 32 ms frame is speech.
        min_speech_ms: speech a window needs to pass (as the streaming model's gate).

    Returns:
        ``(speech_samples [k] int64, passes [k] bool)``: samples of speech frames whose centre lies in
        each window (:meth:`VadTrack.speech_ratio`), and whether that is at least ``min_speech_ms``, or,
        for a window too short to hold that much, whether every one of its frames is speech.
    """
    track = VadTrack(run, threshold=threshold)
    track.push(np.asarray(samples, dtype=np.float32).reshape(-1))
    ratios = [track.speech_ratio(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]
    share = np.array([r[0] for r in ratios], dtype=np.float64)
    speech = np.array([r[1] for r in ratios], dtype=np.int64)
    # A clip shorter than min_speech_ms (0.1 s is accepted) could never pass otherwise, however clearly spoken.
    return speech, (speech >= track.min_speech_samples(min_speech_ms)) | ((share == 1.0) & (speech > 0))


def open_vad(path: str | Path) -> VadRunner:
    """silero-vad on one ONNX Runtime thread: ``run(x [1, 576], state [2, 1, 128]) -> (prob [1, 1], state)``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    rate = np.array(VAD_RATE, dtype=np.int64)

    def run(x: np.ndarray, state: np.ndarray):
        prob, new_state = session.run(["output", "stateN"], {"input": x, "state": state, "sr": rate})
        return prob, new_state

    return run
