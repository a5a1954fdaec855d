"""``ser corpus synth``, ``ser train``, ``ser cv`` and ``ser evaluate``: the training commands.

Their options (the ones ``train`` and ``cv`` share are added once, by
``_add_training_options``) and handlers; the handlers import :mod:`training` when run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ser.arg_types import csv_ints, non_negative_int, positive_float, positive_int


def cmd_corpus_synth(args: argparse.Namespace) -> int:
    """`ser corpus synth`: write a synthetic corpus."""
    from training.synth import synthesize_corpus

    summary = synthesize_corpus(
        args.out,
        layout=args.layout,
        actors=args.actors if args.actors is not None else (24 if args.layout == "ravdess" else 91),
        sample_rate=args.sample_rate,
        seed=args.seed,
        progress=True,
    )
    print(summary)
    return 0


def _train_config(args: argparse.Namespace):
    """The TrainConfig of `ser train` / `ser cv` options: the recipe's values, overridden by options given."""
    from training.train_config import TrainConfig
    from training.training_recipes import load_recipe

    given = dict(base=args.base, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                 learning_rate=args.lr, seed=args.seed, window_s=args.window_s, class_set=args.class_set,
                 test_actors=args.test_actors, val_actors=args.val_actors, early_stopping_patience=args.early_stopping_patience,
                 eval_steps=args.eval_steps, save_steps=args.save_steps, precision=args.precision,
                 folds=getattr(args, "folds", None), fold=getattr(args, "fold", None), manifest=getattr(args, "manifest", None))
    flags = dict(calm_as_neutral=args.calm_as_neutral, include_song=args.include_song, class_weighted=args.class_weighted,
                 resume=args.resume, gradient_checkpointing=args.gradient_checkpointing, strict=args.strict)
    options = {k: v for k, v in given.items() if v is not None}  # unset: the recipe's or TrainConfig's default
    options.update({k: True for k, v in flags.items() if v})
    if args.layout:
        options["layout"] = tuple(args.layout)
    corpus = tuple(args.corpus) if len(args.corpus) > 1 else args.corpus[0]
    if args.recipe:
        return load_recipe(args.recipe).config(corpus=corpus, out=args.out, **options)
    return TrainConfig(corpus=corpus, out=args.out, **options)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `ser train` and `ser cv`."""
    p.add_argument("--corpus", type=Path, action="append", required=True, help="corpus root; give it twice (with two --layout) for combined corpora")
    p.add_argument("--layout", action="append", choices=["ravdess", "crema-d"], default=None, help="layout of each --corpus, in order (default: ravdess)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--base", default=None, help="model preset (tiny, base, xlsr-large: random weights) or a hub name / local path of a pretrained wav2vec2, HuBERT, WavLM or Data2VecAudio (default: tiny)")
    p.add_argument("--recipe", default=None, help="demo, test, ravdess8, ravdess7, crema6, combined7 (training/recipes/*.json) or a recipe JSON path; options given explicitly override it")
    p.add_argument("--class-set", choices=["ravdess8", "ravdess7", "crema6", "combined7"], default=None, help="(default: ravdess8)")
    p.add_argument("--calm-as-neutral", action="store_true", help="ravdess7/combined7: relabel calm as neutral instead of dropping it")
    p.add_argument("--include-song", action="store_true", help="RAVDESS: also read song clips (vocal channel 02)")
    p.add_argument("--epochs", type=positive_float, default=None, help="training epochs (default: the trainer's default for the base)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate")
    p.add_argument("--seed", type=int, default=None, help="(default: 0)")
    p.add_argument("--window-s", type=positive_float, default=None, help="window length in seconds (default: chosen from the corpus durations)")
    p.add_argument("--test-actors", type=positive_int, default=None, help="held-out test actors of a single split (default: 2)")
    p.add_argument("--val-actors", type=non_negative_int, default=None, help="validation actors (per corpus for folds; default: 1)")
    p.add_argument("--class-weighted", action="store_true", help="weight the loss by inverse class frequency")
    p.add_argument("--early-stopping-patience", type=positive_int, default=None, help="stop after N validations without a better validation weighted F1; keep the best weights")
    p.add_argument("--eval-steps", type=positive_int, default=None, help="validate every N steps (metrics.csv)")
    p.add_argument("--save-steps", type=positive_int, default=None, help="Trainer checkpoint every N steps (for --resume)")
    p.add_argument("--resume", action="store_true", help="continue from the last Trainer checkpoint in --out after an interruption")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None, help="fp16/bf16 mixed precision needs a GPU (default: fp32)")
    p.add_argument("--strict", action="store_true", help="stop at corpus files that cannot be used (misnamed, undecodable, silent, far outside the corpus's durations) instead of skipping them and listing them in split.json")


def cmd_train(args: argparse.Namespace) -> int:
    """`ser train`: fine-tune and save a checkpoint."""
    from training.train import train

    result = train(_train_config(args), progress=True)
    print(result)
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    """`ser cv`: k actor-grouped folds (or the cross-corpus table) and a report."""
    from training.cv import run_cross_corpus, run_cv

    config = _train_config(args)
    if args.cross_corpus:
        print(run_cross_corpus(config, fold=args.cross_fold, progress=True))
    else:
        print(run_cv(config, only=args.only, progress=True))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`ser evaluate`: score a checkpoint (or an ONNX variant of it) on a manifest's partition."""
    from training.evaluate import evaluate_checkpoint

    roots = None
    if args.corpus:
        layouts = args.layout or ["ravdess"] * len(args.corpus)
        roots = dict(zip(layouts, args.corpus, strict=False))
    result = evaluate_checkpoint(args.checkpoint, manifest=args.manifest, partition=args.partition, onnx=args.onnx,
                                 roots=roots, out=args.out, progress=True)
    print(result)
    return 0


