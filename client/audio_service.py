"""The server-side audio model (``ser``): its interface, its limits and what it does with one clip.

A service in any language sends one clip per request to the model ``ser`` and gets
the emotions back; the audio contract runs on the server. This module is that
contract's server half, in plain functions over numpy arrays, so the python-backend
model (``export/served/audio_model.py``), the client's server-side mode and the
tests share one statement of it. It uses the client's own decoding, windowing and
aggregation (:mod:`client.audio`) and timeline (:mod:`client.timeline`): the
repository writer packages these modules with the model, so the server runs the
very code the client runs.

Interface (Triton tensor names; ``BYTES`` is ``TYPE_STRING`` in a model config):

* inputs, one clip per request (``max_batch_size: 0``):
  ``audio`` BYTES ``[1]``: one encoded file (wav, flac, ogg/vorbis, ogg/opus, mp3: what libsndfile reads),
  or ``pcm`` FP32 ``[n]`` mono samples in [-1, 1] with ``sample_rate`` INT32 ``[1]`` (Hz);
  optional ``timeline`` BOOL ``[1]``: also return the per-window timeline;
  optional ``vad`` BOOL ``[1]``: ``false`` skips the voice-activity gate for this clip (a model
  written without the gate refuses ``true``).
* outputs: ``label`` BYTES ``[1]``, ``names`` BYTES ``[N]``, ``scores`` FP32 ``[N]``,
  ``duration_s`` FP64 ``[1]``; with ``timeline``: ``window_start_s``/``window_end_s`` FP64 ``[k]``,
  ``window_scores`` FP32 ``[k, N]``, ``segment_label`` BYTES ``[m]``,
  ``segment_start_s``/``segment_end_s`` FP64 ``[m]``.

``names``/``scores`` rather than fixed class outputs: the config parameter
``ser.audio.head`` says what the scores are. ``categorical`` (the only head
implemented): the class probabilities (sum 1), ``label`` their arg-max. A
regression head would answer named values (``arousal``, ``valence``...) in the same
two tensors, with an empty ``label`` and no segments.

With the voice-activity gate (:class:`SpeechGate`, ``ser.audio.vad=silero``), silero-vad runs
once over the clip and only windows with ``vad_min_speech_ms`` of speech go to the window
model: ``scores`` aggregate those windows, the timeline keeps every window (held-back ones
with a row of zeros in ``window_scores``, their segments labelled ``no_speech``), and a clip without one such window
is refused with :class:`~client.errors.NoSpeechError`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np

from .audio import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_SILENCE_PEAK,
    AudioConfig,
    Windows,
    aggregate,
    load_audio,
    make_windows,
)
from .contract import PARAM_PREFIX, ModelContract
from .errors import (
    AudioDecodeError,
    AudioFormatError,
    AudioTooLargeError,
    ConfigError,
    EmptyAudioError,
    NoSpeechError,
)
from .timeline import Timeline, build_timeline
from .vad import (
    DEFAULT_VAD_MIN_SPEECH_MS,
    DEFAULT_VAD_THRESHOLD,
    VAD_OFF,
    VAD_RATE,
    VadRunner,
    vad_settings_problems,
    window_speech,
)

#: Default name of the server-side audio model in a repository.
AUDIO_MODEL = "ser"

INPUT_AUDIO = "audio"
INPUT_PCM = "pcm"
INPUT_SAMPLE_RATE = "sample_rate"
INPUT_TIMELINE = "timeline"
INPUT_VAD = "vad"
OUTPUT_LABEL = "label"
OUTPUT_NAMES = "names"
OUTPUT_SCORES = "scores"
OUTPUT_DURATION = "duration_s"
OUTPUT_WINDOW_START = "window_start_s"
OUTPUT_WINDOW_END = "window_end_s"
OUTPUT_WINDOW_SCORES = "window_scores"
OUTPUT_SEGMENT_LABEL = "segment_label"
OUTPUT_SEGMENT_START = "segment_start_s"
OUTPUT_SEGMENT_END = "segment_end_s"

#: ``(name, config data type, dims)`` of every input, in config order; all optional (audio xor pcm + rate).
INPUTS = (
    (INPUT_AUDIO, "TYPE_STRING", (1,)),
    (INPUT_PCM, "TYPE_FP32", (-1,)),
    (INPUT_SAMPLE_RATE, "TYPE_INT32", (1,)),
    (INPUT_TIMELINE, "TYPE_BOOL", (1,)),
    (INPUT_VAD, "TYPE_BOOL", (1,)),
)
#: Outputs of every answer.
CLIP_OUTPUTS = (
    (OUTPUT_LABEL, "TYPE_STRING", (1,)),
    (OUTPUT_NAMES, "TYPE_STRING", (-1,)),
    (OUTPUT_SCORES, "TYPE_FP32", (-1,)),
    (OUTPUT_DURATION, "TYPE_FP64", (1,)),
)
#: Outputs added when ``timeline`` is true.
TIMELINE_OUTPUTS = (
    (OUTPUT_WINDOW_START, "TYPE_FP64", (-1,)),
    (OUTPUT_WINDOW_END, "TYPE_FP64", (-1,)),
    (OUTPUT_WINDOW_SCORES, "TYPE_FP32", (-1, -1)),
    (OUTPUT_SEGMENT_LABEL, "TYPE_STRING", (-1,)),
    (OUTPUT_SEGMENT_START, "TYPE_FP64", (-1,)),
    (OUTPUT_SEGMENT_END, "TYPE_FP64", (-1,)),
)
OUTPUTS = CLIP_OUTPUTS + TIMELINE_OUTPUTS

#: Prefix of the audio model's own config parameters (after the contract's ``ser.*``).
AUDIO_PARAM_PREFIX = PARAM_PREFIX + "audio."
#: Config parameter saying what ``scores`` are.
HEAD_PARAMETER = AUDIO_PARAM_PREFIX + "head"
HEAD_CATEGORICAL = "categorical"
HEADS = (HEAD_CATEGORICAL,)
#: Encoded size accepted by default: 64 MiB (10 min of 16-bit 48 kHz stereo WAV is 110 MB: send FLAC or raise it).
DEFAULT_MAX_BYTES = 64 << 20
#: Decoded samples (frames x channels) accepted by default: 10 min of 48 kHz stereo, 230 MB as float32.
DEFAULT_MAX_DECODED_SAMPLES = 600 * 48_000 * 2
#: Sample rates accepted (Hz), for encoded files and PCM alike.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
MAX_CHANNELS = 32


@dataclass(frozen=True)
class AudioLimits:
    """What the audio model refuses, before and while decoding (config parameters ``ser.audio.*``).

    Attributes:
        max_bytes: largest encoded clip, bytes.
        max_duration_s: longest clip, seconds (checked from the header before decoding).
        max_decoded_samples: most frames x channels a clip may decode to (a small
            FLAC of silence can declare hours of 32 channels).
        silence_peak: a clip whose peak |amplitude| is below this is refused as silent.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_decoded_samples: int = DEFAULT_MAX_DECODED_SAMPLES
    silence_peak: float = DEFAULT_SILENCE_PEAK

    def __post_init__(self) -> None:
        if isinstance(self.max_bytes, bool) or int(self.max_bytes) != self.max_bytes or self.max_bytes < 1:
            raise ConfigError(f"max_bytes={self.max_bytes!r}: must be a positive whole number of bytes")
        if isinstance(self.max_decoded_samples, bool) or int(self.max_decoded_samples) != self.max_decoded_samples \
                or self.max_decoded_samples < 1:
            raise ConfigError(f"max_decoded_samples={self.max_decoded_samples!r}: must be a positive whole number")
        object.__setattr__(self, "max_bytes", int(self.max_bytes))
        object.__setattr__(self, "max_decoded_samples", int(self.max_decoded_samples))
        AudioConfig(max_duration_s=self.max_duration_s, silence_peak=self.silence_peak)  # checks both

    def audio_config(self, sample_rate: int) -> AudioConfig:
        """The :class:`~client.audio.AudioConfig` that decodes for a model of ``sample_rate`` Hz."""
        return AudioConfig(sample_rate=sample_rate, max_duration_s=self.max_duration_s, silence_peak=self.silence_peak)

    def to_parameters(self) -> dict[str, str]:
        """``{ser.audio.<field>: value}`` config parameters."""
        return parameters_from_fields(self, AUDIO_PARAM_PREFIX)

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], *, model: str = AUDIO_MODEL) -> "AudioLimits":
        """Read the limits back (missing keys keep their defaults).

        Raises:
            ConfigError: a value is not a number or breaks a limit's rule; names the model and key.
        """
        return parameters_to_fields(cls, params, AUDIO_PARAM_PREFIX, model=model)


