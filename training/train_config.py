"""What a training run is asked to do, what it produced, and when an earlier run can be reused.

:class:`TrainConfig` checks every option on construction and resolves the base's
defaults (:meth:`TrainConfig.resolved`); :class:`TrainResult` is what
:func:`training.train.train` returns. :func:`config_hash` digests everything that
determines the trained weights (config, corpus fingerprint, :data:`RECIPE_VERSION`,
process count); :func:`cached_result` returns the stored result of a checkpoint made
with the same digest, so an identical run is skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from client.errors import ConfigError
from training.corpus import CLASS_SET_LAYOUTS, CLASS_SETS, LAYOUTS
from training.errors import CheckpointError

#: Bump when the training recipe changes in a way that invalidates cached checkpoints.
RECIPE_VERSION = "2"
PRECISIONS = ("fp32", "fp16", "bf16")

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
    """What :func:`training.train.train` produced.

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


def clips_fingerprint(clips) -> str:
    """Digest (16 hex digits) of the clips' file names, actors, labels and file sizes: the corpus part of :func:`config_hash`."""
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


def cached_result(config: TrainConfig, digest: str) -> TrainResult | None:
    """The stored result of the checkpoint in ``config.out`` if it was made with ``digest`` (and ``config.cache``), else ``None``."""
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


def check_base_name(config: TrainConfig) -> None:
    """Raise :class:`ConfigError` when a non-preset ``base`` is neither an existing folder nor an ``owner/model`` hub name."""
    if "/" not in config.base and not Path(config.base).exists():
        raise ConfigError(
            f"base={config.base!r}: not a preset {sorted(_model_presets())}, not an existing local folder, "
            "and not a hub name of the form owner/model"
        )


def config_fields() -> list[str]:
    """Names of :class:`TrainConfig` fields (for the CLI)."""
    return [f.name for f in fields(TrainConfig)]

