"""The audio contract: the one place where audio becomes model input.

Training, export parity checks and the client all import this module, so what
the model was trained on is exactly what it is served. It imports neither
torch nor transformers (a calling service installs the client alone).

Pipeline: decode (soundfile; librosa/audioread for other formats when present)
-> float32 in [-1, 1], shape ``[samples, channels]`` -> mono by averaging
channels -> resample to the model's rate (soxr, high quality) -> validate
(empty, NaN/Inf, too short, too long, silent) -> fixed windows of ``W`` samples with the
true length of each (``num_samples``).

Per-clip normalisation (zero mean, unit variance over the valid samples) is
*not* done here: it happens inside the ONNX graph. :func:`normalize_reference`
is the numpy statement of it, used to test the graph.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from .errors import (
    AudioDecodeError,
    AudioTooLongError,
    AudioTooShortError,
    ConfigError,
    EmptyAudioError,
    NonFiniteAudioError,
    SilentAudioError,
)

AudioSource = Union[str, Path, bytes, np.ndarray]

#: Peak |amplitude| below which audio counts as silence (-80 dBFS).
DEFAULT_SILENCE_PEAK = 1e-4
#: Longest audio accepted by default, in seconds.
DEFAULT_MAX_DURATION_S = 600.0
#: Shortest audio accepted by default, in seconds: 0.1 s is 1600 samples at 16 kHz, four frames of
#: wav2vec2's feature encoder (25 ms receptive field, 20 ms stride) and about one syllable. Less
#: carries no emotion to hear, yet a model still answers it with a confident-looking label.
DEFAULT_MIN_DURATION_S = 0.1
#: Variance floor of the per-clip normalisation, as Wav2Vec2FeatureExtractor uses.
NORM_EPS = 1e-7


@dataclass(frozen=True)
class AudioConfig:
    """How audio is turned into model input.

    Attributes:
        sample_rate: target rate in Hz.
        max_duration_s: longer audio is refused before it is decoded whole.
        silence_peak: audio whose peak |amplitude| is below this is refused as silent.
        min_duration_s: shorter audio is refused (:class:`~client.errors.AudioTooShortError`),
            seconds; 0 accepts any non-empty clip.
    """

    sample_rate: int = 16_000
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    silence_peak: float = DEFAULT_SILENCE_PEAK
    min_duration_s: float = DEFAULT_MIN_DURATION_S

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate={self.sample_rate}: must be a positive number of Hz")
        if not self.max_duration_s > 0:
            raise ConfigError(f"max_duration_s={self.max_duration_s}: must be positive")
        if not 0 <= self.min_duration_s < self.max_duration_s:
            raise ConfigError(
                f"min_duration_s={self.min_duration_s}: must be >= 0 and below max_duration_s={self.max_duration_s}"
            )
        if not 0 <= self.silence_peak < 1:
            raise ConfigError(f"silence_peak={self.silence_peak}: must be in [0, 1)")


@dataclass(frozen=True)
class Windows:
    """Fixed-length model inputs cut from one clip.

    Attributes:
        waveforms: ``[n, W]`` float32 at the model's rate, zero-padded past ``num_samples``.
        num_samples: ``[n]`` int64, valid samples in each window (1..W).
        offsets: ``[n]`` int64, start of each window in the clip (samples).
    """

    waveforms: np.ndarray
    num_samples: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.waveforms.shape[0])


def _name(source: AudioSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, Path)):
        return str(source)
    return "<bytes>" if isinstance(source, bytes) else "<array>"


def decode(source: str | Path | bytes, *, name: str | None = None, max_duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file or an in-memory encoded file.

    Args:
        source: path, or the bytes of an encoded file (wav, flac, ogg, ...).
        name: how errors refer to the source (defaults to the path).
        max_duration_s: refuse longer audio before decoding it whole.

    Returns:
        ``(samples, sample_rate)``: samples ``[n, channels]`` float32 in [-1, 1]
        (integer PCM scaled by its full range), sample_rate in Hz.

    Raises:
        AudioDecodeError: missing, truncated or undecodable input.
        AudioTooLongError: longer than ``max_duration_s``.
    """
    import soundfile as sf  # here, not at the top: hosts that only build models (GPU bench) need not have it

    label = _name(source, name)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise AudioDecodeError(label, "no such file")
        if path.is_dir():
            raise AudioDecodeError(label, "is a directory")
        if path.stat().st_size == 0:
            raise AudioDecodeError(label, "file is 0 bytes")
        handle: object = str(path)
    else:
        if len(source) == 0:
            raise AudioDecodeError(label, "0 bytes")
        handle = io.BytesIO(source)
    try:
        info = sf.info(handle)
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        if isinstance(source, bytes):
            reason = str(exc).rsplit(">: ", 1)[-1]  # libsndfile names the BytesIO object's address first
            raise AudioDecodeError(label, f"not a format libsndfile reads: {reason}") from None
        return _decode_fallback(Path(source), label, max_duration_s)
    truncated = _riff_truncation(source)
    if truncated:
        raise AudioDecodeError(label, f"truncated: {truncated}")
    if max_duration_s is not None and info.samplerate > 0 and info.frames / info.samplerate > max_duration_s:
        raise AudioTooLongError(label, f"{info.frames / info.samplerate:.1f} s > {max_duration_s:g} s")
    try:
        data, sr = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioDecodeError(label, f"truncated or corrupt: {exc}") from None
    if info.frames > 0 and data.shape[0] < info.frames:
        raise AudioDecodeError(label, f"truncated: header says {info.frames} frames, read {data.shape[0]}")
    return data, int(sr)