@dataclass(frozen=True)
class SpeechGate:
    """The audio model's voice-activity gate (config parameters ``ser.audio.vad*``), off by default.

    Attributes:
        vad: ``silero`` (silero-vad gates the windows; the model's rate must be 16 kHz) or ``off``.
        vad_threshold: silero speech probability from which a 32 ms frame counts as speech.
        vad_min_speech_ms: speech a window needs (ms of speech frames) to go to the window model.
    """

    vad: str = VAD_OFF
    vad_threshold: float = DEFAULT_VAD_THRESHOLD
    vad_min_speech_ms: int = DEFAULT_VAD_MIN_SPEECH_MS

    def __post_init__(self) -> None:
        bad = vad_settings_problems(self.vad, self.vad_threshold, self.vad_min_speech_ms)
        if bad:
            raise ConfigError(f"speech gate {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}: outside the "
                              "allowed range (vad silero|off, 0 < vad_threshold < 1, vad_min_speech_ms >= 0)")

    @property
    def on(self) -> bool:
        """Whether the gate runs."""
        return self.vad != VAD_OFF

    def check_rate(self, sample_rate: int) -> None:
        """Raises ConfigError, naming the rate, for a gate on a model whose rate is not silero-vad's 16 kHz."""
        if self.on and sample_rate != VAD_RATE:
            raise ConfigError(f"sample rate {sample_rate} Hz: the voice-activity gate (silero-vad) needs a model "
                              f"of {VAD_RATE} Hz; write the audio model without it")

    def to_parameters(self) -> dict[str, str]:
        """``{ser.audio.vad*: value}`` config parameters."""
        return parameters_from_fields(self, AUDIO_PARAM_PREFIX)

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], *, model: str = AUDIO_MODEL) -> "SpeechGate":
        """Read the gate back (missing keys: no gate). Raises ConfigError naming the model and a bad key."""
        return parameters_to_fields(cls, params, AUDIO_PARAM_PREFIX, model=model)


