"""Fine-tune (or train from scratch) a wav2vec2 classifier on an actor-held-out split.

One function, :func:`train`, over one self-checking config, :class:`TrainConfig`:

    corpus dir --read_ravdess--> clips --actor_split--> train/val/test (+ split.json)
      --load_clips (client.audio: mono, 16 kHz)--> WindowDataset (one W-sample window per clip)
      --HF Trainer over WaveformClassifier (normalisation inside)--> weights
      --score_clips (all windows, client.audio.aggregate)--> held-out accuracy
      --save_checkpoint--> out/{config.json, model.safetensors, ser_checkpoint.json, split.json}

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

from client.errors import CheckpointError, ConfigError, CorpusError
from training.corpus import CLASS_SETS, read_ravdess

log = logging.getLogger(__name__)

#: Bump when the training recipe changes in a way that invalidates cached checkpoints.
RECIPE_VERSION = "1"
MANIFEST_NAME = "split.json"

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
        corpus: RAVDESS-layout corpus root.
        out: checkpoint directory to write.
        base: a preset of ``training.model.MODEL_PRESETS`` (``tiny``, ``base``,
            ``xlsr-large``: random weights, trained from scratch) or a hub name /
            local folder of a pretrained wav2vec2 (fine-tuned).
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
        class_set: ``"ravdess8"``; the model's labels are the class set's labels
            present in the training clips, in the class set's order.
        warmup_ratio: fraction of steps with linear warm-up.
        weight_decay: AdamW weight decay.
        cache: skip training when ``out`` holds a checkpoint of an identical config.
    """

    corpus: Path
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

    def __post_init__(self) -> None:
        for name in ("corpus", "out"):
            value = getattr(self, name)
            if value is None or str(value) == "":
                raise ConfigError(f"{name}={value!r}: a directory path is required")
            object.__setattr__(self, name, Path(value))
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
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        if not 0 <= self.weight_decay < 1:
            raise ConfigError(f"weight_decay={self.weight_decay}: must be in [0, 1)")

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
        return {f.name: (str(v) if isinstance(v := getattr(self, f.name), Path) else v) for f in fields(self)}


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

    def __str__(self) -> str:
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


def config_hash(config: TrainConfig, *, corpus_fingerprint: str) -> str:
    """Digest of everything that determines the trained weights (not ``out`` or ``cache``)."""
    d = config.to_json()
    for k in ("out", "cache", "corpus"):
        d.pop(k)
    d.update(config.resolved())
    d["manifest"] = (hashlib.sha256(config.manifest.read_bytes()).hexdigest()[:16]
                     if config.manifest is not None and config.manifest.is_file() else None)
    d["corpus_fingerprint"] = corpus_fingerprint
    d["recipe_version"] = RECIPE_VERSION
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
    from training.model import load_pretrained, new_model

    if config.is_preset:
        return new_model(config.base, labels=labels, seed=config.seed)
    _check_base_name(config)
    return load_pretrained(config.base, labels=labels)


class _LossModule:
    """Factory for the Trainer-facing module (keeps the torch import lazy)."""

    @staticmethod
    def wrap(classifier):
        import torch
        from torch import nn

        class WithLoss(nn.Module):
            """``WaveformClassifier`` + cross-entropy, returning what the Trainer expects."""

            def __init__(self, inner):
                super().__init__()
                self.classifier = inner

            def forward(self, waveform, num_samples, labels=None):
                logits, _ = self.classifier(waveform, num_samples)
                out = {"logits": logits}
                if labels is not None:
                    out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
                return out

        return WithLoss(classifier)


def _split(config: TrainConfig, clips):
    from training.folds import actor_split, read_manifest, write_manifest

    manifest_out = config.out / MANIFEST_NAME
    if config.manifest is not None:
        split = read_manifest(config.manifest, root=config.corpus)
        missing = [str(c.path) for part in split for c in part if not Path(c.path).is_file()]
        if missing:
            raise CorpusError(f"{config.manifest}: {len(missing)} clip(s) missing under {config.corpus}, e.g. {missing[0]}")
    else:
        split = actor_split(clips, test_actors=config.test_actors, val_actors=config.val_actors, seed=config.seed)
    write_manifest(split, manifest_out, root=config.corpus)
    return split, manifest_out


