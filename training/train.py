"""Fine-tune (or train from scratch) a wav2vec2 classifier on an actor-held-out split.

One function, :func:`train`, over one self-checking config, :class:`TrainConfig`:

    corpus dir(s) --read_corpora + apply_class_set--> clips
      --actor_split, or fold i of actor_kfold--> train/val/test
      --screen_split (client.audio: mono, 16 kHz, decoded once; unusable clips set aside)--> split.json
      --> WindowDataset (one W-sample window per clip)
      --HF Trainer over WaveformClassifier (normalisation inside)--> weights
      --score_clips (all windows, client.audio.aggregate)--> held-out accuracy
      --save_checkpoint--> out/{config.json, model.safetensors, ser_checkpoint.json, split.json,
                                metrics.csv, predictions.{csv,json}}

Options: class-weighted cross-entropy, validation every ``eval_steps`` (clip-level,
as served) with early stopping on validation weighted F1 (the best weights are
kept), Trainer checkpoints every ``save_steps`` and ``resume`` from the last one
after an interruption (crops are seeded per epoch and clip, so a resumed run
sees the same data as an uninterrupted one), gradient checkpointing, fp16/bf16.

Several processes: ``torchrun --nproc_per_node N -m ser.cli train ...`` or
``accelerate launch -m ser.cli train ...``; the HF Trainer shards batches over
the processes (gloo on CPUs, NCCL on GPUs). Every process computes the split and
trains; only process 0 writes files (split.json, metrics.csv, validation state,
the checkpoint) and scores; process 0's validation F1 is broadcast so that every
process takes the same early-stopping decision. A run with N > 1 processes records
``world_size`` in its result metrics and its config hash (N processes see N times
the clips per step).

Files of the corpus that cannot be used (misnamed, undecodable, silent, far outside
the corpus's duration range: :mod:`training.screen`) are skipped, reported once and
recorded in ``split.json`` (``skipped``, ``skipped_counts``); with ``strict`` they are
fatal (:class:`training.errors.UnusableClipsError`).

If ``out`` already holds a checkpoint made from an identical config and corpus
(same ``config_hash``), training is skipped and the stored result returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from client.errors import ConfigError
from training.corpus import (
    CLASS_SET_LAYOUTS,
    CLASS_SETS,
    LAYOUTS,
    CorpusScan,
    SkippedFile,
    apply_class_set,
    scan_corpora,
)
from training.errors import CheckpointError, CorpusError, UnusableClipsError

log = logging.getLogger(__name__)

#: Bump when the training recipe changes in a way that invalidates cached checkpoints.
RECIPE_VERSION = "2"
MANIFEST_NAME = "split.json"
METRICS_LOG = "metrics.csv"
PRECISIONS = ("fp32", "fp16", "bf16")
_METRICS_COLUMNS = ("step", "epoch", "loss", "learning_rate", "grad_norm", "val_accuracy", "val_balanced_accuracy",
                    "val_weighted_f1", "val_macro_f1")

#: Hyper-parameter defaults by kind of base. From-scratch presets need a high
#: learning rate; pretrained encoders are fine-tuned gently.
_DEFAULTS = {
    "tiny": dict(learning_rate=1e-3, batch_size=16, epochs=20.0),
    "preset": dict(learning_rate=1e-4, batch_size=8, epochs=20.0),
    "pretrained": dict(learning_rate=3e-5, batch_size=8, epochs=10.0),
}


def _model_presets() -> dict:
    from training.model import MODEL_PRESETS

    return MODEL_PRESETS


@dataclass(frozen=True)
class TrainConfig:
    """How to train, checked on construction.

    ``None`` means "the default for this base" (see :meth:`resolved`).

    Attributes:
        corpus: corpus root, or several roots (combined corpora), one per ``layout``.
        out: checkpoint directory to write.
        base: a preset of ``training.model.MODEL_PRESETS`` (``tiny``, ``base``,
            ``xlsr-large``: random weights, trained from scratch) or a hub name /
            local folder of a pretrained wav2vec2, HuBERT, WavLM or Data2VecAudio encoder
            (fine-tuned; its ``preprocessor_config.json`` says how the input is prepared).
        epochs: passes over the training clips (ignored when ``max_steps`` is set).
        max_steps: optimiser steps; overrides ``epochs``.
        batch_size: clips per step.
        learning_rate: peak learning rate (linear warm-up, then linear decay).
        seed: seeds the split, the model initialisation, shuffling and crops.
        window_s: model window W in seconds, or ``None`` to choose it from the
            training clips' durations (:func:`training.data.choose_window_samples`).
        freeze_feature_encoder: keep the convolutional feature encoder fixed.
            Default ``True`` for pretrained bases (its features are already good
            and fine-tuning it on a small corpus overfits and costs memory) and
            ``False`` for from-scratch presets (a random conv encoder must learn
            its filters, or the transformer only sees random projections).
        test_actors: actors held out for the test partition.
        val_actors: actors held out for validation (0 for none).
        manifest: reuse this split manifest instead of drawing a new split.
        class_set: ``ravdess8``, ``ravdess7``, ``crema6`` or ``combined7``; the model's
            labels are the class set's labels present in the training clips, in the class set's order.
        warmup_ratio: fraction of steps with linear warm-up.
        weight_decay: AdamW weight decay.
        cache: skip training when ``out`` holds a checkpoint of an identical config.
        layout: each corpus root's layout (``"ravdess"``, ``"crema-d"``), in ``corpus`` order.
        calm_as_neutral: ``ravdess7``/``combined7``: relabel calm as neutral instead of dropping it.
        include_song: RAVDESS: also read song clips (vocal channel 02).
        fold: train on fold ``fold`` of ``folds`` actor-grouped folds
            (:func:`training.folds.actor_kfold`) instead of one ``test_actors`` split.
        folds: k of the folds.
        class_weighted: weight the cross-entropy by inverse class frequency of the training clips.
        early_stopping_patience: stop after this many validations without a better
            validation weighted F1, and keep the best weights (needs validation actors).
        eval_steps: validate every this many steps (default: a tenth of the steps
            when early stopping, else no validation during training).
        save_steps: write a Trainer checkpoint every this many steps (for ``resume``).
        resume: continue from the last Trainer checkpoint under ``out/trainer`` if there is one.
        gradient_checkpointing: recompute activations in the backward pass (less memory).
        precision: ``fp32``, or ``fp16``/``bf16`` mixed precision (GPU only).
        strict: stop with :class:`training.errors.UnusableClipsError` at the first sign of a
            corpus file that cannot be used, instead of skipping and recording it.
    """

    corpus: Path | tuple[Path, ...]
    out: Path
    base: str = "tiny"
    epochs: float | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    seed: int = 0
    window_s: float | None = None
    freeze_feature_encoder: bool | None = None
    test_actors: int = 2
    val_actors: int = 1
    manifest: Path | None = None
    class_set: str = "ravdess8"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    cache: bool = True
    layout: str | tuple[str, ...] = "ravdess"
    calm_as_neutral: bool = False
    include_song: bool = False
    fold: int | None = None
    folds: int = 5
    class_weighted: bool = False
    early_stopping_patience: int | None = None
    eval_steps: int | None = None
    save_steps: int | None = None
    resume: bool = False
    gradient_checkpointing: bool = False
    precision: str = "fp32"
    strict: bool = False

    def __post_init__(self) -> None:
        corpora = self.corpus if isinstance(self.corpus, (tuple, list)) else (self.corpus,)
        layouts = self.layout if isinstance(self.layout, (tuple, list)) else (self.layout,)
        if not corpora or any(c is None or str(c) == "" for c in corpora):
            raise ConfigError(f"corpus={self.corpus!r}: a directory path is required")
        if len(layouts) != len(corpora) or any(lay not in LAYOUTS for lay in layouts) or len(set(layouts)) != len(layouts):
            raise ConfigError(f"layout={self.layout!r}: need one distinct layout of {list(LAYOUTS)} per corpus root "
                              f"({len(corpora)} given)")
        object.__setattr__(self, "corpus", Path(corpora[0]) if len(corpora) == 1 else tuple(Path(c) for c in corpora))
        object.__setattr__(self, "layout", layouts[0] if len(layouts) == 1 else tuple(layouts))
        if self.out is None or str(self.out) == "":
            raise ConfigError(f"out={self.out!r}: a directory path is required")
        object.__setattr__(self, "out", Path(self.out))
        if self.manifest is not None:
            object.__setattr__(self, "manifest", Path(self.manifest))
        if not isinstance(self.base, str) or not self.base.strip():
            raise ConfigError(f"base={self.base!r}: expected a preset {sorted(_model_presets())} or a hub name/path")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"epochs={self.epochs}: must be a positive number")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or int(self.max_steps) != self.max_steps
                                           or self.max_steps <= 0):
            raise ConfigError(f"max_steps={self.max_steps}: must be a positive integer")
        if self.batch_size is not None and (int(self.batch_size) != self.batch_size or self.batch_size <= 0):
            raise ConfigError(f"batch_size={self.batch_size}: must be a positive integer")
        if self.learning_rate is not None and not (math.isfinite(self.learning_rate) and 0 < self.learning_rate < 1):
            raise ConfigError(f"learning_rate={self.learning_rate}: must be in (0, 1)")
        if self.window_s is not None and not (math.isfinite(self.window_s) and 0.25 <= self.window_s <= 30):
            raise ConfigError(f"window_s={self.window_s}: must be between 0.25 and 30 seconds (or None for auto)")
        if int(self.test_actors) != self.test_actors or self.test_actors < 1:
            raise ConfigError(f"test_actors={self.test_actors}: must be an integer >= 1")
        if int(self.val_actors) != self.val_actors or self.val_actors < 0:
            raise ConfigError(f"val_actors={self.val_actors}: must be an integer >= 0")
        if self.class_set not in CLASS_SETS:
            raise ConfigError(f"class_set={self.class_set!r}: expected one of {sorted(CLASS_SETS)}")
        unread = [lay for lay in layouts if lay not in CLASS_SET_LAYOUTS[self.class_set]]
        if unread:
            raise ConfigError(f"class_set={self.class_set!r} reads {list(CLASS_SET_LAYOUTS[self.class_set])}, "
                              f"not layout {unread[0]!r}: pick a class set for that corpus (see training.corpus.CLASS_SETS)")
        if self.calm_as_neutral and self.class_set not in ("ravdess7", "combined7"):
            raise ConfigError(f"calm_as_neutral=True with class_set={self.class_set!r}: only ravdess7 and combined7 merge calm")
        if isinstance(self.folds, bool) or int(self.folds) != self.folds or self.folds < 2:
            raise ConfigError(f"folds={self.folds}: need an integer >= 2")
        if self.fold is not None:
            if isinstance(self.fold, bool) or int(self.fold) != self.fold or not 0 <= self.fold < self.folds:
                raise ConfigError(f"fold={self.fold}: need an integer in 0..{self.folds - 1} (folds={self.folds})")
            if self.manifest is not None:
                raise ConfigError(f"fold={self.fold} and manifest={self.manifest}: give one, not both")
        for name in ("early_stopping_patience", "eval_steps", "save_steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ConfigError(f"{name}={v}: must be a positive integer (or None)")
        if self.early_stopping_patience is not None and self.val_actors < 1 and self.manifest is None:
            raise ConfigError(f"early_stopping_patience={self.early_stopping_patience} with val_actors=0: "
                              "early stopping needs validation actors")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: expected one of {list(PRECISIONS)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        if not 0 <= self.weight_decay < 1:
            raise ConfigError(f"weight_decay={self.weight_decay}: must be in [0, 1)")
        if not isinstance(self.strict, bool):
            raise ConfigError(f"strict={self.strict!r}: expected True or False")

    def roots(self) -> dict[str, Path]:
        """``{layout: corpus root}``."""
        corpora = self.corpus if isinstance(self.corpus, tuple) else (self.corpus,)
        layouts = self.layout if isinstance(self.layout, tuple) else (self.layout,)
        return dict(zip(layouts, corpora, strict=True))

    def manifest_root(self):
        """The root argument of the manifest functions: one path, or ``{layout: root}`` for combined corpora."""
        roots = self.roots()
        return next(iter(roots.values())) if len(roots) == 1 else roots

    @property
    def is_preset(self) -> bool:
        """Whether ``base`` names a from-scratch preset rather than a pretrained model."""
        return self.base in _model_presets()

    def resolved(self) -> dict[str, Any]:
        """Concrete hyper-parameters: ``None`` fields replaced by the base's defaults."""
        kind = "tiny" if self.base == "tiny" else "preset" if self.is_preset else "pretrained"
        d = _DEFAULTS[kind]
        return {
            "learning_rate": self.learning_rate if self.learning_rate is not None else d["learning_rate"],
            "batch_size": int(self.batch_size if self.batch_size is not None else d["batch_size"]),
            "epochs": float(self.epochs if self.epochs is not None else d["epochs"]),
            "max_steps": int(self.max_steps) if self.max_steps is not None else None,
            "freeze_feature_encoder": (not self.is_preset) if self.freeze_feature_encoder is None
            else bool(self.freeze_feature_encoder),
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of the fields (paths as strings)."""
        def plain(v: Any) -> Any:
            return str(v) if isinstance(v, Path) else [plain(x) for x in v] if isinstance(v, tuple) else v

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        checkpoint: directory with ``config.json``, ``model.safetensors``, ``ser_checkpoint.json``.
        manifest: the split manifest (JSON) the metrics refer to.
        labels: class names in logit order.
        window_samples: W at 16 kHz.
        test_accuracy: clip-level accuracy on the held-out test actors (windows aggregated).
        val_accuracy: same on the validation actors (nan without val actors).
        steps: optimiser steps taken.
        train_seconds: wall time of the Trainer loop (s).
        cached: True when an identical earlier run was reused.
        metrics: everything else (losses, confusion matrix, actors per partition...).
        process_index: rank in a distributed run; ranks other than 0 write and score nothing
            (their accuracies are nan and their metrics empty).
    """

    checkpoint: Path
    manifest: Path
    labels: tuple[str, ...]
    window_samples: int
    test_accuracy: float
    val_accuracy: float
    steps: int
    train_seconds: float
    cached: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    process_index: int = 0

    def __str__(self) -> str:
        if self.process_index:
            return (f"{self.checkpoint}: process {self.process_index} of a distributed run, {self.steps} steps in "
                    f"{self.train_seconds:.0f} s; process 0 scores and writes the checkpoint")
        chance = 1.0 / len(self.labels)
        val = "n/a" if math.isnan(self.val_accuracy) else f"{self.val_accuracy:.1%}"
        how = "reused cached checkpoint" if self.cached else f"{self.steps} steps in {self.train_seconds:.0f} s"
        return (f"{self.checkpoint}: held-out-actor accuracy {self.test_accuracy:.1%} "
                f"(val {val}, chance {chance:.1%}, {len(self.labels)} classes, "
                f"W={self.window_samples / 16000:g} s); {how}; split {self.manifest}")


def _corpus_fingerprint(clips) -> str:
    h = hashlib.sha256()
    for c in clips:
        st = Path(c.path).stat()
        h.update(f"{Path(c.path).name}|{c.actor}|{c.label}|{st.st_size}\n".encode())
    return h.hexdigest()[:16]


def config_hash(config: TrainConfig, *, corpus_fingerprint: str, world_size: int = 1) -> str:
    """Digest of everything that determines the trained weights (not ``out`` or ``cache``).

    ``world_size``: processes of a distributed run (each takes ``batch_size`` clips a step);
    it enters the digest only when > 1, so single-process digests are unchanged.
    """
    d = config.to_json()
    for k in ("out", "cache", "corpus", "resume", "save_steps", "strict"):
        d.pop(k)
    d.update(config.resolved())
    d["manifest"] = (hashlib.sha256(config.manifest.read_bytes()).hexdigest()[:16]
                     if config.manifest is not None and config.manifest.is_file() else None)
    d["corpus_fingerprint"] = corpus_fingerprint
    d["recipe_version"] = RECIPE_VERSION
    if world_size > 1:
        d["world_size"] = world_size
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _cached_result(config: TrainConfig, digest: str) -> TrainResult | None:
    from training.model import CHECKPOINT_INFO, CheckpointInfo

    if not config.cache or not (config.out / CHECKPOINT_INFO).is_file():
        return None
    try:
        info = CheckpointInfo.load(config.out)
    except CheckpointError:
        return None
    if info.extra.get("config_hash") != digest or not (config.out / "model.safetensors").is_file():
        return None
    r = info.extra.get("result", {})
    return TrainResult(
        checkpoint=config.out, manifest=Path(info.extra["split_manifest"]), labels=tuple(info.labels),
        window_samples=info.window_samples, test_accuracy=float(r.get("test_accuracy", float("nan"))),
        val_accuracy=float(r.get("val_accuracy", float("nan"))), steps=int(r.get("steps", 0)),
        train_seconds=float(r.get("train_seconds", 0.0)), cached=True, metrics=r,
    )


def _build_model(config: TrainConfig, labels: tuple[str, ...]):
    """``(model, InputSpec)`` to train.

    A preset's random model gets normalised input and a mask; a pretrained base keeps its
    feature extractor's input preparation and gets a new head.
    """
    from training.hf_import import InputSpec
    from training.model import load_pretrained, new_model

    if config.is_preset:
        return new_model(config.base, labels=labels, seed=config.seed), InputSpec()
    _check_base_name(config)
    model, inputs = load_pretrained(config.base, labels=labels)
    if inputs.sample_rate != 16_000:
        raise ConfigError(f"base={config.base!r}: its feature extractor expects {inputs.sample_rate} Hz; training "
                          "feeds 16 kHz audio")
    return model, inputs


class _LossModule:
    """Factory for the Trainer-facing module (keeps the torch import lazy)."""

    @staticmethod
    def wrap(classifier, *, class_weights=None):
        """``classifier`` + cross-entropy (weighted by ``class_weights [C]`` float32 if given)."""
        import torch
        from torch import nn

        class WithLoss(nn.Module):
            """``WaveformClassifier`` + cross-entropy, returning what the Trainer expects."""

            def __init__(self, inner):
                super().__init__()
                self.classifier = inner
                self.register_buffer("class_weights", None if class_weights is None
                                     else torch.as_tensor(class_weights, dtype=torch.float32), persistent=False)

            def forward(self, waveform, num_samples, labels=None):
                logits, _ = self.classifier(waveform, num_samples)
                out = {"logits": logits}
                if labels is not None:
                    out["loss"] = torch.nn.functional.cross_entropy(logits.float(), labels, weight=self.class_weights)
                return out

        return WithLoss(classifier)


def class_weights(label_ids, num_classes: int):
    """Inverse-frequency weights ``n / (C * count_c)`` (``[C]`` float32; 0 for absent classes)."""
    import numpy as np

    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=num_classes).astype(np.float64)
    w = np.divide(counts.sum(), num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return w.astype(np.float32)


def _launched_as() -> tuple[int, int]:
    """``(rank, world size)`` as ``torchrun`` / ``accelerate launch`` export them (``RANK``, ``WORLD_SIZE``).

    ``(0, 1)`` when run alone. Read before the Trainer sets up the process group; its
    ``args.process_index`` / ``args.world_size`` are the same numbers.
    """
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _from_process_zero(value: float, args) -> float:
    """``value`` as process 0 computed it, on every process (a broadcast; ``value`` itself when run alone).

    Decisions taken from it (early stopping) then cannot differ between the processes
    of a distributed run, which would leave some waiting for the others forever.
    """
    if args.world_size == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=args.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def _split(config: TrainConfig, clips):
    """``(split, where its manifest goes)``: the given manifest's split, fold ``config.fold``, or a fresh actor split."""
    from training.folds import actor_kfold, actor_split, read_manifest

    manifest_out = config.out / MANIFEST_NAME
    if config.manifest is not None:
        split = read_manifest(config.manifest, root=config.manifest_root())
        missing = [str(c.path) for part in split for c in part if not Path(c.path).is_file()]
        if missing:
            raise CorpusError(f"{config.manifest}: {len(missing)} clip(s) missing under {config.corpus}, e.g. {missing[0]}")
    elif config.fold is not None:
        split = actor_kfold(clips, k=config.folds, val_actors=config.val_actors, seed=config.seed)[config.fold]
    else:
        split = actor_split(clips, test_actors=config.test_actors, val_actors=config.val_actors, seed=config.seed)
    return split, manifest_out


def read_training_clips(config: TrainConfig):
    """The clips ``config`` trains on: its corpora read, filtered and relabelled by its class set.

    Raises:
        CorpusError: a missing corpus root, or no clip of the class set.
    """
    return list(scan_training_clips(config).clips)


def scan_training_clips(config: TrainConfig) -> CorpusScan:
    """:func:`read_training_clips` with the files the readers skipped (misnamed, song, not audio...).

    Raises:
        CorpusError: a missing corpus root, or no clip of the class set.
    """
    for root in config.roots().values():
        if not root.is_dir():
            raise CorpusError(f"{root}: corpus directory does not exist" if not root.exists()
                              else f"{root}: not a directory")
    scan = scan_corpora(config.roots(), include_song=config.include_song)
    clips = apply_class_set(list(scan.clips), config.class_set, calm_as_neutral=config.calm_as_neutral)
    if not clips:
        raise CorpusError(f"{config.corpus}: no clips of class set {config.class_set!r}")
    return CorpusScan(clips=tuple(clips), skipped=scan.skipped)


def _refuse_if_strict(config: TrainConfig, skipped) -> None:
    """Raise :class:`UnusableClipsError` for the defects among ``skipped`` when ``config.strict``."""
    defects = [s for s in skipped if s.defect]
    if config.strict and defects:
        raise UnusableClipsError(f"{config.corpus} (strict)", [f"{s.path} ({s.reason}: {s.detail})" for s in defects])


def _write_metrics_log(path: Path, rows: list[dict[str, float]]) -> None:
    """Rewrite the metrics CSV (one row per log or validation event, :data:`_METRICS_COLUMNS`)."""
    import csv

    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(_METRICS_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _read_metrics_log(path: Path, *, up_to_step: int) -> list[dict[str, float]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [{k: int(float(v)) if k == "step" else float(v) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(f)]
    return [r for r in rows if r.get("step", 0) <= up_to_step]


def train(config: TrainConfig, *, progress: bool = True, callbacks: tuple = ()) -> TrainResult:
    """Train a classifier as ``config`` says and save it as a bundle checkpoint.

    Args:
        config: a :class:`TrainConfig`.
        progress: show tqdm bars (loading, training) and the Trainer's log lines;
            without it, metrics go to the ``training.train`` logger only.
        callbacks: extra ``transformers.TrainerCallback`` objects (tests use one to
            interrupt a run).

    Returns:
        :class:`TrainResult` with the held-out-actor accuracy (all windows of each
        test clip scored and aggregated with ``client.audio.aggregate``).

    Raises:
        CorpusError: missing/empty corpus, or a manifest that does not match it.
        ConfigError: bad values, or too few actors for the split.
        CheckpointError: a pretrained base that cannot be loaded.
    """
    if config.out.exists() and not config.out.is_dir():
        raise ConfigError(f"out={config.out}: exists and is not a directory")
    scan = scan_training_clips(config)
    _refuse_if_strict(config, scan.skipped)  # misnamed files: before any decoding
    clips = list(scan.clips)
    rank, world_size = _launched_as()
    digest = config_hash(config, corpus_fingerprint=_corpus_fingerprint(clips), world_size=world_size)
    cached = _cached_result(config, digest)
    if cached is not None:
        if config.strict and cached.metrics.get("skipped"):
            raise UnusableClipsError(f"{config.corpus} (strict; as recorded in {cached.manifest})",
                                     list(cached.metrics["skipped"]))
        log.info("%s: reusing checkpoint trained with config %s", config.out, digest)
        return cached
    if not config.is_preset:  # fail on a bad base before any expensive step
        _check_base_name(config)
    import torch

    gpu = torch.cuda.is_available()
    if config.precision != "fp32" and not gpu:
        raise ConfigError(f"precision={config.precision!r}: mixed precision needs a GPU (none is visible); use fp32")

    import numpy as np
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.trainer_utils import get_last_checkpoint

    from training.data import LoadedClip, WindowDataset, choose_window_samples, collate
    from training.evaluate import score_clips
    from training.folds import write_manifest
    from training.model import CheckpointInfo, WaveformClassifier, save_checkpoint
    from training.screen import ScreenConfig, active_cache, screen_split, unreported

    hp = config.resolved()
    sr = 16_000
    config.out.mkdir(parents=True, exist_ok=True)
    split, manifest_path = _split(config, clips)
    labels = _labels_of(config, split)

    # The model first: a bad base fails before minutes of audio decoding.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    hf_model, inputs = _build_model(config, labels)
    if hp["freeze_feature_encoder"]:
        hf_model.freeze_feature_encoder()
    cache = active_cache()
    split, screened = screen_split(split, config=ScreenConfig(sample_rate=sr), cache=cache, progress=progress)
    skipped = [s for s in scan.skipped if s.defect] + list(screened.skipped)
    if rank == 0:  # process 0 of a distributed run; the others draw the same split (seeded) and write nothing
        write_manifest(split, manifest_path, root=config.manifest_root(), skipped=skipped)
    _refuse_if_strict(config, skipped)
    if not screened.audio:
        raise UnusableClipsError(f"{config.corpus}: no clip can be used",
                                 [f"{s.path} ({s.reason}: {s.detail})" for s in screened.skipped])
    if rank == 0:
        _report_skipped(config, unreported(screened.skipped, cache), manifest_path)
    if screened.skipped and _labels_of(config, split) != labels:
        raise CorpusError(f"{config.corpus}: without the {len(screened.skipped)} unusable clip(s) the training clips "
                          f"no longer hold every class of {list(labels)} (see {manifest_path})")
    index = {lab: i for i, lab in enumerate(labels)}
    train_loaded, val_loaded, test_loaded = (
        [LoadedClip(screened.audio[c.path], index[c.label], c) for c in part] for part in split)
    if config.window_s is None:
        window = choose_window_samples([lc.audio.shape[0] / sr for lc in train_loaded], sample_rate=sr)
    else:
        window = int(round(config.window_s * sr))
    hop = window // 2

    classifier = WaveformClassifier(hf_model, normalize=inputs.normalize, attention_mask=inputs.attention_mask)
    weights = class_weights([lc.label_id for lc in train_loaded], len(labels)) if config.class_weighted else None
    module = _LossModule.wrap(classifier, class_weights=weights)
    train_ds = WindowDataset(train_loaded, window_samples=window, hop_samples=hop, train=True, seed=config.seed)

    steps_per_epoch = max(1, len(train_ds) // hp["batch_size"])
    total_steps = hp["max_steps"] or max(1, int(math.ceil(hp["epochs"] * steps_per_epoch)))
    eval_steps = config.eval_steps or (max(1, total_steps // 10) if config.early_stopping_patience else None)
    trainer_dir = config.out / "trainer"
    resume_from = get_last_checkpoint(str(trainer_dir)) if config.resume and trainer_dir.is_dir() else None
    args = TrainingArguments(
        output_dir=str(config.out / "trainer"),
        per_device_train_batch_size=hp["batch_size"],
        learning_rate=hp["learning_rate"],
        weight_decay=config.weight_decay,
        max_steps=total_steps,
        warmup_steps=int(config.warmup_ratio * total_steps),
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        logging_steps=max(1, total_steps // 10),
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        eval_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        activation_checkpointing=config.gradient_checkpointing,
        fp16=config.precision == "fp16",
        bf16=config.precision == "bf16",
        use_cpu=not gpu,
        dataloader_num_workers=0,
        dataloader_drop_last=True,
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=not progress,
    )
    metrics_log = config.out / METRICS_LOG
    resumed_step = int(Path(resume_from).name.rsplit("-", 1)[-1]) if resume_from else 0
    history: list[dict[str, float]] = _read_metrics_log(metrics_log, up_to_step=resumed_step) if resume_from else []
    best_path, state_name = trainer_dir / "best.pt", "ser_validation.json"
    validation: dict[str, Any] = {"best_f1": -1.0, "best_step": 0, "bad": 0}
    if resume_from and (Path(resume_from) / state_name).is_file():
        validation = json.loads((Path(resume_from) / state_name).read_text())
        if rank == 0 and (Path(resume_from) / "best.pt").is_file():
            import shutil

            shutil.copyfile(Path(resume_from) / "best.pt", best_path)

    class _Log(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            train_ds.set_epoch(state.global_step // steps_per_epoch)  # also right when resuming mid-epoch

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:  # one writer in a distributed run
                history.append({"step": state.global_step, "epoch": float(state.epoch or 0),
                                **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}})
                _write_metrics_log(metrics_log, history)
                log.info("step %d: %s", state.global_step, logs)

    class _Validate(TrainerCallback):
        """Clip-level validation every ``eval_steps``; early stopping on weighted F1; best weights kept."""

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if eval_steps is None or not val_loaded or (step % eval_steps and step != state.max_steps):
                return
            zero, f1 = state.is_world_process_zero, -1.0
            if zero:  # the weights are the same on every process: process 0 scores and writes
                m = score_clips(classifier, val_loaded, labels=labels, window_samples=window, hop_samples=hop).metrics()
                history.append({"step": step, "epoch": float(state.epoch or 0),
                                **{f"val_{k}": v for k, v in m.scalars().items()}})
                _write_metrics_log(metrics_log, history)
                f1 = m.weighted_f1
            f1 = _from_process_zero(f1, args)  # every process stops at the same step
            if f1 > validation["best_f1"]:
                validation.update(best_f1=f1, best_step=step, bad=0)
                if zero:
                    trainer_dir.mkdir(parents=True, exist_ok=True)
                    torch.save(classifier.state_dict(), best_path)
            else:
                validation["bad"] += 1
                if config.early_stopping_patience and validation["bad"] >= config.early_stopping_patience:
                    log.info("early stop at step %d: best validation weighted F1 %.3f at step %d",
                             step, validation["best_f1"], validation["best_step"])
                    control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):
            ckpt = trainer_dir / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():
                (ckpt / state_name).write_text(json.dumps(validation))
                if best_path.is_file():
                    import shutil

                    shutil.copyfile(best_path, ckpt / "best.pt")

    trainer = Trainer(model=module, args=args, data_collator=collate, train_dataset=train_ds,
                      callbacks=[_Log(), _Validate(), *callbacks])
    trainer.remove_callback(PrinterCallback)
    if not progress:
        trainer.remove_callback(ProgressCallback)
    if resume_from:
        log.info("resuming from %s", resume_from)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - t0
    if not trainer.is_world_process_zero():  # other ranks of a distributed run stop here
        return TrainResult(checkpoint=config.out, manifest=manifest_path.resolve(), labels=labels,
                           window_samples=window, test_accuracy=float("nan"), val_accuracy=float("nan"),
                           steps=int(out.global_step), train_seconds=train_seconds,
                           process_index=args.process_index)
    if config.early_stopping_patience and best_path.is_file():
        classifier.load_state_dict(torch.load(best_path, weights_only=True))

    from training.metrics import save_predictions

    test = score_clips(classifier, test_loaded, labels=labels, window_samples=window, hop_samples=hop)
    val = score_clips(classifier, val_loaded, labels=labels, window_samples=window, hop_samples=hop)
    if test_loaded:
        save_predictions(test.predictions_of(test_loaded), config.out)
    result_metrics = {
        "test_accuracy": test.accuracy,
        "val_accuracy": val.accuracy,
        "test_metrics": test.metrics().scalars() if test_loaded else {},
        "val_metrics": val.metrics().scalars() if val_loaded else {},
        "best_val_weighted_f1": validation["best_f1"] if validation["best_step"] else None,
        "best_step": validation["best_step"] or None,
        "fold": split.extra.get("fold"),
        "steps": int(out.global_step),
        "train_seconds": round(train_seconds, 2),
        "train_loss": float(out.training_loss),
        "test_confusion": test.confusion().tolist(),
        "actors": {p: list(split.actors(p)) for p in ("train", "val", "test")},
        "clips": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "skipped": [f"{s.path} ({s.reason}: {s.detail})" for s in skipped],
        "history": history,
        **({"world_size": args.world_size} if args.world_size > 1 else {}),
    }
    log.info("held-out accuracy %.3f (val %.3f) after %d steps, %.0f s",
             test.accuracy, val.accuracy, out.global_step, train_seconds)
    info = CheckpointInfo(
        labels=labels,
        window_samples=window,
        sample_rate=sr,
        hop_samples=hop,
        base=config.base,
        corpus=" + ".join(f"{lay}:{root.resolve()}" for lay, root in config.roots().items())
        + f" ({config.class_set}, {len(clips)} clips)",
        normalize=inputs.normalize,
        attention_mask=inputs.attention_mask,
        extra={
            "split_manifest": str(manifest_path.resolve()),
            "config_hash": digest,
            "config": config.to_json(),
            "resolved": hp,
            "recipe_version": RECIPE_VERSION,
            "result": result_metrics,
        },
    )
    hf_model.eval()
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        save_checkpoint(hf_model, config.out, info)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    _remove_trainer_dir(trainer_dir)
    return TrainResult(
        checkpoint=config.out, manifest=manifest_path.resolve(), labels=labels, window_samples=window,
        test_accuracy=test.accuracy, val_accuracy=val.accuracy, steps=int(out.global_step),
        train_seconds=train_seconds, metrics=result_metrics,
    )


def _labels_of(config: TrainConfig, split) -> tuple[str, ...]:
    """The model's labels: the class set's labels present in ``split.train``, in class-set order.

    Raises:
        CorpusError: no training clips, fewer than 2 classes, or a val/test class absent from training.
        ConfigError: early stopping without validation clips.
    """
    if not split.train:
        raise CorpusError(f"{config.corpus}: the split leaves no training clips")
    present = {c.label for c in split.train}
    labels = tuple(lab for lab in CLASS_SETS[config.class_set] if lab in present)
    if len(labels) < 2:
        raise CorpusError(f"{config.corpus}: training clips hold {len(labels)} class(es) {list(labels)}; need >= 2")
    unseen = sorted({c.label for part in (split.val, split.test) for c in part} - present)
    if unseen:
        raise CorpusError(f"{config.corpus}: classes {unseen} occur in val/test but not in training")
    if config.early_stopping_patience is not None and not split.val:
        raise ConfigError(f"early_stopping_patience={config.early_stopping_patience}: the split has no validation clips")
    return labels


def _report_skipped(config: TrainConfig, skipped: list[SkippedFile], manifest: Path) -> None:
    """One warning for the clips the screen set aside (not yet reported in this decode-cache block)."""
    if not skipped:
        return
    import warnings

    from training.corpus import CorpusWarning, summarize_skipped

    roots = config.roots()
    root = next(iter(roots.values())) if len(roots) == 1 else None
    warnings.warn(f"{config.corpus}: {summarize_skipped(skipped, root=root)} as unusable; training goes on without "
                  f"them (listed in {manifest}; --strict makes them fatal)", CorpusWarning, stacklevel=3)


def _check_base_name(config: TrainConfig) -> None:
    if "/" not in config.base and not Path(config.base).exists():
        raise ConfigError(
            f"base={config.base!r}: not a preset {sorted(_model_presets())}, not an existing local folder, "
            "and not a hub name of the form owner/model"
        )


def _remove_trainer_dir(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


# --- presets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRecipe:
    """A named corpus + training recipe: one name instead of a pile of flags.

    Attributes:
        synth: keyword options of :func:`training.synth.synthesize_corpus`.
        train: keyword options of :class:`TrainConfig` (besides ``corpus`` and ``out``).
        note: what it is for, with the figures measured for it.
        expected: figures the recipe is meant to reach (the reference's, for the XLSR-53 recipes).
        wall_time: expected wall time and the hardware it assumes.
    """

    synth: dict[str, Any]
    train: dict[str, Any]
    note: str = ""
    expected: dict[str, Any] = field(default_factory=dict)
    wall_time: str = ""

    def __post_init__(self) -> None:
        known = [f.name for f in fields(TrainConfig) if f.name not in ("corpus", "out")]
        unknown = sorted(set(self.train) - set(known))
        if unknown:
            raise ConfigError(f"recipe train options {unknown}: not TrainConfig fields (corpus and out are given "
                              f"per run); known: {known}")

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainingRecipe":
        """Read a recipe file (``{"train": {...}, "note", "expected", "wall_time", "synth"}``).

        Raises:
            ConfigError: missing or malformed file, or unknown train options (names them).
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe {path}: no such file")
        try:
            d = json.loads(path.read_text())
            return cls(synth=dict(d.get("synth", {})), train=dict(d["train"]), note=str(d.get("note", "")),
                       expected=dict(d.get("expected", {})), wall_time=str(d.get("wall_time", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"recipe {path}: malformed: {exc!r}") from None

    def config(self, *, corpus: str | Path | tuple[str | Path, ...], out: str | Path, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` of this recipe for a corpus (or corpora) and output directory."""
        return TrainConfig(corpus=corpus, out=Path(out), **{**self.train, **overrides})


#: The demo: 10 synthetic actors x 60 clips (8 emotions), tiny model from scratch,
#: 2 s windows, 2 test + 1 val actors held out. See the module docstring of
#: training.synth for why it is learnable and why level statistics do not give it away.
DEMO = TrainingRecipe(
    synth=dict(actors=10, sample_rate=48_000, seed=0),
    train=dict(base="tiny", max_steps=600, batch_size=16, learning_rate=1.5e-3, window_s=2.0,
               test_actors=2, val_actors=1, seed=0),
    note="demo: a tiny model from scratch, 600 steps; docs/benchmarks.md has its time and held-out accuracy",
)

#: The test suite's recipe: 6 actors, 4 emotions, 16 kHz, short windows, few steps.
TEST = TrainingRecipe(
    synth=dict(actors=6, emotions=("happy", "sad", "angry", "fearful"), sample_rate=16_000, seed=0),
    train=dict(base="tiny", max_steps=150, batch_size=16, learning_rate=1e-3, window_s=1.5,
               test_actors=2, val_actors=0, seed=0),
    note="tests: measured ~21 s of train() (150 steps: 17 s) + 6 s synth; held-out-actor accuracy 75% (chance 25%)",
)

RECIPES: dict[str, TrainingRecipe] = {"demo": DEMO, "test": TEST}
#: Folder of the reference recipes (``ravdess8.json``, ``ravdess7.json``, ``crema6.json``, ``combined7.json``).
RECIPE_DIR = Path(__file__).parent / "recipes"


def load_recipe(name_or_path: str | Path) -> TrainingRecipe:
    """A recipe by name (:data:`RECIPES`, then ``training/recipes/<name>.json``) or from a JSON file.

    Raises:
        ConfigError: no such recipe (lists the known names).
    """
    name = str(name_or_path)
    if name in RECIPES:
        return RECIPES[name]
    path = RECIPE_DIR / f"{name}.json"
    if path.is_file():
        return TrainingRecipe.from_json(path)
    if name.endswith(".json") or Path(name).is_file():
        return TrainingRecipe.from_json(name)
    known = sorted(RECIPES) + sorted(p.stem for p in RECIPE_DIR.glob("*.json"))
    raise ConfigError(f"recipe {name!r}: not a known recipe {known} or a recipe JSON file")


def config_fields() -> list[str]:
    """Names of :class:`TrainConfig` fields (for the CLI)."""
    return [f.name for f in fields(TrainConfig)]


__all__ = ["TrainConfig", "TrainResult", "TrainingRecipe", "DEMO", "TEST", "RECIPES", "train", "config_hash", "load_recipe",
           "class_weights", "read_training_clips"]