def parameters_from_fields(settings, prefix: str) -> dict[str, str]:
    """``{<prefix><field>: value}`` of a settings dataclass (floats by ``repr``, so they read back exactly)."""
    return {prefix + f.name: repr(getattr(settings, f.name)) if isinstance(getattr(settings, f.name), float)
            else str(getattr(settings, f.name)) for f in fields(settings)}


def parameters_to_fields(cls, params: Mapping[str, str], prefix: str, *, model: str):
    """A settings dataclass read back from ``{<prefix><field>: text}`` (missing keys keep their defaults).

    Raises:
        ConfigError: a number field is not a number, or the dataclass refuses a value; names the model and key.
    """
    values: dict[str, object] = {}
    for f in fields(cls):
        text = params.get(prefix + f.name)
        if text is None:
            continue
        try:
            kind = {"float": float, "int": int, "str": str}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
            values[f.name] = kind(text)
        except ValueError:
            raise ConfigError(f"model {model!r}: parameter {prefix}{f.name}={text!r} is not a number") from None
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"model {model!r}: {exc}") from None


@dataclass(frozen=True)
class InnerModel:
    """A window model the audio model may send its windows to.

    Attributes:
        name: model name in the same server (``ser_int8``...).
        max_batch_size: windows per request it takes.
    """

    name: str
    max_batch_size: int


def inner_models_to_parameter(models: list[InnerModel]) -> str:
    """JSON of ``ser.audio.inner_models``: ``[{"name", "max_batch_size"}, ...]`` in preference order."""
    return json.dumps([{"name": m.name, "max_batch_size": m.max_batch_size} for m in models])


def inner_models_from_parameters(params: Mapping[str, str], *, model: str = AUDIO_MODEL,
                                 prefix: str = AUDIO_PARAM_PREFIX) -> tuple[InnerModel, ...]:
    """The window models named by ``<prefix>inner_models`` (``ser.audio.``, ``ser.stream.``), in preference order.

    Raises:
        ConfigError: missing, not JSON, empty, or an entry without a name or a positive max_batch_size.
    """
    key = prefix + "inner_models"
    try:
        entries = json.loads(params[key])
        out = tuple(InnerModel(str(e["name"]), int(e["max_batch_size"])) for e in entries)
    except KeyError as exc:
        raise ConfigError(f"model {model!r}: parameter {key} is missing or lacks {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model {model!r}: parameter {key} is not a JSON list of {{name, max_batch_size}}: {exc}") from None
    if not out or any(not m.name or m.max_batch_size < 1 for m in out):
        raise ConfigError(f"model {model!r}: parameter {key}={params[key]!r}: need >= 1 model with max_batch_size >= 1")
    return out


