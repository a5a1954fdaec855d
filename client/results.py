"""What the client returns, and how the server's answers are read into it.

:class:`Prediction` (one clip), :class:`ClassifyResult` (one entry of a batch: a
prediction or its error), :class:`ModelStats` (the statistics extension) and the
readers of the server's raw answers: :func:`parse_classification` (the
classification extension's strings) and :func:`model_stats` (the statistics JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import ContractError, SerError


@dataclass(frozen=True)
class Prediction:
    """The classification of one clip.

    Attributes:
        source: the file path or name the audio came from.
        label: the most probable class.
        confidence: its aggregated probability, in [0, 1].
        probabilities: ``{label: probability}`` over all C classes (sums to 1),
            the valid-sample-weighted mean of the window probabilities.
        window_probabilities: ``[k, C]`` float32, one row per window sent.
        latency_s: wall time of the whole call (decode, windows, requests), seconds.
        window_offsets: ``[k]`` int64, start of each window in the 16 kHz clip (samples);
            None when the windows were sent directly.
        window_num_samples: ``[k]`` int64, valid samples of each window (the aggregation weights).
        top_k: with ``top_k=k``: the k most probable ``(label, probability)`` of the clip, best first.
        window_top_k: with ``top_k=k``: per window, Triton's classification extension's
            ``(label, logit score)`` pairs, best first (``class_count`` on ``logits``).
        preprocess_s: seconds spent decoding, resampling and windowing.
        infer_s: seconds spent in requests (including retries).
        values: a model with a regression head (``contract.regression``): ``{name: value}``,
            the valid-sample-weighted mean of the window values (``window_probabilities``
            then holds the window values); ``label`` is ``""``, ``confidence`` nan and
            ``probabilities`` empty.
    """

    source: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    window_probabilities: np.ndarray
    latency_s: float
    window_offsets: np.ndarray | None = None
    window_num_samples: np.ndarray | None = None
    top_k: tuple[tuple[str, float], ...] = ()
    window_top_k: tuple[tuple[tuple[str, float], ...], ...] = ()
    preprocess_s: float = 0.0
    infer_s: float = 0.0
    values: dict[str, float] = field(default_factory=dict)

    @property
    def num_windows(self) -> int:
        """k, the number of windows the clip was cut into."""
        return int(self.window_probabilities.shape[0])


@dataclass(frozen=True)
class ClassifyResult:
    """One entry of :meth:`~client.sync_client.SerClient.classify_many`: a prediction or the error it met.

    Attributes:
        index: position of the source in the input sequence.
        source: the file path or name.
        prediction: the result, or None on error.
        error: the typed error, or None on success.
    """

    index: int
    source: str
    prediction: Prediction | None = None
    error: SerError | None = None

    @property
    def ok(self) -> bool:
        """Whether the clip was classified."""
        return self.error is None


@dataclass(frozen=True)
class ModelStats:
    """Cumulative server-side statistics of one model (Triton statistics extension).

    Attributes:
        model: model name.
        inference_count: inferences performed (a batch of n counts n).
        execution_count: model executions (``execute()`` calls); fewer than
            ``inference_count`` means the dynamic batcher merged requests.
        success_count: successful requests.
        failure_count: failed requests.
        queue_ns: total time requests waited in the queue, nanoseconds.
        compute_infer_ns: total model compute time, nanoseconds.
    """

    model: str
    inference_count: int
    execution_count: int
    success_count: int
    failure_count: int
    queue_ns: int
    compute_infer_ns: int

    @property
    def mean_batch_size(self) -> float:
        """inference_count / execution_count (0 before any execution)."""
        return self.inference_count / self.execution_count if self.execution_count else 0.0



def parse_classification(row: Iterable[Any], *, model: str = "model") -> tuple[tuple[str, float], ...]:
    """Parse one window's classification-extension strings ``b"score:index:label"`` into ``(label, score)``.

    Raises:
        ContractError: an entry is not ``score:index:label`` (the label may contain ``:``).
    """
    out = []
    for entry in row:
        text = entry.decode("utf-8") if isinstance(entry, bytes) else str(entry)
        score, _, rest = text.partition(":")
        _, _, label = rest.partition(":")
        try:
            out.append((label, float(score)))
        except ValueError:
            raise ContractError(f"model {model!r}: classification entry {text!r} is not 'score:index:label'") from None
        if not label:
            raise ContractError(f"model {model!r}: classification entry {text!r} has no label (label_filename unset?)")
    return tuple(out)


def model_stats(model: str, raw: Mapping[str, Any]) -> ModelStats:
    """Sum the statistics JSON (gRPC strings or HTTP ints) over the model's versions."""
    totals = dict(inference=0, execution=0, success=0, fail=0, queue=0, infer=0)
    for entry in raw.get("model_stats", []):
        if entry.get("name") != model:
            continue
        stats = entry.get("inference_stats", {})
        totals["inference"] += int(entry.get("inference_count", 0))
        totals["execution"] += int(entry.get("execution_count", 0))
        totals["success"] += int(stats.get("success", {}).get("count", 0))
        totals["fail"] += int(stats.get("fail", {}).get("count", 0))
        totals["queue"] += int(stats.get("queue", {}).get("ns", 0))
        totals["infer"] += int(stats.get("compute_infer", {}).get("ns", 0))
    return ModelStats(
        model=model,
        inference_count=totals["inference"],
        execution_count=totals["execution"],
        success_count=totals["success"],
        failure_count=totals["fail"],
        queue_ns=totals["queue"],
        compute_infer_ns=totals["infer"],
    )


__all__ = ["ClassifyResult", "ModelStats", "Prediction", "model_stats", "parse_classification"]