def add_parsers(sub) -> None:
    """Add ``corpus synth``, ``train``, ``cv`` and ``evaluate`` to ``sub`` (the ``ser`` subcommands)."""
    corpus = sub.add_parser("corpus", help="corpus utilities").add_subparsers(dest="corpus_command", required=True)
    synth = corpus.add_parser("synth", help="write a deterministic synthetic corpus in a real corpus layout")
    synth.add_argument("--layout", choices=["ravdess", "crema-d"], default="ravdess", help="on-disk layout to imitate: Actor_XX/03-01-EE-II-SS-RR-AA.wav or AudioWAV/1001_DFA_ANG_XX.wav (default: ravdess)")
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--actors", type=positive_int, default=None, help="number of actors (default: 24 for RAVDESS, 91 for CREMA-D)")
    synth.add_argument("--sample-rate", type=positive_int, default=None, help="Hz of the written wavs (default: 48000 RAVDESS, 16000 CREMA-D, as the real corpora)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_corpus_synth)

    tr = sub.add_parser("train", help="fine-tune Wav2Vec2ForSequenceClassification on one actor-held-out split or fold")
    _add_training_options(tr)
    tr.add_argument("--fold", type=non_negative_int, default=None, help="train on fold i of --folds actor-grouped folds instead of a --test-actors split")
    tr.add_argument("--folds", type=positive_int, default=None, help="k of --fold (default: 5)")
    tr.add_argument("--manifest", type=Path, default=None, help="reuse this split manifest (split.json)")
    tr.set_defaults(func=cmd_train)

    cv = sub.add_parser("cv", help="k-fold actor-grouped cross-validation (or --cross-corpus) with report.md, metrics, confusion matrices")
    _add_training_options(cv)
    cv.add_argument("--folds", type=positive_int, default=None, help="k (default: 5)")
    cv.add_argument("--only", type=csv_ints, default=None, help="run only these folds, e.g. 0,1")
    cv.add_argument("--cross-corpus", action="store_true", help="train on RAVDESS, CREMA-D and both; test on each (needs both corpora)")
    cv.add_argument("--cross-fold", type=non_negative_int, default=0, help="fold of the cross-corpus table (default: 0)")
    cv.set_defaults(func=cmd_cv)

    ev = sub.add_parser("evaluate", help="score a checkpoint (PyTorch, or --onnx variant) on a split manifest's test clips")
    ev.add_argument("checkpoint", type=Path, help="checkpoint directory written by `ser train`")
    ev.add_argument("--manifest", type=Path, required=True, help="split manifest (split.json of a run or fold)")
    ev.add_argument("--partition", choices=["test", "val", "train"], default="test")
    ev.add_argument("--onnx", type=Path, default=None, help="score this exported model.onnx (fp32/int8) with ONNX Runtime instead")
    ev.add_argument("--corpus", type=Path, action="append", default=None, help="corpus root if moved since the manifest was written (repeat for combined)")
    ev.add_argument("--layout", action="append", choices=["ravdess", "crema-d"], default=None)
    ev.add_argument("--out", type=Path, default=None, help="write predictions.{csv,json} and metrics.json here")
    ev.set_defaults(func=cmd_evaluate)