@dataclass(frozen=True)
class Clip:
    """One clip made model input.

    Attributes:
        windows: the fixed windows at the model's rate.
        total_samples: the clip's length at the model's rate.
        sample_rate: the model's rate, Hz.
        samples: ``[total_samples]`` float32, the clip at the model's rate (what the speech gate reads).
    """

    windows: Windows
    total_samples: int
    sample_rate: int
    samples: np.ndarray | None = None

    @property
    def duration_s(self) -> float:
        """The clip's duration, seconds."""
        return self.total_samples / self.sample_rate


def _check_rate(sample_rate: int, name: str) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioFormatError(name, f"sample rate {sample_rate} Hz outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")


def _clip(y: np.ndarray, contract: ModelContract) -> Clip:
    windows = make_windows(y, window_samples=contract.window_samples, hop_samples=contract.hop_samples)
    return Clip(windows=windows, total_samples=int(y.shape[0]), sample_rate=contract.sample_rate, samples=y)


def clip_from_bytes(data: bytes, *, contract: ModelContract, limits: AudioLimits, name: str = INPUT_AUDIO) -> Clip:
    """Decode one encoded clip (the client's :func:`client.audio.load_audio`) and cut its windows.

    The size, the header's rate, channels and frames are checked before anything is decoded.

    Raises:
        AudioTooLargeError: more than ``max_bytes``, or it declares more than ``max_decoded_samples``.
        AudioFormatError: a sample rate or channel count outside what is accepted.
        AudioDecodeError, AudioTooLongError, AudioTooShortError, EmptyAudioError, NonFiniteAudioError, SilentAudioError:
            as the client raises them for the same bytes.
    """
    if len(data) > limits.max_bytes:
        raise AudioTooLargeError(name, f"{len(data)} bytes > {AUDIO_PARAM_PREFIX}max_bytes={limits.max_bytes}")
    if len(data) == 0:
        raise AudioDecodeError(name, "0 bytes")
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        info = None  # decode() below names the reason
    if info is not None:
        _check_rate(int(info.samplerate), name)
        if not 1 <= info.channels <= MAX_CHANNELS:
            raise AudioFormatError(name, f"{info.channels} channels outside 1..{MAX_CHANNELS}")
        if info.frames * info.channels > limits.max_decoded_samples:
            raise AudioTooLargeError(
                name, f"declares {info.frames} frames x {info.channels} channels > "
                f"{AUDIO_PARAM_PREFIX}max_decoded_samples={limits.max_decoded_samples}"
            )
    y = load_audio(data, config=limits.audio_config(contract.sample_rate), name=name)
    return _clip(y, contract)


def clip_from_pcm(pcm: np.ndarray, sample_rate: int, *, contract: ModelContract, limits: AudioLimits,
                  name: str = INPUT_PCM) -> Clip:
    """Resample mono PCM (the client's :func:`client.audio.load_audio`) and cut its windows.

    Args:
        pcm: ``[n]`` float32 in [-1, 1].
        sample_rate: its rate, Hz.
        contract: the window model's rate, window and hop.
        limits: what is refused.
        name: how errors name the input.

    Raises:
        AudioTooLargeError, AudioFormatError, EmptyAudioError, AudioTooShortError, NonFiniteAudioError,
        SilentAudioError, AudioTooLongError.
    """
    x = np.asarray(pcm).reshape(-1)
    if x.size == 0:
        raise EmptyAudioError(name)
    _check_rate(int(sample_rate), name)
    if x.size > limits.max_decoded_samples:
        raise AudioTooLargeError(name, f"{x.size} samples > {AUDIO_PARAM_PREFIX}max_decoded_samples={limits.max_decoded_samples}")
    y = load_audio(x.astype(np.float32, copy=False), sample_rate=int(sample_rate),
                   config=limits.audio_config(contract.sample_rate), name=name)
    return _clip(y, contract)