def _riff_truncation(source: str | Path | bytes) -> str:
    """For RIFF/WAVE input, compare the ``data`` chunk size the header declares with the bytes present.

    libsndfile quietly reads what is there, so a cut-off upload would otherwise be
    classified as a shorter clip. Returns a reason, or ``""`` if complete or not RIFF.
    """
    if isinstance(source, bytes):
        head, total = source[:65536], len(source)
    else:
        with open(source, "rb") as fh:
            head = fh.read(65536)
        total = Path(source).stat().st_size
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return ""
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            present = total - (pos + 8)
            if size in (0, 0xFFFFFFFF):  # streamed WAV: size left unknown by the writer
                return ""
            return f"header declares {size} data bytes, file has {present}" if present < size else ""
        pos += 8 + size + (size & 1)
    return ""


def _decode_fallback(path: Path, label: str, max_duration_s: float | None) -> tuple[np.ndarray, int]:
    """Decode what libsndfile cannot (mp3, m4a, ...) through librosa/audioread, if installed."""
    try:
        import librosa  # noqa: PLC0415 - optional, heavy
    except ImportError:
        raise AudioDecodeError(
            label, "not a format libsndfile reads, and librosa (with audioread/ffmpeg) is not installed to try others"
        ) from None
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if max_duration_s is not None:
                duration = librosa.get_duration(path=str(path))
                if duration > max_duration_s:
                    raise AudioTooLongError(label, f"{duration:.1f} s > {max_duration_s:g} s")
            y, sr = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    except AudioTooLongError:
        raise
    except Exception as exc:  # audioread raises many unrelated types (NoBackendError, EOFError...)
        kind = type(exc).__name__
        hint = " (no decoder: install ffmpeg)" if kind == "NoBackendError" else ""
        raise AudioDecodeError(label, f"no decoder could read it: {kind}{hint}") from None
    y = np.atleast_2d(y).T if y.ndim == 2 else y[:, None]
    return np.ascontiguousarray(y, dtype=np.float32), int(sr)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels: ``[n]`` or ``[n, channels]`` -> ``[n]`` float32."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise ConfigError(f"samples.shape={samples.shape}: expected [n] or [n, channels]")
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono float32 audio with soxr (high quality). ``[n]`` -> ``[n * target/orig]``."""
    if orig_sr <= 0:
        raise ConfigError(f"orig_sr={orig_sr}: must be a positive number of Hz")
    if orig_sr == target_sr or y.size == 0:
        return y.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def validate(y: np.ndarray, *, source: str, sample_rate: int, config: AudioConfig) -> np.ndarray:
    """Refuse audio the model must not see. Returns ``y`` unchanged.

    Raises:
        EmptyAudioError, NonFiniteAudioError, AudioTooShortError, AudioTooLongError, SilentAudioError.
    """
    if y.size == 0:
        raise EmptyAudioError(source)
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        raise NonFiniteAudioError(source, f"{bad} of {y.size} samples")
    _check_min_duration(y.shape[0], sample_rate, source=source, config=config)
    duration = y.shape[0] / sample_rate
    if duration > config.max_duration_s:
        raise AudioTooLongError(source, f"{duration:.1f} s > {config.max_duration_s:g} s")
    peak = float(np.abs(y).max())
    if peak < config.silence_peak:
        raise SilentAudioError(source, f"peak {peak:.2e} < {config.silence_peak:g}")
    return y


def _check_min_duration(samples: int, sample_rate: int, *, source: str, config: AudioConfig) -> None:
    if samples / sample_rate < config.min_duration_s:
        raise AudioTooShortError(
            source, f"{samples} samples at {sample_rate} Hz = {samples / sample_rate:.3g} s < {config.min_duration_s:g} s"
        )


def load_audio(
    source: AudioSource,
    *,
    sample_rate: int | None = None,
    config: AudioConfig = AudioConfig(),
    name: str | None = None,
) -> np.ndarray:
    """Turn a path, encoded bytes or an array into validated mono audio at ``config.sample_rate``.

    Args:
        source: file path, encoded file bytes, or a numpy array ``[n]`` /
            ``[n, channels]`` (float in [-1, 1], or integer PCM, scaled by its range).
        sample_rate: the array's rate in Hz; required for arrays, ignored otherwise.
        config: target rate and refusal thresholds.
        name: how errors refer to the source.

    Returns:
        ``[n]`` float32 at ``config.sample_rate``.

    Raises:
        AudioError subclasses naming the source and the reason.
    """
    label = _name(source, name)
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise ConfigError(f"{label}: a numpy array needs sample_rate= (Hz)")
        data = array_to_float(source, label)
        sr = int(sample_rate)
        if sr <= 0:
            raise ConfigError(f"{label}: sample_rate={sample_rate}: must be a positive number of Hz")
        if data.size and data.shape[0] / sr > config.max_duration_s:
            raise AudioTooLongError(label, f"{data.shape[0] / sr:.1f} s > {config.max_duration_s:g} s")
    else:
        data, sr = decode(source, name=label, max_duration_s=config.max_duration_s)
    if data.size == 0:
        raise EmptyAudioError(label)
    mono = to_mono(data)
    if not np.isfinite(mono).all():  # check before resampling spreads NaN around
        validate(mono, source=label, sample_rate=sr, config=config)
    _check_min_duration(data.shape[0], sr, source=label, config=config)  # at the source's rate: resampling rounds
    y = resample(mono, orig_sr=sr, target_sr=config.sample_rate)
    return validate(y, source=label, sample_rate=config.sample_rate, config=config)


#: File suffixes read as audio when a folder is searched (the client's directory mode, the quantization
#: report's and the load test's audio folders); decoding is then :func:`decode`'s to judge.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".au", ".w64", ".caf", ".webm")


def list_audio_files(folder: Path) -> list[Path]:
    """The files under ``folder`` (recursive) whose suffix is in :data:`AUDIO_SUFFIXES`, sorted; may be empty."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def array_to_float(a: np.ndarray, label: str) -> np.ndarray:
    """Scale a PCM array to float32 in [-1, 1] the way the client reads arrays.

    Args:
        a: ``[n]`` or ``[n, channels]`` samples; float (kept), signed integer (divided by
            ``-min``) or uint8 (centred on 128).
        label: names the array in errors.

    Raises:
        ConfigError: another shape or dtype.
    """
    if a.ndim not in (1, 2):
        raise ConfigError(f"{label}: array shape {a.shape}: expected [n] or [n, channels]")
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32, copy=False)
    if np.issubdtype(a.dtype, np.signedinteger):
        return (a.astype(np.float32) / float(-np.iinfo(a.dtype).min)).astype(np.float32)
    if a.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return ((a.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    raise ConfigError(f"{label}: array dtype {a.dtype}: expected float or integer PCM")


def make_windows(y: np.ndarray, *, window_samples: int, hop_samples: int) -> Windows:
    """Cut mono audio into fixed windows.

    Audio of at most ``window_samples`` gives one zero-padded window whose
    ``num_samples`` is the true length. Longer audio gives full windows starting
    every ``hop_samples``, plus a last one aligned to the end so no sample is lost.

    Args:
        y: ``[n]`` float32, n >= 1.
        window_samples: W.
        hop_samples: step between window starts, 0 < hop <= W.

    Returns:
        :class:`Windows` with ``waveforms [k, W]``.
    """
    if window_samples <= 0 or not 0 < hop_samples <= window_samples:
        raise ConfigError(f"window_samples={window_samples}, hop_samples={hop_samples}: need 0 < hop <= window")
    n = int(y.shape[0])
    if n <= window_samples:
        out = np.zeros((1, window_samples), dtype=np.float32)
        out[0, :n] = y
        return Windows(out, np.array([n], dtype=np.int64), np.array([0], dtype=np.int64))
    starts = list(range(0, n - window_samples + 1, hop_samples))
    if starts[-1] + window_samples < n:
        starts.append(n - window_samples)
    out = np.stack([y[s : s + window_samples] for s in starts]).astype(np.float32, copy=False)
    return Windows(out, np.full(len(starts), window_samples, dtype=np.int64), np.asarray(starts, dtype=np.int64))


def aggregate(probabilities: np.ndarray, num_samples: np.ndarray) -> np.ndarray:
    """Combine per-window class probabilities, weighted by valid samples.

    Args:
        probabilities: ``[k, C]`` float, each row sums to 1.
        num_samples: ``[k]`` valid samples per window.

    Returns:
        ``[C]`` float32, sums to 1.
    """
    w = np.asarray(num_samples, dtype=np.float64).reshape(-1)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != w.shape[0] or w.sum() <= 0:
        raise ConfigError(f"probabilities {p.shape} and num_samples {w.shape}: need [k, C] and [k] with k >= 1")
    return (w @ p / w.sum()).astype(np.float32)


def normalize_reference(waveforms: np.ndarray, num_samples: np.ndarray) -> np.ndarray:
    """What the ONNX graph does first, in numpy: per-window zero mean, unit variance.

    Same as ``Wav2Vec2FeatureExtractor(do_normalize=True)``: statistics over the
    valid samples only, ``(x - mean) / sqrt(var + 1e-7)``, padding set back to 0.

    Args:
        waveforms: ``[k, W]`` float32.
        num_samples: ``[k]`` int64.

    Returns:
        ``[k, W]`` float32.
    """
    out = np.zeros_like(waveforms, dtype=np.float32)
    for i, (x, n) in enumerate(zip(waveforms, np.asarray(num_samples).reshape(-1), strict=True)):
        v = x[: int(n)].astype(np.float64)
        out[i, : int(n)] = (v - v.mean()) / np.sqrt(v.var() + NORM_EPS)
    return out


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax, float32."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)
