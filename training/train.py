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

The parts live beside this module: the config, result and cache key in
:mod:`training.train_config`, the named recipes in :mod:`training.training_recipes`,
the clips and their split in :mod:`training.train_clips`, the loss in :mod:`training.loss`
and the Trainer callbacks (validation, early stopping, metrics log) in :mod:`training.callbacks`.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from client.contract import default_hop_samples
from client.errors import ConfigError
from training.errors import CorpusError, UnusableClipsError
from training.train_clips import (
    labels_of,
    refuse_if_strict,
    report_skipped,
    scan_training_clips,
    training_split,
)
from training.train_config import (
    RECIPE_VERSION,
    TrainConfig,
    TrainResult,
    cached_result,
    check_base_name,
    clips_fingerprint,
    config_hash,
)

log = logging.getLogger(__name__)

#: File of the run's metrics log in ``out`` (:data:`training.callbacks.METRICS_COLUMNS`).
METRICS_LOG = "metrics.csv"
#: Folder in ``out`` of the Trainer checkpoints (for ``resume``); removed once the checkpoint is saved.
TRAINER_DIR = "trainer"
#: Hz of the audio the model is trained on.
SAMPLE_RATE = 16_000


def train(config: TrainConfig, *, progress: bool = True, callbacks: tuple = ()) -> TrainResult:
    """Train a classifier as ``config`` says and save it as a bundle checkpoint.

    Args:
        config: a :class:`TrainConfig`.
        progress: show progress (loading, training; :mod:`client.progress`) and the Trainer's log lines;
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
    refuse_if_strict(config, scan.skipped)  # misnamed files: before any decoding
    clips = list(scan.clips)
    rank, world_size = _launched_as()
    digest = config_hash(config, corpus_fingerprint=clips_fingerprint(clips), world_size=world_size)
    cached = cached_result(config, digest)
    if cached is not None:
        if config.strict and cached.metrics.get("skipped"):
            raise UnusableClipsError(f"{config.corpus} (strict; as recorded in {cached.manifest})",
                                     list(cached.metrics["skipped"]))
        log.info("%s: reusing checkpoint trained with config %s", config.out, digest)
        return cached
    if not config.is_preset:  # fail on a bad base before any expensive step
        check_base_name(config)
    import torch

    gpu = torch.cuda.is_available()
    if config.precision != "fp32" and not gpu:
        raise ConfigError(f"precision={config.precision!r}: mixed precision needs a GPU (none is visible); use fp32")

    import numpy as np

    from training.callbacks import BEST_WEIGHTS
    from training.data import choose_window_samples
    from training.evaluate import score_clips
    from training.metrics import save_predictions
    from training.model import WaveformClassifier

    hp = config.resolved()
    sr = SAMPLE_RATE
    config.out.mkdir(parents=True, exist_ok=True)
    split, manifest_path = training_split(config, clips)
    labels = labels_of(config, split)

    # The model first: a bad base fails before minutes of audio decoding.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    hf_model, inputs = _build_model(config, labels)
    if hp["freeze_feature_encoder"]:
        hf_model.freeze_feature_encoder()

    split, skipped, (train_loaded, val_loaded, test_loaded) = _screen(
        config, split, scan.skipped, labels=labels, manifest_path=manifest_path, rank=rank, progress=progress)
    if config.window_s is None:
        window = choose_window_samples([lc.audio.shape[0] / sr for lc in train_loaded], sample_rate=sr)
    else:
        window = int(round(config.window_s * sr))
    hop = default_hop_samples(window)

    classifier = WaveformClassifier(hf_model, normalize=inputs.normalize, attention_mask=inputs.attention_mask)
    trainer, resume_from, validation, history = _make_trainer(
        config, hp, classifier, train_loaded, val_loaded, labels=labels, window=window, hop=hop, gpu=gpu, rank=rank,
        progress=progress, callbacks=callbacks)
    if resume_from:
        log.info("resuming from %s", resume_from)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - t0
    if not trainer.is_world_process_zero():  # other ranks of a distributed run stop here
        return TrainResult(checkpoint=config.out, manifest=manifest_path.resolve(), labels=labels,
                           window_samples=window, test_accuracy=float("nan"), val_accuracy=float("nan"),
                           steps=int(out.global_step), train_seconds=train_seconds,
                           process_index=trainer.args.process_index)
    best_path = config.out / TRAINER_DIR / BEST_WEIGHTS
    if config.early_stopping_patience and best_path.is_file():
        classifier.load_state_dict(torch.load(best_path, weights_only=True))

    test = score_clips(classifier, test_loaded, labels=labels, window_samples=window, hop_samples=hop)
    val = score_clips(classifier, val_loaded, labels=labels, window_samples=window, hop_samples=hop)
    if test_loaded:
        save_predictions(test.predictions_of(test_loaded), config.out)
    result_metrics = _result_metrics(test, val, scored_test=bool(test_loaded), scored_val=bool(val_loaded),
                                     validation=validation, split=split, out=out, train_seconds=train_seconds,
                                     skipped=skipped, history=history, world_size=trainer.args.world_size)
    log.info("held-out accuracy %.3f (val %.3f) after %d steps, %.0f s",
             test.accuracy, val.accuracy, out.global_step, train_seconds)
    _save_checkpoint(hf_model, config, labels=labels, window=window, hop=hop, inputs=inputs, clips=len(clips),
                     extra={"split_manifest": str(manifest_path.resolve()), "config_hash": digest,
                            "config": config.to_json(), "resolved": hp, "recipe_version": RECIPE_VERSION,
                            "result": result_metrics},
                     progress=progress)
    _remove_trainer_dir(config.out / TRAINER_DIR)
    return TrainResult(
        checkpoint=config.out, manifest=manifest_path.resolve(), labels=labels, window_samples=window,
        test_accuracy=test.accuracy, val_accuracy=val.accuracy, steps=int(out.global_step),
        train_seconds=train_seconds, metrics=result_metrics,
    )


def _launched_as() -> tuple[int, int]:
    """``(rank, world size)`` as ``torchrun`` / ``accelerate launch`` export them (``RANK``, ``WORLD_SIZE``).

    ``(0, 1)`` when run alone. Read before the Trainer sets up the process group; its
    ``args.process_index`` / ``args.world_size`` are the same numbers.
    """
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _build_model(config: TrainConfig, labels: tuple[str, ...]):
    """``(model, InputSpec)`` to train.

    A preset's random model gets normalised input and a mask; a pretrained base keeps its
    feature extractor's input preparation and gets a new head.
    """
    from training.hf_import import InputSpec, load_pretrained
    from training.model import new_model

    if config.is_preset:
        return new_model(config.base, labels=labels, seed=config.seed), InputSpec()
    check_base_name(config)
    model, inputs = load_pretrained(config.base, labels=labels)
    if inputs.sample_rate != 16_000:
        raise ConfigError(f"base={config.base!r}: its feature extractor expects {inputs.sample_rate} Hz; training "
                          "feeds 16 kHz audio")
    return model, inputs


def _screen(config: TrainConfig, split, read_skipped, *, labels: tuple[str, ...], manifest_path: Path, rank: int,
            progress: bool):
    """Decode and screen every clip of ``split`` once; record, refuse (strict) or report the unusable ones.

    ``read_skipped``: the files the corpus readers skipped. Process 0 writes the split
    manifest (with every defect) and the warning; the labels must survive the screen.

    Returns:
        ``(split without the unusable clips, every defect, (train, val, test) LoadedClip lists)``.

    Raises:
        UnusableClipsError: a defect with ``config.strict``, or no usable clip at all.
        CorpusError: the unusable clips took a class out of the training clips.
    """
    from training.data import LoadedClip
    from training.folds import write_manifest
    from training.screen import ScreenConfig, active_cache, screen_split, unreported

    cache = active_cache()
    split, screened = screen_split(split, config=ScreenConfig(sample_rate=SAMPLE_RATE), cache=cache, progress=progress)
    skipped = [s for s in read_skipped if s.defect] + list(screened.skipped)
    if rank == 0:  # process 0 of a distributed run; the others draw the same split (seeded) and write nothing
        write_manifest(split, manifest_path, root=config.manifest_root(), skipped=skipped)
    refuse_if_strict(config, skipped)
    if not screened.audio:
        raise UnusableClipsError(f"{config.corpus}: no clip can be used",
                                 [f"{s.path} ({s.reason}: {s.detail})" for s in screened.skipped])
    if rank == 0:  # the warning points at the line that called train()
        report_skipped(config, unreported(screened.skipped, cache), manifest_path, stacklevel=4)
    if screened.skipped and labels_of(config, split) != labels:
        raise CorpusError(f"{config.corpus}: without the {len(screened.skipped)} unusable clip(s) the training clips "
                          f"no longer hold every class of {list(labels)} (see {manifest_path})")
    index = {lab: i for i, lab in enumerate(labels)}
    loaded = tuple([LoadedClip(screened.audio[c.path], index[c.label], c) for c in part] for part in split)
    return split, skipped, loaded


def _make_trainer(config: TrainConfig, hp: dict[str, Any], classifier, train_loaded, val_loaded, *,
                  labels: tuple[str, ...], window: int, hop: int, gpu: bool, rank: int, progress: bool,
                  callbacks: tuple):
    """The HF Trainer of a run, and what the run reads back from it.

    Returns:
        ``(trainer, resume_from, validation, history)``: the Trainer checkpoint to resume
        from (``None`` for a fresh run), the validation state and the metrics-log rows,
        which the callbacks update in place while the Trainer runs.
    """
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.trainer_utils import get_last_checkpoint

    from training.callbacks import (
        EpochSeedCallback,
        MetricsLogCallback,
        StepProgressCallback,
        ValidationCallback,
        read_metrics_log,
        restore_validation,
    )
    from training.data import WindowDataset, collate
    from training.loss import ClassifierWithLoss, class_weights

    weights = class_weights([lc.label_id for lc in train_loaded], len(labels)) if config.class_weighted else None
    module = ClassifierWithLoss(classifier, class_weights=weights)
    train_ds = WindowDataset(train_loaded, window_samples=window, hop_samples=hop, train=True, seed=config.seed)

    steps_per_epoch = max(1, len(train_ds) // hp["batch_size"])
    total_steps = hp["max_steps"] or max(1, int(math.ceil(hp["epochs"] * steps_per_epoch)))
    eval_steps = config.eval_steps or (max(1, total_steps // 10) if config.early_stopping_patience else None)
    trainer_dir = config.out / TRAINER_DIR
    resume_from = get_last_checkpoint(str(trainer_dir)) if config.resume and trainer_dir.is_dir() else None
    args = _training_arguments(config, hp, total_steps=total_steps, gpu=gpu,
                               find_unused=may_skip_parameters(classifier.model.config))
    metrics_log = config.out / METRICS_LOG
    resumed_step = int(Path(resume_from).name.rsplit("-", 1)[-1]) if resume_from else 0
    history: list[dict[str, float]] = read_metrics_log(metrics_log, up_to_step=resumed_step) if resume_from else []
    validation = restore_validation(resume_from, trainer_dir, rank=rank)
    validate = ValidationCallback(classifier, val_loaded, labels=labels, window_samples=window, hop_samples=hop,
                                  eval_steps=eval_steps, patience=config.early_stopping_patience, history=history,
                                  metrics_log=metrics_log, validation=validation, trainer_dir=trainer_dir)
    trainer = Trainer(model=module, args=args, data_collator=collate, train_dataset=train_ds,
                      callbacks=[EpochSeedCallback(train_ds, steps_per_epoch=steps_per_epoch),
                                 MetricsLogCallback(history=history, metrics_log=metrics_log), validate, *callbacks])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)  # its tqdm bar redraws into logs: ours prints a line per tenth there
    if progress:
        trainer.add_callback(StepProgressCallback())
    return trainer, resume_from, validation, history


def may_skip_parameters(model_config) -> bool:
    """Whether a step can leave trainable parameters without a gradient (a Hugging Face audio model's config).

    LayerDrop skips whole layers, and SpecAugment's mask embedding is used only on steps that mask.
    Only then must DDP look for unused parameters after every step (``find_unused_parameters``); asked
    to look when there are none, it costs a graph traversal a step and warns that it found nothing.
    """
    return any(float(getattr(model_config, name, 0.0) or 0.0) > 0
               for name in ("layerdrop", "mask_time_prob", "mask_feature_prob"))


def _training_arguments(config: TrainConfig, hp: dict[str, Any], *, total_steps: int, gpu: bool,
                        find_unused: bool = True):
    """The ``transformers.TrainingArguments`` of a run: linear warm-up and decay over ``total_steps``.

    ``find_unused``: DDP's ``find_unused_parameters`` (:func:`may_skip_parameters`); a single process ignores it.
    """
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(config.out / TRAINER_DIR),
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
        disable_tqdm=True,  # the Trainer's tqdm bar is replaced by StepProgressCallback (client.progress)
        ddp_find_unused_parameters=find_unused,
    )


def _result_metrics(test, val, *, scored_test: bool, scored_val: bool, validation: dict[str, Any], split, out,
                    train_seconds: float, skipped, history: list[dict[str, float]], world_size: int) -> dict[str, Any]:
    """Everything a run records besides the accuracies' headline (``TrainResult.metrics``, the checkpoint's ``result``).

    ``test``/``val``: the scores of the held-out clips (:func:`training.evaluate.score_clips`);
    ``scored_test``/``scored_val``: whether there were any; ``out``: what ``Trainer.train`` returned.
    """
    return {
        "test_accuracy": test.accuracy,
        "val_accuracy": val.accuracy,
        "test_metrics": test.metrics().scalars() if scored_test else {},
        "val_metrics": val.metrics().scalars() if scored_val else {},
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
        **({"world_size": world_size} if world_size > 1 else {}),
    }


def _save_checkpoint(hf_model, config: TrainConfig, *, labels: tuple[str, ...], window: int, hop: int, inputs,
                     clips: int, extra: dict[str, Any], progress: bool) -> None:
    """Write the bundle checkpoint into ``config.out`` (no progress bars unless ``progress``).

    ``inputs``: the base's ``InputSpec``; ``clips``: how many clips of the class set the corpora hold;
    ``extra``: what the checkpoint records of the run (split, config hash, config, result).
    """
    from transformers.utils import logging as hf_logging

    from training.model import CheckpointInfo, save_checkpoint

    info = CheckpointInfo(
        labels=labels,
        window_samples=window,
        sample_rate=SAMPLE_RATE,
        hop_samples=hop,
        base=config.base,
        corpus=" + ".join(f"{lay}:{root.resolve()}" for lay, root in config.roots().items())
        + f" ({config.class_set}, {clips} clips)",
        normalize=inputs.normalize,
        attention_mask=inputs.attention_mask,
        extra=extra,
    )
    hf_model.eval()
    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        save_checkpoint(hf_model, config.out, info)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _remove_trainer_dir(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["train"]
