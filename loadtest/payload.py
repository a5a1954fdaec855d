"""Real audio windows for load tests: a folder, a split manifest, or generated speech.

Requests in a load test must look like production requests, so every window
here is made by the one audio contract (:func:`client.audio.load_audio` then
:func:`client.audio.make_windows`) with the window and hop the *served* model
declares (its :class:`~client.contract.ModelContract`, read from the server).
Never zeros: the in-graph normalisation and the batcher see real signal.

Three sources (:class:`AudioSourceConfig`):

* ``audio_dir``: every audio file under a folder (recursive), sorted, at most
  ``max_clips``; unreadable files are skipped and counted, none usable is an error;
* ``manifest``: one partition (default ``test``, the held-out actors) of a split
  manifest written by :func:`training.folds.write_manifest`;
* neither: ``generated_clips`` clips of the deterministic synthetic speech of
  :mod:`training.synth_voice` (seeded), resampled through the same contract.

This module imports neither locust nor gevent, so the runner can build the same
pool before it launches Locust (and fail early with a typed error).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.audio import AUDIO_SUFFIXES, AudioConfig, list_audio_files, load_audio, make_windows
from client.contract import ModelContract
from client.errors import AudioError, ConfigError
from training.errors import CorpusError
from training.folds import PARTITIONS


@dataclass(frozen=True)
class AudioSourceConfig:
    """Where the load test's audio comes from.

    Attributes:
        audio_dir: a folder of audio files (searched recursively).
        manifest: a split manifest JSON (:func:`training.folds.write_manifest`).
        partition: which manifest partition to use (``test`` = held-out actors).
        generated_clips: clips of synthetic speech when neither folder nor manifest is given.
        max_clips: at most this many clips are decoded (files are taken in sorted order).
        seed: seed of the generated clips.
    """

    audio_dir: Path | None = None
    manifest: Path | None = None
    partition: str = "test"
    generated_clips: int = 8
    max_clips: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.audio_dir is not None:
            object.__setattr__(self, "audio_dir", Path(self.audio_dir))
        if self.manifest is not None:
            object.__setattr__(self, "manifest", Path(self.manifest))
        if self.audio_dir is not None and self.manifest is not None:
            raise ConfigError(
                f"audio_dir={str(self.audio_dir)!r} and manifest={str(self.manifest)!r}: give one audio source, not both"
            )
        if self.partition not in PARTITIONS:
            raise ConfigError(f"partition={self.partition!r}: expected one of {list(PARTITIONS)}")
        if self.generated_clips < 1:
            raise ConfigError(f"generated_clips={self.generated_clips}: must be >= 1")
        if self.max_clips < 1:
            raise ConfigError(f"max_clips={self.max_clips}: must be >= 1")

    @property
    def kind(self) -> str:
        """``folder``, ``manifest`` or ``generated``."""
        if self.audio_dir is not None:
            return "folder"
        return "manifest" if self.manifest is not None else "generated"

    def describe(self) -> str:
        """One line naming the source, for reports."""
        if self.audio_dir is not None:
            return f"folder {self.audio_dir}"
        if self.manifest is not None:
            return f"manifest {self.manifest} [{self.partition}]"
        return f"generated ({self.generated_clips} synthetic clips, seed {self.seed})"


@dataclass(frozen=True)
class WindowPool:
    """Fixed windows cut from real clips, ready to be sent.

    Attributes:
        waveforms: ``[N, W]`` float32 at the model's rate, zero-padded past ``num_samples``.
        num_samples: ``[N]`` int64, valid samples per window (1..W).
        clips: how many clips the windows came from.
        skipped: ``"path: reason"`` for each file that could not be used.
        source: description of the audio source.
    """

    waveforms: np.ndarray
    num_samples: np.ndarray
    clips: int
    skipped: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.waveforms.shape[0])

    def requests(self, *, windows_per_request: int, count: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
        """Cut the pool into request inputs, cycling through the windows.

        Args:
            windows_per_request: k, windows (batch rows) per request (>= 1).
            count: how many distinct requests to make.

        Returns:
            ``count`` pairs ``(waveform [k, W] float32, num_samples [k, 1] int64)``,
            C-contiguous, ready for ``InferInput.set_data_from_numpy``.
        """
        if windows_per_request < 1 or count < 1:
            raise ConfigError(f"windows_per_request={windows_per_request}, count={count}: both must be >= 1")
        n = len(self)
        out = []
        for r in range(count):
            idx = (np.arange(windows_per_request) + r * windows_per_request) % n
            out.append((
                np.ascontiguousarray(self.waveforms[idx], dtype=np.float32),
                np.ascontiguousarray(self.num_samples[idx].reshape(-1, 1), dtype=np.int64),
            ))
        return out


def folder_files(folder: Path, max_clips: int) -> list[Path]:
    """The first ``max_clips`` audio files under ``folder`` (sorted; ``CorpusError`` when none)."""
    if not folder.exists():
        raise CorpusError(f"{folder}: no such audio folder")
    if not folder.is_dir():
        raise CorpusError(f"{folder}: not a folder (give a folder of audio files, or a manifest)")
    files = list_audio_files(folder)
    if not files:
        raise CorpusError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) inside")
    return files[:max_clips]


def manifest_files(manifest: Path, partition: str, max_clips: int) -> list[Path]:
    """The first ``max_clips`` clip paths of one partition of a fold manifest (``CorpusError`` when empty)."""
    from training.folds import read_manifest  # noqa: PLC0415 - numpy-only module, imported when used

    split = read_manifest(manifest)
    clips = getattr(split, partition)
    if not clips:
        raise CorpusError(f"{manifest}: partition {partition!r} holds no clips")
    return [Path(c.path) for c in clips][:max_clips]


def generated_clips(count: int, seed: int) -> list[tuple[str, np.ndarray, int]]:
    """``(name, samples [n] float32, sample_rate)`` of synthetic speech clips (2-4 s each)."""
    from training.synth_specs import RAVDESS_EMOTIONS, ClipSpec  # noqa: PLC0415
    from training.synth_voice import INTERNAL_SR, Speaker, synthesize_clip  # noqa: PLC0415

    out = []
    for i in range(count):
        actor = 1 + i % 4
        spec = ClipSpec(actor, RAVDESS_EMOTIONS[i % len(RAVDESS_EMOTIONS)], 1 + (i // 8) % 2 if i % 8 else 1, 1 + i % 2, 1)
        y = synthesize_clip(spec, speaker=Speaker.sample(actor, seed=seed), seed=seed, sample_rate=INTERNAL_SR)
        out.append((f"<generated {spec.filename()}>", y, INTERNAL_SR))
    return out


def source_files(source: AudioSourceConfig) -> list[Path]:
    """The audio files ``source`` names (none for generated speech), listed without decoding them.

    Raises:
        CorpusError: the folder is missing or holds no audio, the manifest is missing or unreadable,
            or its partition is empty.
    """
    if source.kind == "folder":
        return folder_files(source.audio_dir, source.max_clips)
    if source.kind == "manifest":
        return manifest_files(source.manifest, source.partition, source.max_clips)
    return []


def build_window_pool(source: AudioSourceConfig, *, contract: ModelContract, audio: AudioConfig | None = None) -> WindowPool:
    """Decode the source's clips and cut them into the served model's windows.

    Args:
        source: where the audio comes from.
        contract: the served model's contract (window, hop and sample rate).
        audio: refusal thresholds (max duration, silence); its rate is replaced by the contract's.

    Returns:
        :class:`WindowPool` with ``waveforms [N, contract.window_samples]``.

    Raises:
        CorpusError: the folder is missing or empty, the manifest is missing,
            malformed or its partition empty, or no file could be used (the
            message quotes the first reason).
    """
    config = AudioConfig(
        sample_rate=contract.sample_rate,
        max_duration_s=(audio or AudioConfig()).max_duration_s,
        silence_peak=(audio or AudioConfig()).silence_peak,
    )
    waves: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    skipped: list[str] = []
    clips = 0

    def add(y: np.ndarray) -> None:
        nonlocal clips
        w = make_windows(y, window_samples=contract.window_samples, hop_samples=contract.hop_samples)
        waves.append(w.waveforms)
        counts.append(w.num_samples)
        clips += 1

    if source.kind == "generated":
        for name, y, sr in generated_clips(source.generated_clips, source.seed):
            add(load_audio(y, sample_rate=sr, config=config, name=name))
    else:
        files = source_files(source)
        for path in files:
            try:
                add(load_audio(path, config=config))
            except AudioError as exc:
                skipped.append(str(exc))
        if not waves:
            where = source.audio_dir if source.kind == "folder" else source.manifest
            raise CorpusError(f"{where}: none of {len(files)} audio file(s) is usable; first: {skipped[0]}")
    return WindowPool(
        waveforms=np.concatenate(waves).astype(np.float32, copy=False),
        num_samples=np.concatenate(counts).astype(np.int64, copy=False),
        clips=clips,
        skipped=tuple(skipped),
        source=source.describe(),
    )
