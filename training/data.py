"""Training data through the one audio contract (client.audio).

Every clip is decoded, made mono and resampled to 16 kHz once by
:func:`client.audio.load_audio` and cut by :func:`client.audio.make_windows`,
exactly as the client does at serving time. No normalisation happens here: it
is inside :class:`training.model.WaveformClassifier` (and the ONNX graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from client.audio import AudioConfig, Windows, load_audio, make_windows
from client.errors import ConfigError
from training.corpus import Clip

#: Window lengths the automatic choice may return (seconds).
MIN_WINDOW_S = 1.0
MAX_WINDOW_S = 8.0


def choose_window_samples(
    durations_s: Sequence[float],
    *,
    sample_rate: int = 16_000,
    quantile: float = 0.9,
    step_s: float = 0.5,
    min_s: float = MIN_WINDOW_S,
    max_s: float = MAX_WINDOW_S,
) -> int:
    """Pick the model's window W from the corpus's clip durations.

    The ``quantile`` (default 90th percentile) of the durations, rounded *up* to a
    multiple of ``step_s`` and clamped to ``[min_s, max_s]``: most clips then fit in
    one window (zero-padded, true length in ``num_samples``), the longest few are
    cut into overlapping windows whose probabilities are averaged, and W stays
    small enough for batching on a CPU. RAVDESS speech (3-5 s) gives about 4.5 s;
    the synthetic corpus (1.5-3.5 s) gives 3.5 s.

    Args:
        durations_s: clip durations (s).
        sample_rate: Hz of the model input.
        quantile: which quantile of the durations to cover, in (0, 1].
        step_s: rounding step (s).
        min_s: shortest window returned (s).
        max_s: longest window returned (s).

    Returns:
        W in samples at ``sample_rate``.
    """
    d = np.asarray(list(durations_s), dtype=np.float64)
    if d.size == 0 or not np.isfinite(d).all() or (d <= 0).any():
        raise ConfigError(f"durations_s: need at least one positive finite duration, got {d.size} values")
    if not 0 < quantile <= 1:
        raise ConfigError(f"quantile={quantile}: must be in (0, 1]")
    if not 0 < min_s <= max_s or step_s <= 0:
        raise ConfigError(f"min_s={min_s}, max_s={max_s}, step_s={step_s}: need 0 < min_s <= max_s, step_s > 0")
    q = float(np.quantile(d, quantile))
    seconds = min(max(math.ceil(q / step_s - 1e-9) * step_s, min_s), max_s)
    return int(round(seconds * sample_rate))


@dataclass(frozen=True)
class LoadedClip:
    """A clip decoded to model rate.

    Attributes:
        audio: ``[n]`` float32 @ the model's rate.
        label_id: class index.
        clip: the source :class:`Clip`.
    """

    audio: np.ndarray
    label_id: int
    clip: Clip


def load_clips(clips: Sequence[Clip], *, labels: Sequence[str], sample_rate: int = 16_000,
               progress: bool = False, desc: str = "load") -> list[LoadedClip]:
    """Decode every clip once through :func:`client.audio.load_audio`.

    Raises:
        ConfigError: a clip's label is not in ``labels``.
        AudioError: a clip cannot be decoded (names the file).
    """
    from client.progress import progress_bar

    index = {lab: i for i, lab in enumerate(labels)}
    config = AudioConfig(sample_rate=sample_rate)
    out = []
    for c in progress_bar(clips, desc=desc, unit="clip", disable=not progress, leave=False):
        if c.label not in index:
            raise ConfigError(f"{c.path}: label {c.label!r} is not in the class set {list(labels)}")
        out.append(LoadedClip(load_audio(c.path, config=config), index[c.label], c))
    return out


class WindowDataset(Dataset):
    """One fixed window per clip, as the model sees it.

    Training (``train=True``): a clip longer than W gives a random W-sample crop
    each time it is drawn (fresh augmentation every epoch, seeded by
    ``(seed, epoch, clip index)`` so a resumed run crops exactly as an
    uninterrupted one; the trainer calls :meth:`set_epoch`); shorter clips are
    zero-padded. Evaluation: the window starting at sample 0 (use
    :meth:`windows` and :func:`client.audio.aggregate` for the full clip).

    Items are dicts for the HF Trainer: ``waveform [W] float32``,
    ``num_samples [1] int64``, ``labels`` int64 scalar.
    """

    def __init__(self, loaded: Sequence[LoadedClip], *, window_samples: int, hop_samples: int,
                 train: bool, seed: int = 0) -> None:
        if window_samples <= 0 or not 0 < hop_samples <= window_samples:
            raise ConfigError(f"window_samples={window_samples}, hop_samples={hop_samples}: need 0 < hop <= window")
        self.loaded = list(loaded)
        self.window_samples = int(window_samples)
        self.hop_samples = int(hop_samples)
        self.train = train
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of epoch ``epoch`` (0-based)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.loaded)

    def windows(self, i: int) -> Windows:
        """All windows of clip ``i`` (``make_windows`` with the model's W and hop)."""
        return make_windows(self.loaded[i].audio, window_samples=self.window_samples, hop_samples=self.hop_samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        y = self.loaded[i].audio
        w = self.window_samples
        if self.train and y.shape[0] > w:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            start = int(rng.integers(0, y.shape[0] - w + 1))
            y = y[start : start + w]
        win = make_windows(y, window_samples=w, hop_samples=self.hop_samples)
        return {
            "waveform": torch.from_numpy(win.waveforms[0]),
            "num_samples": torch.from_numpy(win.num_samples[:1].copy()),
            "labels": torch.tensor(self.loaded[i].label_id, dtype=torch.int64),
        }


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items: ``waveform [B, W]`` float32, ``num_samples [B, 1]`` int64, ``labels [B]`` int64."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
