"""The streaming model (``ser-stream``): its interface, its settings and what it does with one call.

One call is one Triton *sequence* (``sequence_batching``, correlation id = the call):
the caller sends PCM in chunks of any size while it speaks; the model keeps the
call's recent audio and answers an *update* every hop, and at END the call's
segments. This module is the server half of that protocol in plain numpy, so the
python-backend model (``export/served/stream_model.py``), the client
(:mod:`client.stream`) and the tests share one statement of it. Windows are
classified by the window model exactly as clips are (BLS, :mod:`client.audio`'s
contract); segments come from :mod:`client.timeline`.

Per request (Triton tensor names; dims without the batch dimension):

* control (sequence batcher): ``START``/``END`` INT32 ``[1]`` (0/1), ``CORRID`` UINT64 ``[1]``;
* ``pcm`` FP32 ``[n]`` (mono, [-1, 1]) or ``pcm_s16`` INT16 ``[n]`` (mono 16-bit PCM):
  this chunk's samples, any n >= 0; both optional (START or END may carry none);
* at START: ``sample_rate`` INT32 ``[1]`` (Hz, required), ``hop_ms`` INT32 ``[1]`` and
  ``vad`` BOOL ``[1]`` (optional: this call's hop and voice-activity gate);
* at END: ``cancel`` BOOL ``[1]`` (optional): drop the call without a result.

Responses (decoupled: zero or more per request; outputs ``[1, ...]``):

* ``event`` BYTES: ``update`` (one window), ``end`` (the call's result) or ``cancelled``;
* ``call_id`` UINT64; ``window_start_s``/``window_end_s`` FP64: the window in the call's time;
* ``speech`` BOOL, ``speech_ratio`` FP32: whether the voice-activity detector let the window through;
* ``names`` BYTES ``[N]``, ``scores`` FP32 ``[N]`` (raw probabilities; ``[0]`` for a window
  without speech), ``smoothed`` FP32 ``[N]`` (exponential smoothing over speech windows),
  ``label`` BYTES: the held label (changes only after ``hysteresis`` updates, "" before the first);
* with ``end``: ``segment_label`` BYTES ``[m]``, ``segment_start_s``/``segment_end_s`` FP64 ``[m]``,
  ``duration_s`` FP64: label runs tiling the call (``no_speech`` where the gate closed).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np

from .audio_service import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    parameters_from_fields,
    parameters_to_fields,
)
from .contract import PARAM_PREFIX, ModelContract
from .errors import AudioFormatError, ConfigError, NonFiniteAudioError
from .timeline import Segment, boundaries, merge_segments
from .vad import (
    DEFAULT_VAD_MIN_SPEECH_MS,
    DEFAULT_VAD_THRESHOLD,
    NO_SPEECH,
    VAD_RATE,
    VAD_SILERO,
    VadRunner,
    VadTrack,
    vad_settings_problems,
)

#: Default name of the streaming model in a repository.
STREAM_MODEL = "ser-stream"
STREAM_PARAM_PREFIX = PARAM_PREFIX + "stream."

CONTROL_START, CONTROL_END, CONTROL_CORRID = "START", "END", "CORRID"
INPUT_PCM = "pcm"
INPUT_PCM_S16 = "pcm_s16"
INPUT_SAMPLE_RATE = "sample_rate"
INPUT_HOP_MS = "hop_ms"
INPUT_VAD = "vad"
INPUT_CANCEL = "cancel"
OUTPUT_EVENT = "event"
OUTPUT_CALL_ID = "call_id"
OUTPUT_WINDOW_START = "window_start_s"
OUTPUT_WINDOW_END = "window_end_s"
OUTPUT_SPEECH = "speech"
OUTPUT_SPEECH_RATIO = "speech_ratio"
OUTPUT_NAMES = "names"
OUTPUT_SCORES = "scores"
OUTPUT_SMOOTHED = "smoothed"
OUTPUT_LABEL = "label"
OUTPUT_SEGMENT_LABEL = "segment_label"
OUTPUT_SEGMENT_START = "segment_start_s"
OUTPUT_SEGMENT_END = "segment_end_s"
OUTPUT_DURATION = "duration_s"
EVENT_UPDATE, EVENT_END, EVENT_CANCELLED = "update", "end", "cancelled"

#: ``(name, config data type, dims)`` of every data input (all optional; ``pcm``/``pcm_s16`` ragged).
INPUTS = (
    (INPUT_PCM, "TYPE_FP32", (-1,)),
    (INPUT_PCM_S16, "TYPE_INT16", (-1,)),
    (INPUT_SAMPLE_RATE, "TYPE_INT32", (1,)),
    (INPUT_HOP_MS, "TYPE_INT32", (1,)),
    (INPUT_VAD, "TYPE_BOOL", (1,)),
    (INPUT_CANCEL, "TYPE_BOOL", (1,)),
)
OUTPUTS = (
    (OUTPUT_EVENT, "TYPE_STRING", (1,)),
    (OUTPUT_CALL_ID, "TYPE_UINT64", (1,)),
    (OUTPUT_WINDOW_START, "TYPE_FP64", (1,)),
    (OUTPUT_WINDOW_END, "TYPE_FP64", (1,)),
    (OUTPUT_SPEECH, "TYPE_BOOL", (1,)),
    (OUTPUT_SPEECH_RATIO, "TYPE_FP32", (1,)),
    (OUTPUT_NAMES, "TYPE_STRING", (-1,)),
    (OUTPUT_SCORES, "TYPE_FP32", (-1,)),
    (OUTPUT_SMOOTHED, "TYPE_FP32", (-1,)),
    (OUTPUT_LABEL, "TYPE_STRING", (1,)),
    (OUTPUT_SEGMENT_LABEL, "TYPE_STRING", (-1,)),
    (OUTPUT_SEGMENT_START, "TYPE_FP64", (-1,)),
    (OUTPUT_SEGMENT_END, "TYPE_FP64", (-1,)),
    (OUTPUT_DURATION, "TYPE_FP64", (1,)),
)



@dataclass(frozen=True)
class StreamSettings:
    """How the streaming model treats calls (config parameters ``ser.stream.*``).

    Attributes:
        hop_ms: default time between updates, ms (0: the window model's hop).
        min_hop_ms: shortest hop a call may ask for at START, ms (the longest is the window).
        smoothing: weight of the newest window in the exponential smoothing, (0, 1]; 1 is none.
        hysteresis: updates in a row another class must lead the smoothed scores before the label changes (>= 1).
        max_calls: concurrent calls per model instance; a START beyond them is refused.
        max_call_s: longest call, seconds of audio; the chunk that passes it ends the call with an error.
        idle_timeout_s: a call without a chunk for this long is dropped (also Triton's
            ``max_sequence_idle_microseconds``, so both forget it together).
        max_chunk_s: longest single chunk, seconds of audio (larger chunks are refused).
        vad: ``silero`` (voice-activity gate on by default) or ``off`` (no gate: every window is classified).
        vad_threshold: silero speech probability from which a 32 ms frame counts as speech.
        vad_min_speech_ms: speech a window needs (ms of speech frames) to go to the emotion model.
    """

    hop_ms: int = 0
    min_hop_ms: int = 100
    smoothing: float = 0.5
    hysteresis: int = 2
    max_calls: int = 64
    max_call_s: float = 3600.0
    idle_timeout_s: float = 30.0
    max_chunk_s: float = 10.0
    vad: str = VAD_SILERO
    vad_threshold: float = DEFAULT_VAD_THRESHOLD
    vad_min_speech_ms: int = DEFAULT_VAD_MIN_SPEECH_MS

    def __post_init__(self) -> None:
        checks = [
            ("hop_ms", self.hop_ms >= 0), ("min_hop_ms", self.min_hop_ms >= 1),
            ("smoothing", 0.0 < self.smoothing <= 1.0), ("hysteresis", self.hysteresis >= 1),
            ("max_calls", self.max_calls >= 1), ("max_call_s", 0 < self.max_call_s <= 86_400),
            ("idle_timeout_s", 0.1 <= self.idle_timeout_s <= 3600), ("max_chunk_s", 0 < self.max_chunk_s <= 600),
        ]
        bad = [name for name, ok in checks if not ok] + vad_settings_problems(self.vad, self.vad_threshold,
                                                                              self.vad_min_speech_ms)
        if bad:
            raise ConfigError(f"stream settings {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}: outside the "
                              "allowed range (hop/min_hop/hysteresis/max_calls >= 1, 0 < smoothing <= 1, "
                              "0 < vad_threshold < 1, vad silero|off, idle 0.1..3600 s)")

    def hop_samples(self, contract: ModelContract, hop_ms: int | None = None) -> int:
        """The hop in samples at the model's rate: ``hop_ms`` (a call's), else ours, else the contract's.

        Raises:
            ConfigError: a hop outside ``[min_hop_ms, window]``, naming it.
        """
        ms = self.hop_ms if hop_ms is None else int(hop_ms)
        if ms == 0:
            return contract.hop_samples
        hop = ms * contract.sample_rate // 1000
        window_ms = contract.window_samples * 1000 // contract.sample_rate
        if not (self.min_hop_ms <= ms and 0 < hop <= contract.window_samples):
            raise ConfigError(f"{INPUT_HOP_MS}={ms}: outside {self.min_hop_ms}..{window_ms} ms (min hop .. the window)")
        return hop

    def to_parameters(self) -> dict[str, str]:
        """``{ser.stream.<field>: value}`` config parameters."""
        return parameters_from_fields(self, STREAM_PARAM_PREFIX)

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], *, model: str = STREAM_MODEL) -> "StreamSettings":
        """Read the settings back (missing keys keep their defaults).

        Raises:
            ConfigError: a value is not a number or breaks a rule; names the model and key.
        """
        return parameters_to_fields(cls, params, STREAM_PARAM_PREFIX, model=model)


@dataclass(frozen=True)
class Window:
    """One window a call has ready: ``[start, end)`` in samples at the model's rate.

    Attributes:
        start, end: sample offsets in the call (``end - start <= W``).
        speech: the gate let it through (always True without a detector).
        speech_ratio: share of its 32 ms frames the detector called speech (1.0 without one).
        waveform: ``[W]`` float32, zero-padded past ``end - start``.
    """

    start: int
    end: int
    speech: bool
    speech_ratio: float
    waveform: np.ndarray

    @property
    def num_samples(self) -> int:
        """Valid samples in ``waveform``."""
        return self.end - self.start


def read_chunk(pcm: np.ndarray | None, pcm_s16: np.ndarray | None, *, call_id: int, sample_rate: int,
               max_chunk_s: float) -> np.ndarray:
    """One chunk's samples as float32 ``[n]`` in [-1, 1]: ``pcm`` as is, ``pcm_s16`` divided by 32768.

    Raises:
        ConfigError: both inputs given. AudioFormatError: longer than ``max_chunk_s``.
        NonFiniteAudioError: NaN or Inf samples.
    """
    name = f"call {call_id}"
    if pcm is not None and pcm_s16 is not None:
        raise ConfigError(f"{name}: send one of {INPUT_PCM!r} (FP32) or {INPUT_PCM_S16!r} (INT16) per chunk, not both")
    if pcm_s16 is not None:
        x = np.asarray(pcm_s16, dtype=np.int16).reshape(-1).astype(np.float32) / 32768.0
    elif pcm is not None:
        x = np.asarray(pcm, dtype=np.float32).reshape(-1)
    else:
        return np.zeros(0, dtype=np.float32)
    if x.size > max_chunk_s * sample_rate:
        raise AudioFormatError(name, f"chunk of {x.size} samples > max_chunk_s={max_chunk_s:g} s at {sample_rate} Hz")
    if not np.isfinite(x).all():
        raise NonFiniteAudioError(name, f"{int((~np.isfinite(x)).sum())} of {x.size} samples in one chunk")
    return x


class CallState:
    """One call: resampler, the last window of audio, the detector, smoothing, the label and the windows so far.

    Windows end every hop (``hop, 2*hop, ...``) and span at most W: the first ones,
    before W samples arrived, are the audio so far (zero-padded); :meth:`finish`
    adds a last window ending at the call's last sample, as :func:`client.audio.make_windows`
    aligns its last window to the clip's end. Memory per call: W + one chunk of audio,
    the detector's recent frames and two numbers per window.

    Args:
        call_id: the correlation id.
        sample_rate: the caller's PCM rate, Hz.
        contract: the window model's labels, rate and window.
        settings: smoothing, hysteresis, limits, detector settings.
        hop_samples: this call's hop at the model's rate.
        vad: the detector's runner, or None for no gate.
    """

    def __init__(self, call_id: int, *, sample_rate: int, contract: ModelContract, settings: StreamSettings,
                 hop_samples: int, vad: VadRunner | None) -> None:
        if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
            raise AudioFormatError(f"call {call_id}", f"sample rate {sample_rate} Hz outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
        if vad is not None and contract.sample_rate != VAD_RATE:
            raise ConfigError(f"the voice-activity detector runs at {VAD_RATE} Hz, the model at {contract.sample_rate} Hz")
        self.call_id = int(call_id)
        self.sample_rate = int(sample_rate)
        self.contract = contract
        self.settings = settings
        self.hop = int(hop_samples)
        self._resampler = None
        if self.sample_rate != contract.sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, contract.sample_rate, 1, dtype="float32", quality="HQ")
        self._vad = VadTrack(vad, threshold=settings.vad_threshold) if vad is not None else None
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # call sample of _buffer[0]
        self.received = 0  # samples at the model's rate
        self._next_end = self.hop
        self._ends: list[int] = []
        self._labels: list[str] = []
        self.smoothed: np.ndarray | None = None
        self.label = ""
        self._candidate, self._lead = -1, 0

    @property
    def buffered_samples(self) -> int:
        """Audio held for windows still to come (at most W plus one chunk), samples at the model's rate."""
        return int(self._buffer.size)

    @property
    def duration_s(self) -> float:
        """Audio received so far, seconds."""
        return self.received / self.contract.sample_rate

    def push(self, samples: np.ndarray) -> list[Window]:
        """Add a chunk (float32 at the caller's rate); the windows it completes, in order.

        Raises:
            AudioFormatError: the call passes ``max_call_s``.
        """
        y = self._resampler.resample_chunk(samples) if self._resampler is not None and samples.size else samples
        return self._add(np.asarray(y, dtype=np.float32))

    def finish(self) -> list[Window]:
        """Flush the resampler; the windows still due, and the last partial one ending at the call's last sample."""
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True) if self._resampler else None
        out = self._add(np.asarray(tail, dtype=np.float32)) if tail is not None and tail.size else []
        if self.received > self._next_end - self.hop:  # audio after the last window that ended on a hop
            out.append(self._window(max(0, self.received - self.contract.window_samples), self.received))
        return out

    def _add(self, y: np.ndarray) -> list[Window]:
        if (self.received + y.size) > self.settings.max_call_s * self.contract.sample_rate:
            raise AudioFormatError(f"call {self.call_id}", f"longer than max_call_s={self.settings.max_call_s:g} s")
        if self._vad is not None and y.size:
            self._vad.push(y)
        self._buffer = np.concatenate([self._buffer, y]) if self._buffer.size else y.copy()
        self.received += y.size
        out = []
        while self._next_end <= self.received:
            out.append(self._window(max(0, self._next_end - self.contract.window_samples), self._next_end))
            self._next_end += self.hop
        keep_from = max(0, self.received - self.contract.window_samples)  # the next window's and the last one's start
        if keep_from > self._offset:
            self._buffer = self._buffer[keep_from - self._offset:]
            self._offset = keep_from
            if self._vad is not None:
                self._vad.forget_before(keep_from)
        return out

    def _window(self, start: int, end: int) -> Window:
        wave = np.zeros(self.contract.window_samples, dtype=np.float32)
        wave[: end - start] = self._buffer[start - self._offset:end - self._offset]
        if self._vad is None:
            return Window(start, end, True, 1.0, wave)
        ratio, speech = self._vad.speech_ratio(start, end)
        return Window(start, end, speech >= self._vad.min_speech_samples(self.settings.vad_min_speech_ms), ratio, wave)

    def update(self, window: Window, probabilities: np.ndarray | None) -> dict[str, np.ndarray]:
        """Record a window's result and return the update's tensors (``[1, ...]`` each).

        Args:
            window: as :meth:`push` gave it.
            probabilities: ``[N]`` from the window model, or None for a window without speech.
        """
        if probabilities is not None:
            p = np.asarray(probabilities, dtype=np.float32).reshape(-1)
            a = self.settings.smoothing
            self.smoothed = p.copy() if self.smoothed is None else (a * p + (1 - a) * self.smoothed).astype(np.float32)
            self._hold(int(np.argmax(self.smoothed)))
        self._ends.append(window.end)
        self._labels.append(self.label if probabilities is not None else NO_SPEECH)
        empty = np.zeros(0, dtype=np.float32)
        return batch1({
            OUTPUT_EVENT: text([EVENT_UPDATE]),
            OUTPUT_CALL_ID: np.array([self.call_id], dtype=np.uint64),
            OUTPUT_WINDOW_START: np.array([window.start / self.contract.sample_rate]),
            OUTPUT_WINDOW_END: np.array([window.end / self.contract.sample_rate]),
            OUTPUT_SPEECH: np.array([window.speech]),
            OUTPUT_SPEECH_RATIO: np.array([window.speech_ratio], dtype=np.float32),
            OUTPUT_NAMES: text(self.contract.labels),
            OUTPUT_SCORES: empty if probabilities is None else np.asarray(probabilities, dtype=np.float32).reshape(-1),
            OUTPUT_SMOOTHED: empty if self.smoothed is None else self.smoothed,
            OUTPUT_LABEL: text([self.label]),
        })

    def _hold(self, best: int) -> None:
        """The hysteresis: the first label at once, then another only after ``hysteresis`` leads in a row."""
        name = self.contract.labels[best]
        if not self.label or name == self.label:
            self.label = self.label or name
            self._candidate, self._lead = -1, 0
            return
        self._lead = self._lead + 1 if best == self._candidate else 1
        self._candidate = best
        if self._lead >= self.settings.hysteresis:
            self.label, self._candidate, self._lead = name, -1, 0

    def segments(self) -> tuple[Segment, ...]:
        """Label runs over the whole call (:func:`client.timeline.merge_segments` of each window's held label)."""
        if not self._ends:
            return ()
        rate = float(self.contract.sample_rate)
        ends = np.asarray(self._ends, dtype=np.float64)
        starts = np.maximum(0.0, ends - self.contract.window_samples)
        return merge_segments(self._labels, boundaries(starts / rate, ends / rate, total=self.received / rate))

    def result(self) -> dict[str, np.ndarray]:
        """The END answer's tensors: the segments, the duration, the last label and smoothed scores."""
        segments = self.segments()
        return batch1({
            OUTPUT_EVENT: text([EVENT_END]),
            OUTPUT_CALL_ID: np.array([self.call_id], dtype=np.uint64),
            OUTPUT_NAMES: text(self.contract.labels),
            OUTPUT_SMOOTHED: np.zeros(0, dtype=np.float32) if self.smoothed is None else self.smoothed,
            OUTPUT_LABEL: text([self.label]),
            OUTPUT_SEGMENT_LABEL: text([s.label for s in segments]),
            OUTPUT_SEGMENT_START: np.array([s.start_s for s in segments], dtype=np.float64),
            OUTPUT_SEGMENT_END: np.array([s.end_s for s in segments], dtype=np.float64),
            OUTPUT_DURATION: np.array([self.duration_s]),
        })


def text(values) -> np.ndarray:
    """BYTES tensor of strings: an object array of utf-8 bytes."""
    return np.array([str(v).encode("utf-8") for v in values], dtype=np.object_)


def batch1(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each tensor with a leading batch dimension of 1 (the model's ``max_batch_size`` > 0)."""
    return {k: np.ascontiguousarray(v)[None, ...] for k, v in tensors.items()}


def cancelled(call_id: int) -> dict[str, np.ndarray]:
    """The answer to END with ``cancel``: the call is gone, no result."""
    return batch1({OUTPUT_EVENT: text([EVENT_CANCELLED]), OUTPUT_CALL_ID: np.array([call_id], dtype=np.uint64)})


def settings_fields() -> list[str]:
    """The names of :class:`StreamSettings`' fields (the config parameters after ``ser.stream.``)."""
    return [f.name for f in fields(StreamSettings)]
