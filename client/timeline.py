"""Which emotion occurs when: per-window scores of one clip, and the segments they merge into.

The windows of :func:`client.audio.make_windows` overlap (hop ``W/2`` by default)
and the last one is aligned to the clip's end, so their spans cannot be laid end
to end as they are. Each window *owns* the part of the clip nearer to it than to
its neighbours: the boundary between windows ``i-1`` and ``i`` is the middle of
their overlap, ``(start_i + end_{i-1}) / 2``; the first window owns from 0, the
last up to the clip's end. Consecutive windows whose best class is the same merge
into one :class:`Segment`, so the segments tile ``[0, duration]`` without gaps or
overlaps ("angry from 12.0 s to 19.5 s"). A window without scores (all NaN: the audio model's
speech gate held it back) is labelled :data:`client.vad.NO_SPEECH`, as the streaming model
labels its windows without speech, so runs of no speech are segments too.

Both sides use this module: the server-side audio model (``ser``) returns the
timeline it builds, and a client-side :class:`~client.results.Prediction`
turns into the same timeline with :func:`timeline_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import ConfigError
from .vad import NO_SPEECH


@dataclass(frozen=True)
class Segment:
    """A stretch of the clip whose windows share their best class.

    Attributes:
        label: the class.
        start_s: start, seconds from the clip's beginning.
        end_s: end, seconds (> ``start_s``).
    """

    label: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Timeline:
    """Per-window scores of one clip and their merged segments.

    Attributes:
        start_s: ``[k]`` float64, start of each window in the clip, seconds.
        end_s: ``[k]`` float64, end of each window's valid samples, seconds.
        scores: ``[k, N]`` float32, per-window scores (class probabilities for a categorical head).
        segments: consecutive windows with the same best class, merged; they tile ``[0, duration_s]``.
        duration_s: the clip's duration, seconds.
    """

    start_s: np.ndarray
    end_s: np.ndarray
    scores: np.ndarray
    segments: tuple[Segment, ...]
    duration_s: float

    def __len__(self) -> int:
        return int(self.start_s.shape[0])


def boundaries(starts: np.ndarray, ends: np.ndarray, *, total: float) -> np.ndarray:
    """Where each window's owned part begins and ends: ``[k + 1]`` float64 from 0 to ``total``.

    Args:
        starts: ``[k]`` window starts, ascending (any unit).
        ends: ``[k]`` window ends (start + valid length), same unit.
        total: the clip's length, same unit (>= ``ends[-1]``).
    """
    starts = np.asarray(starts, dtype=np.float64).reshape(-1)
    ends = np.asarray(ends, dtype=np.float64).reshape(-1)
    inner = (starts[1:] + ends[:-1]) / 2.0
    return np.concatenate([[0.0], inner, [float(total)]])


def merge_segments(labels: Sequence[str], bounds: np.ndarray) -> tuple[Segment, ...]:
    """Merge consecutive equal labels; window ``i`` owns ``[bounds[i], bounds[i + 1])`` (seconds)."""
    out: list[Segment] = []
    for i, label in enumerate(labels):
        start, end = float(bounds[i]), float(bounds[i + 1])
        if out and out[-1].label == label:
            out[-1] = Segment(label, out[-1].start_s, end)
        else:
            out.append(Segment(label, start, end))
    return tuple(out)


def build_timeline(
    offsets: np.ndarray,
    num_samples: np.ndarray,
    scores: np.ndarray,
    *,
    labels: Sequence[str],
    sample_rate: int,
    total_samples: int | None = None,
) -> Timeline:
    """The timeline of one clip from its windows and their scores.

    Args:
        offsets: ``[k]`` int, window starts in samples (ascending), as :class:`client.audio.Windows` has them.
        num_samples: ``[k]`` int, valid samples per window.
        scores: ``[k, N]`` float, per-window scores; a window's label is its arg-max, or
            :data:`~client.vad.NO_SPEECH` for a row of NaN (a window the speech gate held back).
        labels: the N class names.
        sample_rate: Hz of ``offsets`` and ``num_samples``.
        total_samples: the clip's length in samples (default: the end of the last window).

    Returns:
        :class:`Timeline`.

    Raises:
        ConfigError: inconsistent shapes or an empty clip.
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1)
    n = np.asarray(num_samples, dtype=np.int64).reshape(-1)
    p = np.asarray(scores, dtype=np.float32)
    if off.size == 0 or n.shape != off.shape or p.ndim != 2 or p.shape[0] != off.size or p.shape[1] != len(labels):
        raise ConfigError(
            f"offsets {off.shape}, num_samples {n.shape}, scores {p.shape}, {len(labels)} labels: "
            "need [k], [k], [k, N] and N labels with k >= 1"
        )
    if sample_rate <= 0:
        raise ConfigError(f"sample_rate={sample_rate}: must be a positive number of Hz")
    total = int(total_samples) if total_samples is not None else int((off + n).max())
    start_s = off / float(sample_rate)
    end_s = (off + n) / float(sample_rate)
    bounds = boundaries(start_s, end_s, total=total / float(sample_rate))
    scored = ~np.isnan(p).all(axis=1)
    best = [labels[int(i)] if ok else NO_SPEECH for i, ok in zip(np.argmax(np.nan_to_num(p, nan=-np.inf), axis=1), scored,
                                                                  strict=True)]
    return Timeline(start_s=start_s, end_s=end_s, scores=p, segments=merge_segments(best, bounds),
                    duration_s=total / float(sample_rate))


def timeline_of(prediction, *, sample_rate: int) -> Timeline:
    """The timeline of a :class:`~client.results.Prediction` (window offsets, counts and probabilities).

    Args:
        prediction: a prediction whose ``window_offsets`` and ``window_num_samples`` are set.
        sample_rate: the model's rate (``client.contract.sample_rate``), Hz.

    Raises:
        ConfigError: the prediction carries no window offsets.
    """
    if prediction.window_offsets is None or prediction.window_num_samples is None:
        raise ConfigError(f"{prediction.source}: prediction has no window offsets (windows were sent directly)")
    return build_timeline(
        prediction.window_offsets, prediction.window_num_samples, prediction.window_probabilities,
        labels=list(prediction.probabilities), sample_rate=sample_rate,
    )
