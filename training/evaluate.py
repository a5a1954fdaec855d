"""Clip-level evaluation exactly as serving does it: all windows, aggregated.

A clip is cut with :func:`client.audio.make_windows` (the model's W and hop),
every window is scored by the :class:`training.model.WaveformClassifier`, and
the window probabilities are combined with :func:`client.audio.aggregate`
(weighted by valid samples): the same path the Triton client takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from client.audio import aggregate, make_windows
from training.data import LoadedClip


@dataclass(frozen=True)
class ClipScores:
    """Predictions for a set of clips.

    Attributes:
        probabilities: ``[N, C]`` float32, aggregated over each clip's windows.
        label_ids: ``[N]`` int64 true classes.
        labels: class names (C).
    """

    probabilities: np.ndarray
    label_ids: np.ndarray
    labels: tuple[str, ...]

    @property
    def predictions(self) -> np.ndarray:
        """``[N]`` int64 argmax classes."""
        return self.probabilities.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        """Fraction of clips whose argmax is the true class (nan for no clips)."""
        if self.label_ids.size == 0:
            return float("nan")
        return float((self.predictions == self.label_ids).mean())

    def confusion(self) -> np.ndarray:
        """``[C, C]`` int64 counts, rows true, columns predicted."""
        c = len(self.labels)
        m = np.zeros((c, c), dtype=np.int64)
        np.add.at(m, (self.label_ids, self.predictions), 1)
        return m


@torch.no_grad()
def score_clips(
    classifier: torch.nn.Module,
    loaded: Sequence[LoadedClip],
    *,
    labels: Sequence[str],
    window_samples: int,
    hop_samples: int,
    batch_size: int = 32,
) -> ClipScores:
    """Score whole clips: windows -> classifier -> probability aggregation.

    Args:
        classifier: a ``WaveformClassifier`` (returns ``(logits, probabilities)``).
        loaded: clips decoded to 16 kHz (:func:`training.data.load_clips`).
        labels: class names in logit order.
        window_samples: W (samples).
        hop_samples: window step (samples).
        batch_size: windows per forward pass.

    Returns:
        :class:`ClipScores`.
    """
    was_training = classifier.training
    classifier.eval()
    wins = [make_windows(lc.audio, window_samples=window_samples, hop_samples=hop_samples) for lc in loaded]
    if wins:
        all_w = np.concatenate([w.waveforms for w in wins])
        all_n = np.concatenate([w.num_samples for w in wins])
        probs = []
        for s in range(0, all_w.shape[0], batch_size):
            _, p = classifier(torch.from_numpy(all_w[s : s + batch_size]),
                              torch.from_numpy(all_n[s : s + batch_size]).reshape(-1, 1))
            probs.append(p.float().numpy())
        window_probs = np.concatenate(probs)
    out, start = [], 0
    for w in wins:
        k = len(w)
        out.append(aggregate(window_probs[start : start + k], w.num_samples))
        start += k
    classifier.train(was_training)
    c = len(labels)
    return ClipScores(
        probabilities=np.stack(out).astype(np.float32) if out else np.zeros((0, c), np.float32),
        label_ids=np.asarray([lc.label_id for lc in loaded], dtype=np.int64),
        labels=tuple(labels),
    )
