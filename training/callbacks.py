"""The HF Trainer callbacks of :func:`training.train.train`, and the metrics log they write.

* :class:`EpochSeedCallback` tells the training dataset which epoch starts, so its
  random crops are seeded per epoch and clip (a resumed run sees the same data).
* :class:`MetricsLogCallback` appends the Trainer's log lines to ``metrics.csv``.
* :class:`ValidationCallback` scores the validation clips every ``eval_steps``
  (clip-level, as served), keeps the best weights (``best.pt``) and stops early
  when validation weighted F1 stops improving; its state and the best weights are
  copied into each Trainer checkpoint, and :func:`restore_validation` reads them back
  on resume.

``metrics.csv`` (:data:`METRICS_COLUMNS`) is rewritten after every event
(:func:`write_metrics_log`); a resumed run keeps the rows up to its checkpoint
(:func:`read_metrics_log`). In a distributed run only process 0 writes; process 0's
validation F1 is broadcast so that every process stops at the same step.

Importing this module imports torch and transformers; ``train`` imports it only when it trains.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from training.evaluate import score_clips

#: The training run's logger (``train(progress=False)`` sends the metrics only there).
log = logging.getLogger("training.train")

#: Columns of ``metrics.csv``: one row per log or validation event.
METRICS_COLUMNS = ("step", "epoch", "loss", "learning_rate", "grad_norm", "val_accuracy", "val_balanced_accuracy",
                   "val_weighted_f1", "val_macro_f1")
#: File of the validation state (``{"best_f1", "best_step", "bad"}``) in each Trainer checkpoint.
VALIDATION_STATE = "ser_validation.json"
#: File of the best weights so far (the classifier's state dict), in the trainer folder and each Trainer checkpoint.
BEST_WEIGHTS = "best.pt"


def write_metrics_log(path: Path, rows: list[dict[str, float]]) -> None:
    """Rewrite the metrics CSV (one row per log or validation event, :data:`METRICS_COLUMNS`)."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(METRICS_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_metrics_log(path: Path, *, up_to_step: int) -> list[dict[str, float]]:
    """The rows of a metrics CSV up to step ``up_to_step`` (``step`` as int, the rest float; empty cells left out)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [{k: int(float(v)) if k == "step" else float(v) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(f)]
    return [r for r in rows if r.get("step", 0) <= up_to_step]


def restore_validation(resume_from: str | None, trainer_dir: Path, *, rank: int) -> dict[str, Any]:
    """The validation state ``{"best_f1", "best_step", "bad"}`` a run starts from.

    A fresh one (``best_f1`` -1, no best step), or the one stored in the Trainer checkpoint
    ``resume_from``, whose best weights process 0 (``rank`` 0) copies back into ``trainer_dir``.
    """
    validation: dict[str, Any] = {"best_f1": -1.0, "best_step": 0, "bad": 0}
    if resume_from and (Path(resume_from) / VALIDATION_STATE).is_file():
        validation = json.loads((Path(resume_from) / VALIDATION_STATE).read_text())
        if rank == 0 and (Path(resume_from) / BEST_WEIGHTS).is_file():
            shutil.copyfile(Path(resume_from) / BEST_WEIGHTS, trainer_dir / BEST_WEIGHTS)
    return validation


def _from_process_zero(value: float, args) -> float:
    """``value`` as process 0 computed it, on every process (a broadcast; ``value`` itself when run alone).

    Decisions taken from it (early stopping) then cannot differ between the processes
    of a distributed run, which would leave some waiting for the others forever.
    """
    if args.world_size == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=args.device)
    dist.broadcast(t, src=0)
    return float(t.item())


class EpochSeedCallback(TrainerCallback):
    """Sets the training dataset's epoch (``train_ds.set_epoch``) when an epoch begins.

    The epoch is computed from the global step, so it is also right when a run resumes mid-epoch.
    """

    def __init__(self, train_ds, *, steps_per_epoch: int) -> None:
        self.train_ds = train_ds
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_begin(self, args, state, control, **kwargs):
        """Seed this epoch's crops."""
        self.train_ds.set_epoch(state.global_step // self.steps_per_epoch)  # also right when resuming mid-epoch


class MetricsLogCallback(TrainerCallback):
    """Appends each Trainer log line to ``history`` and rewrites ``metrics_log`` (process 0 only)."""

    def __init__(self, *, history: list[dict[str, float]], metrics_log: Path) -> None:
        self.history = history
        self.metrics_log = metrics_log

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Record one log line (loss, learning rate, grad norm...)."""
        if logs and state.is_world_process_zero:  # one writer in a distributed run
            self.history.append({"step": state.global_step, "epoch": float(state.epoch or 0),
                                 **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}})
            write_metrics_log(self.metrics_log, self.history)
            log.info("step %d: %s", state.global_step, logs)


class ValidationCallback(TrainerCallback):
    """Clip-level validation every ``eval_steps``; early stopping on weighted F1; best weights kept.

    Args:
        classifier: the ``WaveformClassifier`` being trained (scored and saved).
        val_loaded: the validation clips (``training.data.LoadedClip``); none: no validation.
        labels: class names in logit order.
        window_samples: W; ``hop_samples``: the scoring hop (both at 16 kHz).
        eval_steps: validate every this many steps (and at the last step); ``None``: never.
        patience: stop after this many validations without a better weighted F1 (``None``: never stop early).
        history: the rows of the metrics log (validation rows are appended).
        metrics_log: the metrics CSV to rewrite.
        validation: the state ``{"best_f1", "best_step", "bad"}``, updated in place
            (see :func:`restore_validation`).
        trainer_dir: folder of the Trainer checkpoints and of ``best.pt``.
    """

    def __init__(self, classifier, val_loaded, *, labels: tuple[str, ...], window_samples: int, hop_samples: int,
                 eval_steps: int | None, patience: int | None, history: list[dict[str, float]], metrics_log: Path,
                 validation: dict[str, Any], trainer_dir: Path) -> None:
        self.classifier = classifier
        self.val_loaded = val_loaded
        self.labels = labels
        self.window_samples = window_samples
        self.hop_samples = hop_samples
        self.eval_steps = eval_steps
        self.patience = patience
        self.history = history
        self.metrics_log = metrics_log
        self.validation = validation
        self.trainer_dir = trainer_dir
        self.best_path = trainer_dir / BEST_WEIGHTS

    def on_step_end(self, args, state, control, **kwargs):
        """Validate at every ``eval_steps``-th step and the last one; keep the best weights; stop early."""
        step = state.global_step
        if self.eval_steps is None or not self.val_loaded or (step % self.eval_steps and step != state.max_steps):
            return
        zero, f1 = state.is_world_process_zero, -1.0
        validation = self.validation
        if zero:  # the weights are the same on every process: process 0 scores and writes
            m = score_clips(self.classifier, self.val_loaded, labels=self.labels, window_samples=self.window_samples,
                            hop_samples=self.hop_samples).metrics()
            self.history.append({"step": step, "epoch": float(state.epoch or 0),
                                 **{f"val_{k}": v for k, v in m.scalars().items()}})
            write_metrics_log(self.metrics_log, self.history)
            f1 = m.weighted_f1
        f1 = _from_process_zero(f1, args)  # every process stops at the same step
        if f1 > validation["best_f1"]:
            validation.update(best_f1=f1, best_step=step, bad=0)
            if zero:
                self.trainer_dir.mkdir(parents=True, exist_ok=True)
                torch.save(self.classifier.state_dict(), self.best_path)
        else:
            validation["bad"] += 1
            if self.patience and validation["bad"] >= self.patience:
                log.info("early stop at step %d: best validation weighted F1 %.3f at step %d",
                         step, validation["best_f1"], validation["best_step"])
                control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        """Copy the validation state and the best weights into the Trainer checkpoint just written."""
        ckpt = self.trainer_dir / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and ckpt.is_dir():
            (ckpt / VALIDATION_STATE).write_text(json.dumps(self.validation))
            if self.best_path.is_file():
                shutil.copyfile(self.best_path, ckpt / BEST_WEIGHTS)


class StepProgressCallback(TrainerCallback):
    """The training steps' progress and the Trainer's log lines, through :func:`client.progress.progress_bar`.

    Takes the place of the Trainer's own ``ProgressCallback``, whose tqdm bar written to a log is one line
    per redraw: here a bar on a terminal, else a line per tenth of the steps. Process 0 only.
    """

    def __init__(self) -> None:
        self.bar = None
        self.step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        """Open the display at the step the run starts from (a resumed run does not start at 0)."""
        from client.progress import progress_bar  # noqa: PLC0415

        if state.is_world_process_zero:
            self.bar = progress_bar(total=state.max_steps, initial=state.global_step, desc="train", unit="step")
        self.step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        """Count the steps done since the last call."""
        if self.bar is not None:
            self.bar.update(state.global_step - self.step)
        self.step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Print the Trainer's log line (loss, learning rate...; floats to 4 digits)."""
        if self.bar is not None and logs:
            shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in logs.items() if k != "total_flos"}
            self.bar.write(str(shown))

    def on_train_end(self, args, state, control, **kwargs):
        """Close the display."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