@dataclass(frozen=True)
class Answer:
    """What the audio model answers for one clip.

    Attributes:
        label: the best class (categorical head).
        names: the N score names (the class labels).
        scores: ``[N]`` float32, the clip's class probabilities (valid-sample-weighted mean over the windows classified).
        duration_s: the clip's duration, seconds.
        timeline: per-window scores and merged segments, when asked for.
    """

    label: str
    names: tuple[str, ...]
    scores: np.ndarray
    duration_s: float
    timeline: Timeline | None = None

    def tensors(self) -> dict[str, np.ndarray]:
        """``{output name: array}`` as the model returns them (BYTES as object arrays of bytes)."""
        def text(values) -> np.ndarray:
            return np.array([v.encode("utf-8") for v in values], dtype=np.object_)

        out = {
            OUTPUT_LABEL: text([self.label]),
            OUTPUT_NAMES: text(self.names),
            OUTPUT_SCORES: np.ascontiguousarray(self.scores, dtype=np.float32),
            OUTPUT_DURATION: np.array([self.duration_s], dtype=np.float64),
        }
        t = self.timeline
        if t is not None:
            out.update({
                OUTPUT_WINDOW_START: np.ascontiguousarray(t.start_s, dtype=np.float64),
                OUTPUT_WINDOW_END: np.ascontiguousarray(t.end_s, dtype=np.float64),
                # held back (NaN) -> zeros: Triton writes NaN bare into HTTP JSON, which Node.js and Go refuse
                OUTPUT_WINDOW_SCORES: np.ascontiguousarray(np.nan_to_num(t.scores, nan=0.0), dtype=np.float32),
                OUTPUT_SEGMENT_LABEL: text([s.label for s in t.segments]),
                OUTPUT_SEGMENT_START: np.array([s.start_s for s in t.segments], dtype=np.float64),
                OUTPUT_SEGMENT_END: np.array([s.end_s for s in t.segments], dtype=np.float64),
            })
        return out


def speech_windows(clip: Clip, run: VadRunner, gate: SpeechGate, *, name: str) -> np.ndarray:
    """Which of a clip's windows the speech gate lets through: ``[k]`` bool (silero-vad once over the clip).

    Raises NoSpeechError when not one window holds ``gate.vad_min_speech_ms`` of speech, naming the most found.
    """
    starts = clip.windows.offsets
    speech, passes = window_speech(run, clip.samples, starts, starts + clip.windows.num_samples,
                                   threshold=gate.vad_threshold, min_speech_ms=gate.vad_min_speech_ms)
    if not passes.any():
        most = int(speech.max()) * 1000 // clip.sample_rate if speech.size else 0
        raise NoSpeechError(name, f"at most {most} ms of speech in one of {passes.size} windows; a window needs "
                                  f"{gate.vad_min_speech_ms} ms, {AUDIO_PARAM_PREFIX}vad_min_speech_ms")
    return passes


def answer(clip: Clip, probabilities: np.ndarray, *, contract: ModelContract, timeline: bool = False,
           speech: np.ndarray | None = None) -> Answer:
    """Aggregate the window probabilities (the client's :func:`client.audio.aggregate`) into the clip's answer.

    Args:
        clip: the clip whose windows were classified.
        probabilities: ``[k, C]`` float32, one row per window, as the window model returned them; with
            ``speech``, one row per window it marks.
        contract: labels and rate.
        timeline: also build the per-window :class:`~client.timeline.Timeline` (every window; those
            ``speech`` held back get NaN scores, sent as zeros, and the segment label ``no_speech``).
        speech: ``[k]`` bool, the windows the speech gate let through (None: all were classified).
    """
    rows = np.asarray(probabilities, dtype=np.float32)
    if speech is None:
        p = aggregate(rows, clip.windows.num_samples)
    else:
        p = aggregate(rows, clip.windows.num_samples[speech])
        every = np.full((speech.size, rows.shape[1]), np.nan, dtype=np.float32)
        every[speech] = rows
        rows = every
    best = int(np.argmax(p))
    tl = None
    if timeline:
        tl = build_timeline(clip.windows.offsets, clip.windows.num_samples, rows, labels=contract.labels,
                            sample_rate=clip.sample_rate, total_samples=clip.total_samples)
    return Answer(label=contract.labels[best], names=contract.labels, scores=p, duration_s=clip.duration_s, timeline=tl)


def error_message(exc: BaseException) -> str:
    """How the audio model words a refused clip: ``<ErrorClass>: <message>`` on one line.

    The class name lets a client raise the same typed error as its own decoding would
    (:func:`audio_error_from_message`).
    """
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())


def audio_error_from_message(message: str, *, source: str):
    """The client-side :class:`~client.errors.AudioError` a server message of :func:`error_message` stands for, or None.

    Args:
        message: the server's error text (may carry a prefix before the class name).
        source: the file or name the new error should name.
    """
    import re

    from . import errors

    m = re.search(r"\b([A-Za-z]+Error): (?:audio|pcm): (.*)$", message)
    if not m:
        return None
    cls = getattr(errors, m.group(1), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.AudioError)):
        return None
    rest = m.group(2).strip()
    while rest.endswith(")") and rest.count(")") > rest.count("("):  # the client's wrapper "infer failed (...)"
        rest = rest[:-1]
    detail = rest[len(cls.reason):].strip() if rest.startswith(cls.reason) else rest
    if detail.startswith("(") and detail.endswith(")"):
        detail = detail[1:-1]
    return cls(source, detail)