def train(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Train a classifier as ``config`` says and save it as a bundle checkpoint.

    Args:
        config: a :class:`TrainConfig`.
        progress: show tqdm bars (loading, training) and the Trainer's log lines;
            without it, metrics go to the ``training.train`` logger only.

    Returns:
        :class:`TrainResult` with the held-out-actor accuracy (all windows of each
        test clip scored and aggregated with ``client.audio.aggregate``).

    Raises:
        CorpusError: missing/empty corpus, or a manifest that does not match it.
        ConfigError: bad values, or too few actors for the split.
        CheckpointError: a pretrained base that cannot be loaded.
    """
    if not config.corpus.is_dir():
        raise CorpusError(f"{config.corpus}: corpus directory does not exist" if not config.corpus.exists()
                          else f"{config.corpus}: not a directory")
    if config.out.exists() and not config.out.is_dir():
        raise ConfigError(f"out={config.out}: exists and is not a directory")
    clips = read_ravdess(config.corpus)
    digest = config_hash(config, corpus_fingerprint=_corpus_fingerprint(clips))
    cached = _cached_result(config, digest)
    if cached is not None:
        log.info("%s: reusing checkpoint trained with config %s", config.out, digest)
        return cached
    if not config.is_preset:  # fail on a bad base before any expensive step
        _check_base_name(config)

    import numpy as np
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from training.data import WindowDataset, choose_window_samples, collate, load_clips
    from training.evaluate import score_clips
    from training.model import CheckpointInfo, WaveformClassifier, save_checkpoint

    hp = config.resolved()
    config.out.mkdir(parents=True, exist_ok=True)
    split, manifest_path = _split(config, clips)
    if not split.train:
        raise CorpusError(f"{config.corpus}: the split leaves no training clips")
    present = {c.label for c in split.train}
    labels = tuple(lab for lab in CLASS_SETS[config.class_set] if lab in present)
    if len(labels) < 2:
        raise CorpusError(f"{config.corpus}: training clips hold {len(labels)} class(es) {list(labels)}; need >= 2")
    unseen = sorted({c.label for part in (split.val, split.test) for c in part} - present)
    if unseen:
        raise CorpusError(f"{config.corpus}: classes {unseen} occur in val/test but not in training")

    # The model first: a bad base fails before minutes of audio loading.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    hf_model = _build_model(config, labels)
    if hp["freeze_feature_encoder"]:
        hf_model.freeze_feature_encoder()
    train_loaded = load_clips(split.train, labels=labels, progress=progress, desc="load train")
    val_loaded = load_clips(split.val, labels=labels, progress=progress, desc="load val")
    test_loaded = load_clips(split.test, labels=labels, progress=progress, desc="load test")
    sr = 16_000
    if config.window_s is None:
        window = choose_window_samples([lc.audio.shape[0] / sr for lc in train_loaded], sample_rate=sr)
    else:
        window = int(round(config.window_s * sr))
    hop = window // 2

    classifier = WaveformClassifier(hf_model)
    module = _LossModule.wrap(classifier)
    train_ds = WindowDataset(train_loaded, window_samples=window, hop_samples=hop, train=True, seed=config.seed)

    steps_per_epoch = max(1, len(train_ds) // hp["batch_size"])
    total_steps = hp["max_steps"] or max(1, int(math.ceil(hp["epochs"] * steps_per_epoch)))
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
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        dataloader_drop_last=True,
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=not progress,
    )
    history: list[dict[str, float]] = []

    class _Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                history.append({"step": state.global_step, **{k: float(v) for k, v in logs.items()
                                                              if isinstance(v, (int, float))}})
                log.info("step %d: %s", state.global_step, logs)

    trainer = Trainer(model=module, args=args, data_collator=collate, train_dataset=train_ds, callbacks=[_Log()])
    trainer.remove_callback(PrinterCallback)
    if not progress:
        trainer.remove_callback(ProgressCallback)
    t0 = time.perf_counter()
    out = trainer.train()
    train_seconds = time.perf_counter() - t0

    test = score_clips(classifier, test_loaded, labels=labels, window_samples=window, hop_samples=hop)
    val = score_clips(classifier, val_loaded, labels=labels, window_samples=window, hop_samples=hop)
    result_metrics = {
        "test_accuracy": test.accuracy,
        "val_accuracy": val.accuracy,
        "steps": int(out.global_step),
        "train_seconds": round(train_seconds, 2),
        "train_loss": float(out.training_loss),
        "test_confusion": test.confusion().tolist(),
        "actors": {p: list(split.actors(p)) for p in ("train", "val", "test")},
        "clips": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "history": history,
    }
    log.info("held-out accuracy %.3f (val %.3f) after %d steps, %.0f s",
             test.accuracy, val.accuracy, out.global_step, train_seconds)
    info = CheckpointInfo(
        labels=labels,
        window_samples=window,
        sample_rate=sr,
        hop_samples=hop,
        base=config.base,
        corpus=f"ravdess:{config.corpus.resolve()} ({config.class_set}, {len(clips)} clips)",
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
    _remove_trainer_dir(config.out / "trainer")
    return TrainResult(
        checkpoint=config.out, manifest=manifest_path.resolve(), labels=labels, window_samples=window,
        test_accuracy=test.accuracy, val_accuracy=val.accuracy, steps=int(out.global_step),
        train_seconds=train_seconds, metrics=result_metrics,
    )


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
class Recipe:
    """A named corpus + training recipe (STYLE: named presets over piles of flags).

    Attributes:
        synth: keyword options of :func:`training.synth.synthesize_corpus`.
        train: keyword options of :class:`TrainConfig` (besides ``corpus`` and ``out``).
        note: what it is for, with the figures measured for it.
    """

    synth: dict[str, Any]
    train: dict[str, Any]
    note: str = ""

    def config(self, *, corpus: str | Path, out: str | Path, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` of this recipe for a corpus and output directory."""
        return TrainConfig(corpus=Path(corpus), out=Path(out), **{**self.train, **overrides})


#: The demo: 10 synthetic actors x 60 clips (8 emotions), tiny model from scratch,
#: 2 s windows, 2 test + 1 val actors held out. See the module docstring of
#: training.synth for why it is learnable and why level statistics do not give it away.
DEMO = Recipe(
    synth=dict(actors=10, sample_rate=48_000, seed=0),
    train=dict(base="tiny", max_steps=1000, batch_size=16, learning_rate=1e-3, window_s=2.0,
               test_actors=2, val_actors=1, seed=0),
    note="demo: measured 168 s of train() (1000 steps: 163 s) on 2 shared CPU cores, +17 s synth; "
         "held-out-actor accuracy 72.5% (val 81.7%, chance 12.5%)",
)

#: The test suite's recipe: 6 actors, 4 emotions, 16 kHz, short windows, few steps.
TEST = Recipe(
    synth=dict(actors=6, emotions=("happy", "sad", "angry", "fearful"), sample_rate=16_000, seed=0),
    train=dict(base="tiny", max_steps=150, batch_size=16, learning_rate=1e-3, window_s=1.5,
               test_actors=2, val_actors=0, seed=0),
    note="tests: measured ~21 s of train() (150 steps: 17 s) + 6 s synth; held-out-actor accuracy 75% (chance 25%)",
)

RECIPES: dict[str, Recipe] = {"demo": DEMO, "test": TEST}


def config_fields() -> list[str]:
    """Names of :class:`TrainConfig` fields (for the CLI)."""
    return [f.name for f in fields(TrainConfig)]


__all__ = ["TrainConfig", "TrainResult", "Recipe", "DEMO", "TEST", "RECIPES", "train", "config_hash"]
