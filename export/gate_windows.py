"""The windows the export's variant gate runs, and how it batches them.

A served window can arrive alone or merged by Triton's dynamic batcher with up to
``max_batch_size - 1`` windows of other callers, of any loudness. The gate therefore runs
the model under test twice over the same windows (:func:`gate_runs`):

* every window alone (batch 1), and
* in mixed batches of ``max_batch_size`` (:func:`mixed_batches`): the windows sorted by
  loudness and dealt round-robin, so each batch holds quiet and loud, short and full
  windows side by side;

and a window's two answers must agree (:func:`export.parity.compare_variants`).
Which windows: the checkpoint's held-out clips (:func:`held_out_windows`) when it
records its split, else seeded synthetic ones (:func:`export.parity.make_parity_batches`).
With held-out clips the check also scores whole clips as serving does (:func:`clip_probabilities`):
clip agreement with fp32 and accuracy against the labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

Batch = tuple[np.ndarray, np.ndarray]


def stack_windows(batches: Sequence[Batch]) -> Batch:
    """``(waveforms [n, W] float32, num_samples [n, 1] int64)``: every row of ``batches`` in order."""
    waveforms = np.concatenate([np.asarray(w, dtype=np.float32) for w, _ in batches])
    counts = np.concatenate([np.asarray(n, dtype=np.int64).reshape(-1, 1) for _, n in batches])
    return np.ascontiguousarray(waveforms), np.ascontiguousarray(counts)


def mixed_batches(waveforms: np.ndarray, num_samples: np.ndarray, *, max_batch_size: int) -> list[np.ndarray]:
    """Row indices of batches of (at most) ``max_batch_size`` windows spanning the loudness range.

    Windows are sorted by RMS over their valid samples and dealt round-robin into
    ``ceil(n / max_batch_size)`` batches: batch ``j`` takes sorted positions ``j, j + k, j + 2k...``,
    so every batch holds windows from the quietest to the loudest.

    Returns:
        One int array per batch; together they index every row exactly once.
    """
    n = len(waveforms)
    rms = [float(np.sqrt(np.mean(np.square(waveforms[i, : max(int(num_samples[i, 0]), 1)], dtype=np.float64))))
           for i in range(n)]
    order = np.argsort(rms, kind="stable")
    k = -(-n // max_batch_size)
    return [order[j::k] for j in range(k)]


def gate_runs(waveforms: np.ndarray, num_samples: np.ndarray, *, max_batch_size: int) -> tuple[list[Batch], list[np.ndarray]]:
    """``(runs, mixes)``: the batches the model under test runs, in order, and the mixed batches' row indices.

    ``runs`` is every window alone (``n`` batches of 1, in row order) followed by the mixed
    batches of :func:`mixed_batches` (``mixes[j]`` are the rows of ``runs[n + j]``).
    """
    mixes = mixed_batches(waveforms, num_samples, max_batch_size=max_batch_size)
    alone = [(waveforms[i : i + 1], num_samples[i : i + 1]) for i in range(len(waveforms))]
    return alone + [(waveforms[ix], num_samples[ix]) for ix in mixes], mixes


@dataclass(frozen=True)
class HeldOutWindows:
    """A checkpoint's held-out clips cut into windows, with the clip each window belongs to.

    Attributes:
        waveforms: ``[n, W]`` float32, zero after ``num_samples``.
        num_samples: ``[n, 1]`` int64.
        clip_of_window: ``[n]`` int, index of each window's clip.
        clip_labels: ``[clips]`` int, each clip's true class index.
    """

    waveforms: np.ndarray
    num_samples: np.ndarray
    clip_of_window: np.ndarray
    clip_labels: np.ndarray

    @property
    def batches(self) -> list[Batch]:
        """The windows as one batch (the checks re-batch them)."""
        return [(self.waveforms, self.num_samples)]

    @property
    def clips(self) -> tuple[np.ndarray, np.ndarray]:
        """``(clip_of_window, clip_labels)``, as :func:`export.parity.compare_variants` takes them."""
        return self.clip_of_window, self.clip_labels


def clip_probabilities(probabilities: np.ndarray, num_samples: np.ndarray, clip_of_window: np.ndarray,
                       clips: int) -> np.ndarray:
    """``[clips, C]``: each clip's window probabilities combined as serving combines them (:func:`client.audio.aggregate`)."""
    from client.audio import aggregate

    return np.stack([aggregate(probabilities[clip_of_window == c], num_samples[clip_of_window == c].reshape(-1))
                     for c in range(clips)])


def held_out_windows(checkpoint: str | Path, *, window_samples: int, hop_samples: int) -> HeldOutWindows | None:
    """The windows of a checkpoint's held-out (test) clips, cut as serving cuts them, or ``None``.

    ``None`` when the checkpoint records no split manifest (``extra.split_manifest`` of its
    ``ser_checkpoint.json``), the manifest or its clips are gone, or its test split is empty:
    the gate then uses seeded windows.
    """
    from client.audio import make_windows
    from training.data import load_clips
    from training.errors import CorpusError
    from training.folds import read_manifest

    info_path = Path(checkpoint) / "ser_checkpoint.json"
    try:
        info = json.loads(info_path.read_text())
        manifest = Path(info.get("extra", {}).get("split_manifest", ""))
        if not manifest.is_file():
            return None
        clips = read_manifest(manifest).test
        loaded = load_clips(clips, labels=tuple(info["labels"]), sample_rate=int(info.get("sample_rate", 16_000)))
    except (OSError, ValueError, KeyError, CorpusError):
        return None
    if not loaded:
        return None
    wins = [make_windows(lc.audio, window_samples=window_samples, hop_samples=hop_samples) for lc in loaded]
    waveforms, counts = stack_windows([(w.waveforms, w.num_samples) for w in wins])
    clip_of_window = np.concatenate([np.full(len(w.waveforms), c) for c, w in enumerate(wins)])
    return HeldOutWindows(waveforms, counts, clip_of_window, np.array([lc.label_id for lc in loaded]))
