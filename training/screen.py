"""Screening a corpus's clips while decoding them once: what training must not learn from.

Real corpora ship a few broken files (CREMA-D's README lists clips with no audio,
with no duration, and one that holds a minute of several emotions), and a corpus
fetched without ``git lfs`` holds text pointers named ``.wav``. Training decodes
every clip anyway, so the checks ride on that one decode:

========================  ===============================================================
reason                    when
========================  ===============================================================
cannot decode             the audio contract (:func:`client.audio.load_audio`) refuses the
                          file: 0 bytes, truncated, not audio (a git-lfs pointer is named as such)
empty                     the file decodes to 0 samples
non-finite samples        NaN or Inf samples
silent                    digital silence, or no 25 ms frame louder than ``silence_dbfs``
too long for the corpus   longer than ``duration_factor`` x the median duration of its corpus
                          (or than the contract's maximum)
too short for the corpus  shorter than the median / ``duration_factor``
========================  ===============================================================

Decoded audio (and each file's refusal) is kept in a :class:`DecodeCache` keyed by the
file's path, size and modification time. :func:`decode_cache` shares one cache between
the training runs inside a block (the folds of a cross-validation), so every clip is
decoded, and every skipped file reported, once per block.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from client.audio import AudioConfig, load_audio
from client.errors import (
    AudioDecodeError,
    AudioError,
    AudioTooLongError,
    ConfigError,
    EmptyAudioError,
    NonFiniteAudioError,
    SilentAudioError,
)
from training.corpus import Clip, SkippedFile
from training.folds import Split

#: Loudest 25 ms frame below this (dBFS) counts as silent. Speech in RAVDESS and
#: CREMA-D peaks some 30-50 dB above it; microphone hiss of an empty take stays below.
DEFAULT_SILENCE_DBFS = -55.0
#: A clip more than this factor longer (or shorter) than its corpus's median duration is skipped.
DEFAULT_DURATION_FACTOR = 4.0
FRAME_S = 0.025
_REASONS = {
    AudioDecodeError: "cannot decode", EmptyAudioError: "empty", NonFiniteAudioError: "non-finite samples",
    SilentAudioError: "silent", AudioTooLongError: "too long for the corpus",
}
_LFS_POINTER = b"version https://git-lfs"


@dataclass(frozen=True)
class ScreenConfig:
    """Thresholds of the clip screen.

    Attributes:
        sample_rate: Hz the clips are decoded to (the model's rate).
        silence_dbfs: a clip whose loudest 25 ms frame (RMS) is below this is silent.
        duration_factor: a clip longer than ``factor`` x its corpus's median duration,
            or shorter than median / ``factor``, is out of range (> 1).
    """

    sample_rate: int = 16_000
    silence_dbfs: float = DEFAULT_SILENCE_DBFS
    duration_factor: float = DEFAULT_DURATION_FACTOR

    def __post_init__(self) -> None:
        if isinstance(self.sample_rate, bool) or int(self.sample_rate) != self.sample_rate or self.sample_rate <= 0:
            raise ConfigError(f"sample_rate={self.sample_rate}: must be a positive number of Hz")
        if not (math.isfinite(self.silence_dbfs) and -120 <= self.silence_dbfs < 0):
            raise ConfigError(f"silence_dbfs={self.silence_dbfs}: must be in [-120, 0) dBFS")
        if not (math.isfinite(self.duration_factor) and self.duration_factor > 1):
            raise ConfigError(f"duration_factor={self.duration_factor}: must be a number > 1")


class DecodeCache:
    """Decoded clips, or the :class:`AudioError` that refused them, one decode per file.

    Keyed by ``(path, size, mtime, sample rate)``: a file changed on disk is decoded again.
    ``reported`` holds the skips already reported, so a block of runs reports each once.
    """

    def __init__(self) -> None:
        self._items: dict[tuple, np.ndarray | AudioError] = {}
        self.reported: set[tuple[str, str]] = set()
        self.decodes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, path: str | Path, *, sample_rate: int) -> np.ndarray | AudioError:
        """``[n]`` float32 mono audio at ``sample_rate``, or the error that refused the file (never raised)."""
        path = Path(path)
        try:
            st = path.stat()
        except OSError:
            return AudioDecodeError(path, "no such file")
        key = (str(path), st.st_size, st.st_mtime_ns, int(sample_rate))
        if key not in self._items:
            self.decodes += 1
            try:
                self._items[key] = load_audio(path, config=AudioConfig(sample_rate=int(sample_rate)))
            except AudioError as exc:
                self._items[key] = _explained(exc, path)
        return self._items[key]


def _explained(exc: AudioError, path: Path) -> AudioError:
    """``exc``, or a clearer error for a git-lfs pointer file named like audio."""
    if isinstance(exc, AudioDecodeError):
        try:
            with path.open("rb") as fh:
                head = fh.read(len(_LFS_POINTER))
        except OSError:
            return exc
        if head == _LFS_POINTER:
            return AudioDecodeError(path, "a git-lfs pointer, not the audio: fetch the corpus with git lfs")
    return exc


_ACTIVE: ContextVar[DecodeCache | None] = ContextVar("ser_decode_cache", default=None)


@contextmanager
def decode_cache() -> Iterator[DecodeCache]:
    """Share one :class:`DecodeCache` between the training runs inside the block (nested blocks share the outer one).

    The cache holds every decoded clip until the block ends: as much memory as one
    run holds anyway (a run decodes its whole corpus), for as long as the block lasts.
    """
    active = _ACTIVE.get()
    if active is not None:
        yield active
        return
    cache = DecodeCache()
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def active_cache() -> DecodeCache | None:
    """The cache of the enclosing :func:`decode_cache` block, if any."""
    return _ACTIVE.get()


@dataclass(frozen=True)
class Screened:
    """The outcome of :func:`screen_clips`.

    Attributes:
        audio: ``{clip path: [n] float32 @ sample_rate}`` of every usable clip.
        skipped: one entry per unusable clip (``defect=True``), in input order.
        median_s: median duration of each corpus's decodable, voiced clips (s).
    """

    audio: dict[Path, np.ndarray]
    skipped: tuple[SkippedFile, ...]
    median_s: dict[str, float] = field(default_factory=dict)

    def keep(self, clips: Iterable[Clip]) -> tuple[Clip, ...]:
        """The usable ones of ``clips``."""
        return tuple(c for c in clips if c.path in self.audio)


def loudest_frame_dbfs(y: np.ndarray, *, sample_rate: int) -> float:
    """RMS of the loudest 25 ms frame of ``y`` (``[n]`` float32 in [-1, 1]), in dBFS (-inf for zeros)."""
    n = max(1, int(round(FRAME_S * sample_rate)))
    frames = y[: y.shape[0] // n * n].reshape(-1, n) if y.shape[0] >= n else y[None, :]
    power = float(np.max(np.mean(np.square(frames, dtype=np.float64), axis=1)))
    return 10.0 * math.log10(power) if power > 0 else -math.inf


def screen_clips(clips: Sequence[Clip], *, config: ScreenConfig = ScreenConfig(), cache: DecodeCache | None = None,
                 progress: bool = False, desc: str = "decode") -> Screened:
    """Decode every clip once and set aside those training must not use.

    Args:
        clips: the clips (of one or several corpora; durations are judged per ``Clip.corpus``).
        config: thresholds.
        cache: decode through this cache (default: the active :func:`decode_cache`, else a private one).
        progress: progress display (:mod:`client.progress`).
        desc: its label.

    Returns:
        :class:`Screened`: audio of the usable clips and one :class:`SkippedFile` per unusable one.
    """
    from client.progress import progress_bar

    cache = cache if cache is not None else active_cache() or DecodeCache()
    sr = int(config.sample_rate)
    skipped: dict[Path, SkippedFile] = {}
    audio: dict[Path, np.ndarray] = {}
    for c in progress_bar(clips, desc=desc, unit="clip", disable=not progress, leave=False):
        got = cache.get(c.path, sample_rate=sr)
        if isinstance(got, AudioError):
            skipped[c.path] = SkippedFile(c.path, c.corpus, _REASONS.get(type(got), "cannot decode"), got.detail, True)
            continue
        db = loudest_frame_dbfs(got, sample_rate=sr)
        if db < config.silence_dbfs:
            skipped[c.path] = SkippedFile(c.path, c.corpus, "silent",
                                          f"loudest 25 ms frame at {db:.0f} dBFS < {config.silence_dbfs:g} dBFS", True)
            continue
        audio[c.path] = got
    medians: dict[str, float] = {}
    for corpus in sorted({c.corpus for c in clips}):
        durations = [audio[c.path].shape[0] / sr for c in clips if c.corpus == corpus and c.path in audio]
        if not durations:
            continue
        med = medians[corpus] = float(np.median(durations))
        hi, lo = med * config.duration_factor, med / config.duration_factor
        for c in clips:
            if c.corpus != corpus or c.path not in audio:
                continue
            d = audio[c.path].shape[0] / sr
            if d > hi or d < lo:
                word, bound = ("long", f"> {config.duration_factor:g} x") if d > hi else ("short", f"< 1/{config.duration_factor:g} x")
                skipped[c.path] = SkippedFile(c.path, corpus, f"too {word} for the corpus",
                                              f"{d:.2f} s {bound} the corpus's median {med:.2f} s", True)
                del audio[c.path]
    order = {c.path: i for i, c in enumerate(clips)}
    return Screened(audio=audio, skipped=tuple(sorted(skipped.values(), key=lambda s: order[s.path])), median_s=medians)


def unreported(skipped: Iterable[SkippedFile], cache: DecodeCache | None) -> list[SkippedFile]:
    """The skips ``cache`` has not reported yet (all without a cache); marks them reported."""
    if cache is None:
        return list(skipped)
    new = [s for s in skipped if (str(s.path), s.reason) not in cache.reported]
    cache.reported.update((str(s.path), s.reason) for s in new)
    return new


def screen_split(split: Split, *, config: ScreenConfig = ScreenConfig(), cache: DecodeCache | None = None,
                 progress: bool = False) -> tuple[Split, Screened]:
    """Screen every clip of ``split`` (:func:`screen_clips`) and drop the unusable ones from its partitions.

    Returns:
        ``(split without the unusable clips, Screened)``.
    """
    screened = screen_clips([c for part in split for c in part], config=config, cache=cache, progress=progress)
    kept = Split(train=screened.keep(split.train), val=screened.keep(split.val), test=screened.keep(split.test),
                 seed=split.seed, extra=split.extra)
    return kept, screened
