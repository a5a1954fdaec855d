"""The clips a training run uses, and what happens to the ones it cannot use.

A config's corpora are read and relabelled by its class set (:func:`scan_training_clips`),
split by actor (:func:`training_split`: a given manifest, a fold, or a fresh split),
and the model's labels are taken from the training partition (:func:`labels_of`).
Corpus files that cannot be used are fatal with ``strict`` (:func:`refuse_if_strict`)
and otherwise reported once (:func:`report_skipped`).
"""

from __future__ import annotations

from pathlib import Path

from client.errors import ConfigError
from training.corpus import CLASS_SETS, CorpusScan, SkippedFile, apply_class_set, scan_corpora
from training.errors import CorpusError, UnusableClipsError
from training.train_config import TrainConfig

#: File name of the split manifest written into a run's output directory.
MANIFEST_NAME = "split.json"


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


def training_split(config: TrainConfig, clips):
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


def labels_of(config: TrainConfig, split) -> tuple[str, ...]:
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


def refuse_if_strict(config: TrainConfig, skipped) -> None:
    """Raise :class:`UnusableClipsError` for the defects among ``skipped`` when ``config.strict``."""
    defects = [s for s in skipped if s.defect]
    if config.strict and defects:
        raise UnusableClipsError(f"{config.corpus} (strict)", [f"{s.path} ({s.reason}: {s.detail})" for s in defects])


def report_skipped(config: TrainConfig, skipped: list[SkippedFile], manifest: Path, *, stacklevel: int = 3) -> None:
    """One warning for the clips the screen set aside (not yet reported in this decode-cache block).

    ``stacklevel`` counts as for :func:`warnings.warn`, from this function: the default
    points at the line that called this function's caller.
    """
    if not skipped:
        return
    import warnings

    from training.corpus import CorpusWarning, summarize_skipped

    roots = config.roots()
    root = next(iter(roots.values())) if len(roots) == 1 else None
    warnings.warn(f"{config.corpus}: {summarize_skipped(skipped, root=root)} as unusable; training goes on without "
                  f"them (listed in {manifest}; --strict makes them fatal)", CorpusWarning, stacklevel=stacklevel)
