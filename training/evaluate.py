"""Clip-level evaluation exactly as serving does it: all windows, aggregated.

A clip is cut with :func:`client.audio.make_windows` (the model's W and hop),
every window is scored by the :class:`training.model.WaveformClassifier`, and
the window probabilities are combined with :func:`client.audio.aggregate`
(weighted by valid samples): the same path the Triton client takes. The window
scorer is either the PyTorch classifier or an ONNX file run by ONNX Runtime
(:func:`onnx_window_scorer`), so a checkpoint and its exported variants are scored
on a fold's test split by the same code (:func:`evaluate_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from client.audio import aggregate, make_windows
from client.contract import default_hop_samples
from training.data import LoadedClip
from training.errors import CheckpointError, CorpusError
from training.metrics import Metrics, Predictions, confusion_matrix

#: ``(waveforms [B, W] float32, num_samples [B, 1] int64) -> probabilities [B, C] float32``.
WindowScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


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
        return confusion_matrix(self.label_ids, self.predictions, num_classes=len(self.labels))

    def metrics(self) -> Metrics:
        """Accuracy, UAR, weighted/macro F1, per-class figures (:class:`training.metrics.Metrics`)."""
        return Metrics.from_confusion(self.confusion(), labels=self.labels)

    def predictions_of(self, loaded: Sequence[LoadedClip]) -> Predictions:
        """These scores as :class:`training.metrics.Predictions` of the clips they were computed on."""
        return Predictions(
            labels=self.labels, paths=tuple(str(lc.clip.path) for lc in loaded),
            actors=tuple(int(lc.clip.actor) for lc in loaded), corpora=tuple(lc.clip.corpus for lc in loaded),
            y_true=self.label_ids, y_pred=self.predictions, probabilities=self.probabilities,
        )


def torch_window_scorer(classifier: torch.nn.Module) -> WindowScorer:
    """A :data:`WindowScorer` over a ``WaveformClassifier`` (eval mode, no grad)."""

    def run(waveforms: np.ndarray, num_samples: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            _, p = classifier(torch.from_numpy(waveforms), torch.from_numpy(num_samples).reshape(-1, 1))
        return p.float().numpy()

    return run


def onnx_window_scorer(path: str | Path, *, threads: int = 0) -> WindowScorer:
    """A :data:`WindowScorer` over an exported ONNX model (tensors named as in ``client.contract``).

    The session has the served model's options (:func:`client.onnx_session.open_session`);
    ``threads`` are its intra-op threads (0: the served default, ``min(4, cpu_count)``).

    Raises:
        CheckpointError: the file is missing or is not a model with the bundle's tensors.
    """
    from client.contract import INPUT_NAMES, INPUT_NUM_SAMPLES, INPUT_WAVEFORM, OUTPUT_PROBABILITIES
    from client.onnx_session import open_session

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such ONNX file")
    try:
        session = open_session(path, intra_op_threads=threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise CheckpointError(f"{path}: cannot load ONNX model: {str(exc).splitlines()[0]}") from None
    names = {i.name for i in session.get_inputs()}
    if names != set(INPUT_NAMES) or OUTPUT_PROBABILITIES not in {o.name for o in session.get_outputs()}:
        raise CheckpointError(f"{path}: inputs {sorted(names)}: not the bundle's {list(INPUT_NAMES)} -> probabilities")

    def run(waveforms: np.ndarray, num_samples: np.ndarray) -> np.ndarray:
        out = session.run([OUTPUT_PROBABILITIES], {INPUT_WAVEFORM: waveforms,
                                                   INPUT_NUM_SAMPLES: num_samples.reshape(-1, 1).astype(np.int64)})
        return np.asarray(out[0], dtype=np.float32)

    return run


@torch.no_grad()
def score_clips(
    classifier: torch.nn.Module | WindowScorer,
    loaded: Sequence[LoadedClip],
    *,
    labels: Sequence[str],
    window_samples: int,
    hop_samples: int,
    batch_size: int = 32,
) -> ClipScores:
    """Score whole clips: windows -> classifier -> probability aggregation.

    Args:
        classifier: a ``WaveformClassifier`` (returns ``(logits, probabilities)``),
            or any :data:`WindowScorer` (e.g. :func:`onnx_window_scorer`).
        loaded: clips decoded to 16 kHz (:func:`training.data.load_clips`).
        labels: class names in logit order.
        window_samples: W (samples).
        hop_samples: window step (samples).
        batch_size: windows per forward pass.

    Returns:
        :class:`ClipScores`.
    """
    module = classifier if isinstance(classifier, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    scorer = torch_window_scorer(module.eval()) if module is not None else classifier
    wins = [make_windows(lc.audio, window_samples=window_samples, hop_samples=hop_samples) for lc in loaded]
    if wins:
        all_w = np.concatenate([w.waveforms for w in wins])
        all_n = np.concatenate([w.num_samples for w in wins])
        probs = [scorer(all_w[s : s + batch_size], all_n[s : s + batch_size].reshape(-1, 1))
                 for s in range(0, all_w.shape[0], batch_size)]
        window_probs = np.concatenate(probs)
    out, start = [], 0
    for w in wins:
        k = len(w)
        out.append(aggregate(window_probs[start : start + k], w.num_samples))
        start += k
    if module is not None:
        module.train(was_training)
    c = len(labels)
    return ClipScores(
        probabilities=np.stack(out).astype(np.float32) if out else np.zeros((0, c), np.float32),
        label_ids=np.asarray([lc.label_id for lc in loaded], dtype=np.int64),
        labels=tuple(labels),
    )


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_checkpoint` measured.

    Attributes:
        predictions: clip-level predictions (saved as ``predictions.{csv,json}`` with ``out``).
        metrics: their :class:`training.metrics.Metrics`.
        model: what was scored (checkpoint directory or ONNX file).
        partition: which partition of the manifest.
    """

    predictions: Predictions
    metrics: Metrics
    model: str
    partition: str

    def __str__(self) -> str:
        m = self.metrics
        return (f"{self.model} on {m.confusion.sum()} {self.partition} clips: accuracy {m.accuracy:.1%}, "
                f"UAR {m.balanced_accuracy:.1%}, weighted F1 {m.weighted_f1:.1%}, macro F1 {m.macro_f1:.1%} "
                f"(chance {1 / len(m.labels):.1%})")


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    manifest: str | Path,
    partition: str = "test",
    onnx: str | Path | None = None,
    roots=None,
    out: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Evaluation:
    """Score a checkpoint (PyTorch) or one of its ONNX variants on a manifest's partition.

    Same windows and aggregation as serving (:func:`score_clips`). The labels,
    window and hop come from the checkpoint's ``ser_checkpoint.json``; clips whose
    label the model does not know count as errors against the class set (e.g. a
    CREMA-D model tested on RAVDESS "surprised"): metrics are over the model's
    labels plus such extra true labels.

    Args:
        checkpoint: directory written by ``ser train``.
        manifest: split manifest (``split.json`` of a fold).
        partition: ``"test"``, ``"val"`` or ``"train"``.
        onnx: score this exported ONNX file (fp32/int8 variant) instead of the PyTorch weights.
        roots: corpus root(s) to resolve the manifest against (default: the recorded ones).
        out: if given, write ``predictions.csv``, ``predictions.json`` and ``metrics.json`` there.
        batch_size: windows per forward pass.
        progress: progress display while decoding (:mod:`client.progress`).

    Raises:
        CheckpointError: missing checkpoint or ONNX file.
        CorpusError: missing manifest, unknown partition or an empty one.
    """
    import json

    from training.data import load_clips
    from training.folds import PARTITIONS, read_manifest
    from training.metrics import save_predictions
    from training.model import CheckpointInfo, load_checkpoint

    if partition not in PARTITIONS:
        raise CorpusError(f"partition={partition!r}: expected one of {list(PARTITIONS)}")
    split = read_manifest(manifest, root=roots)
    clips = list(getattr(split, partition))
    if not clips:
        raise CorpusError(f"{manifest}: partition {partition!r} holds no clips")
    if onnx is not None:
        info = CheckpointInfo.load(Path(checkpoint))
        scorer: torch.nn.Module | WindowScorer = onnx_window_scorer(onnx)
        model_name = str(onnx)
    else:
        model, info = load_checkpoint(checkpoint)
        scorer = info.classifier(model)
        model_name = str(checkpoint)
    labels = tuple(info.labels) + tuple(sorted({c.label for c in clips} - set(info.labels)))
    loaded = load_clips(clips, labels=labels, sample_rate=info.sample_rate, progress=progress, desc=f"load {partition}")
    scores = score_clips(scorer, loaded, labels=info.labels, window_samples=info.window_samples,
                         hop_samples=info.hop_samples or default_hop_samples(info.window_samples), batch_size=batch_size)
    probs = np.zeros((len(loaded), len(labels)), np.float32)
    probs[:, : len(info.labels)] = scores.probabilities
    pred = Predictions(labels=labels, paths=tuple(str(c.path) for c in clips), actors=tuple(c.actor for c in clips),
                       corpora=tuple(c.corpus for c in clips),
                       y_true=np.asarray([lc.label_id for lc in loaded], np.int64), y_pred=probs.argmax(axis=1),
                       probabilities=probs)
    result = Evaluation(pred, pred.metrics(), model_name, partition)
    if out is not None:
        save_predictions(pred, out)
        (Path(out) / "metrics.json").write_text(json.dumps(
            {"model": model_name, "manifest": str(manifest), "partition": partition, **result.metrics.to_json()},
            indent=1) + "\n")
    return result
