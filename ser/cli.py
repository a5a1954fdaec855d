"""``ser``: the bundle's one command line, a thin layer over the library.

Each subcommand parses its options and calls one library function; heavy
imports (torch, transformers, onnx) happen inside the command that needs them so
``ser --help`` and ``ser predict`` stay fast. Errors the user can cause are
:class:`client.errors.SerError`: printed as one ``error: ...`` line with a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from client.errors import SerError
from ser.arg_types import csv_ints as _csv_ints
from ser.arg_types import csv_list as _csv
from ser.arg_types import non_negative_float as _non_negative_float
from ser.arg_types import non_negative_int as _non_negative_int
from ser.arg_types import positive_int as _positive_int

DEFAULT_REPOSITORY = Path("model_repository/portable")


# --- corpus ---------------------------------------------------------------------


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


# --- train ----------------------------------------------------------------------


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
    p.add_argument("--epochs", type=float, default=None, help="training epochs (default: the trainer's default for the base)")
    p.add_argument("--max-steps", type=_positive_int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--seed", type=int, default=None, help="(default: 0)")
    p.add_argument("--window-s", type=float, default=None, help="window length in seconds (default: chosen from the corpus durations)")
    p.add_argument("--test-actors", type=_positive_int, default=None, help="held-out test actors of a single split (default: 2)")
    p.add_argument("--val-actors", type=int, default=None, help="validation actors (per corpus for folds; default: 1)")
    p.add_argument("--class-weighted", action="store_true", help="weight the loss by inverse class frequency")
    p.add_argument("--early-stopping-patience", type=_positive_int, default=None, help="stop after N validations without a better validation weighted F1; keep the best weights")
    p.add_argument("--eval-steps", type=_positive_int, default=None, help="validate every N steps (metrics.csv)")
    p.add_argument("--save-steps", type=_positive_int, default=None, help="Trainer checkpoint every N steps (for --resume)")
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


# --- export / repository -----------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    """`ser export`: ONNX variants with recipes (and optionally a repository)."""
    from export.pipeline import export_checkpoint
    from training.hf_import import is_bundle_checkpoint

    bundle = is_bundle_checkpoint(args.checkpoint)
    if (args.manifest or (args.audio_dir and (bundle or args.window_s is not None))) and not args.report:
        from client.errors import ConfigError

        raise ConfigError("--manifest/--audio-dir choose the clips of the quantization report: add --report "
                          "(for a Hugging Face checkpoint, --audio-dir alone chooses the window W)")
    if args.report:  # before exporting: a wrong data source must not cost an export or replace the one in --out
        from export.report import check_data_source

        check_data_source(manifest=args.manifest, audio_dir=args.audio_dir)
    window_dir = None if bundle or args.window_s is not None else args.audio_dir
    result = export_checkpoint(args.checkpoint, args.out, variants=args.variants, preset=args.preset,
                               window_s=args.window_s, audio_dir=window_dir,
                               verify_cpu_classes=args.verify_cpu_class)
    print(result)
    if args.report:
        from export.report import ReportConfig, quantization_report

        report = quantization_report(args.out, manifest=args.manifest, audio_dir=args.audio_dir,
                                     out_dir=args.report_out, config=ReportConfig(threads=args.report_threads))
        print(report.to_markdown())
        print(f"wrote {Path(args.report_out or args.out / 'report')}/report.{{json,md}} and a confusion matrix per variant")
    if args.repository:
        from export.repository import write_repository

        written = write_repository(args.out, args.repository, runtime=args.runtime, variants=args.variants)
        for path in written:
            print(f"wrote {path}")
    return 0


def cmd_int8_presets(args: argparse.Namespace) -> int:
    """`ser int8-presets`: every preset's drift from fp32 on one exported model, per CPU class."""
    from export.errors import ExportError
    from export.parity import ParityConfig
    from export.preset_survey import survey_markdown, survey_presets
    from export.recipe import ExportRecord

    fp32 = args.export_dir / "fp32"
    if not (fp32 / "model.onnx").is_file():
        raise ExportError(f"{fp32 / 'model.onnx'}: missing; the survey quantizes the fp32 export (ser export --variants fp32,int8)")
    window = ExportRecord.read(fp32 / "recipe.json").contract.window_samples
    rows = survey_presets(fp32 / "model.onnx", window_samples=window, presets=args.presets or _all_presets(),
                          classes=args.cpu_class, progress=lambda what: print(f"  checking {what}", file=sys.stderr))
    print(survey_markdown(rows, tolerance=ParityConfig().prob_atol))
    return 0


def _all_presets() -> tuple[str, ...]:
    from export.quantize import QUANTIZATION_PRESETS

    return tuple(QUANTIZATION_PRESETS)


def cmd_repository(args: argparse.Namespace) -> int:
    """`ser repository`: write a Triton model repository."""
    from export.repository import write_repository

    audio = None
    if args.audio_model:
        from client.audio_service import AudioLimits
        from export.audio_repository import AudioModelConfig

        audio = AudioModelConfig(instances=args.audio_instances, limits=AudioLimits(
            max_bytes=args.audio_max_bytes, max_duration_s=args.audio_max_duration_s))
    written = write_repository(
        args.export_dir,
        args.out,
        runtime=args.runtime,
        variants=args.variants,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        intra_op_threads=args.intra_op_threads,
        gpu_accelerator=args.gpu_accelerator,
        bench=args.bench,
        bench_shape=args.bench_shape,
        verify_cpu_classes=args.verify_cpu_class,
        audio=audio,
    )
    for path in written:
        print(f"wrote {path}")
    return 0


# --- serve / predict ----------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """`ser serve`: run the local tritonserver until interrupted."""
    from deploy.flags import grpc_tls_from_dir, read_admin_key
    from deploy.supervisor import RestartPolicy, serve_forever

    serve_forever(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        admin_key=read_admin_key(args.admin_key_file) if args.admin_key_file else None,
        grpc_tls=grpc_tls_from_dir(args.grpc_tls_dir) if args.grpc_tls_dir else None,
        http=not args.no_http,
        restart=RestartPolicy(max_restarts=args.max_restarts),
        log_path=args.log,
    )
    return 0


#: ``ser predict --retry-for`` of a batch job (a directory or ``--output``): long enough for a server restart.
BATCH_RETRY_FOR_S = 60.0


def _retry_for(args: argparse.Namespace) -> float:
    """``--retry-for`` as given, else :data:`BATCH_RETRY_FOR_S` for a batch job and 0 for files on the terminal."""
    if args.retry_for is not None:
        return args.retry_for
    batch = args.output is not None or any(Path(f).is_dir() for f in args.files)
    return BATCH_RETRY_FOR_S if batch else 0.0


def cmd_predict(args: argparse.Namespace) -> int:
    """`ser predict`: classify files and directories through a server; exit 1 if any file failed."""
    from client.audio import AudioConfig
    from client.batch import find_audio, predict_files
    from client.errors import ConfigError
    from client.triton_client import RetryPolicy, SerClient, TransportOptions

    headers = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--header {item!r}: expected KEY=VALUE")
        headers[key.strip()] = value
    transport = TransportOptions(
        headers=headers, ssl=args.tls, root_certificates=args.tls_root_certs, private_key=args.tls_private_key,
        certificate_chain=args.tls_cert_chain, insecure=args.tls_insecure, request_timeout_s=args.request_timeout_s,
        network_timeout_s=args.request_timeout_s,
    )
    retry = RetryPolicy(max_attempts=args.retries + 1, initial_backoff_s=args.retry_backoff_s,
                        max_backoff_s=max(args.retry_backoff_s, args.retry_max_backoff_s), retry_for_s=_retry_for(args))
    fmt = "jsonl" if args.json and args.format is None else args.format
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    files = find_audio(args.files)
    with SerClient(args.url, model=args.model, protocol=args.protocol, timeout_s=args.timeout_s, retry=retry,
                   transport=transport, audio=AudioConfig(max_duration_s=args.max_duration_s),
                   server_side=args.server_side) as client:
        summary = predict_files(client, files, output=args.output, fmt=fmt, resume=args.resume,
                                concurrency=args.concurrency, top_k=args.top_k, progress=progress)
    if summary.failed:
        print(f"error: {summary.failed} of {summary.total} files failed"
              + (f" (rows with ok=false in {args.output})" if args.output else ""), file=sys.stderr)
    return 1 if summary.failed else 0


# --- bench ------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    """`ser bench`: in-process latency/throughput of shapes x runners x batch sizes, side by side."""
    from export.bench import run_bench
    from ser.bench_options import config_from_args

    run_bench(config_from_args(args))
    return 0


# --- bench-client -----------------------------------------------------------------


def cmd_bench_client(args: argparse.Namespace) -> int:
    """`ser bench-client`: preprocessing vs served latency, directory-mode clips/s (starts a server with --repository)."""
    import contextlib

    from client.bench import config_from_args, run_client_bench
    from client.triton_client import SerClient

    config = config_from_args(args)
    with contextlib.ExitStack() as stack:
        url = args.url
        if args.repository is not None:
            from deploy.local_triton import LocalTriton

            server = stack.enter_context(LocalTriton(args.repository))
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
        client = stack.enter_context(SerClient(url, model=args.model, protocol=args.protocol))
        run_client_bench(client, config)
    return 0


# --- loadtest ---------------------------------------------------------------------


def cmd_loadtest(args: argparse.Namespace) -> int:
    """`ser loadtest`: Locust against a started or given server; report + exit code from the gates."""
    if args.compare_server_side:
        return _compare_paths(args)
    from loadtest.runner import loadtest

    return loadtest(
        repository=args.repository, url=args.url, metrics_url=args.metrics_url, model=args.model,
        protocol=args.protocol, users=args.users, run_time_s=args.run_time, warmup_s=args.warmup,
        windows_per_request=args.windows_per_request,
        audio_dir=args.audio_dir, manifest=args.manifest, partition=args.partition, generated_clips=args.generated_clips,
        max_p95_ms=args.max_p95_ms, max_p99_ms=args.max_p99_ms, max_failure_ratio=args.max_failure_ratio,
        compare_batching=args.compare_batching, compare_users=args.compare_users,
        compare_instances=args.compare_instances, compare_model=args.compare_model, ort_baseline=args.ort_baseline,
        ort_batch=args.ort_batch, out_dir=args.out, server_pid=args.server_pid, max_rss_growth_pct=args.max_rss_growth,
    )


def _compare_paths(args: argparse.Namespace) -> int:
    """`ser loadtest --compare-server-side`: client-side vs server-side audio path, side by side."""
    from loadtest.gates import Thresholds
    from loadtest.path_compare import compare_paths
    from loadtest.payload import AudioSourceConfig

    cmp = compare_paths(
        repository=args.repository, url=args.url, metrics_url=args.metrics_url, window_model=args.model,
        audio_model=args.audio_model, protocol=args.protocol, users=args.compare_users, run_time_s=args.run_time,
        warmup_s=args.warmup, out_dir=args.out, progress=sys.stdout,
        audio=AudioSourceConfig(audio_dir=args.audio_dir, manifest=args.manifest, partition=args.partition,
                                generated_clips=args.generated_clips),
        thresholds=Thresholds(max_p95_ms=args.max_p95_ms, max_p99_ms=args.max_p99_ms, max_failure_ratio=args.max_failure_ratio),
    )
    print(f"report: {cmp.files['markdown']} (+ .json)")
    print(cmp.headline(), flush=True)
    return 0 if cmp.passed else 1


# --- demo -------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """`ser demo`: the end-to-end demo."""
    from ser.demo import DemoConfig, run_demo

    return run_demo(DemoConfig(workdir=args.workdir, fresh=args.fresh, protocol=args.protocol))


# --- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The full ``ser`` argument parser (tests call it directly)."""
    from export.cpu_class import CPU_CLASSES
    from export.quantize import INT8_PRESET_ORDER, QUANTIZATION_PRESETS

    parser = argparse.ArgumentParser(
        prog="ser",
        description="Speech emotion recognition behind Triton: synthesise/read corpora, train, export "
        "(ONNX fp32/int8), write Triton repositories, serve locally, classify audio.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    corpus = sub.add_parser("corpus", help="corpus utilities").add_subparsers(dest="corpus_command", required=True)
    synth = corpus.add_parser("synth", help="write a deterministic synthetic corpus in a real corpus layout")
    synth.add_argument("--layout", choices=["ravdess", "crema-d"], default="ravdess", help="on-disk layout to imitate: Actor_XX/03-01-EE-II-SS-RR-AA.wav or AudioWAV/1001_DFA_ANG_XX.wav (default: ravdess)")
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--actors", type=_positive_int, default=None, help="number of actors (default: 24 for RAVDESS, 91 for CREMA-D)")
    synth.add_argument("--sample-rate", type=_positive_int, default=None, help="Hz of the written wavs (default: 48000 RAVDESS, 16000 CREMA-D, as the real corpora)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_corpus_synth)

    tr = sub.add_parser("train", help="fine-tune Wav2Vec2ForSequenceClassification on one actor-held-out split or fold")
    _add_training_options(tr)
    tr.add_argument("--fold", type=int, default=None, help="train on fold i of --folds actor-grouped folds instead of a --test-actors split")
    tr.add_argument("--folds", type=_positive_int, default=None, help="k of --fold (default: 5)")
    tr.add_argument("--manifest", type=Path, default=None, help="reuse this split manifest (split.json)")
    tr.set_defaults(func=cmd_train)

    cv = sub.add_parser("cv", help="k-fold actor-grouped cross-validation (or --cross-corpus) with report.md, metrics, confusion matrices")
    _add_training_options(cv)
    cv.add_argument("--folds", type=_positive_int, default=None, help="k (default: 5)")
    cv.add_argument("--only", type=_csv_ints, default=None, help="run only these folds, e.g. 0,1")
    cv.add_argument("--cross-corpus", action="store_true", help="train on RAVDESS, CREMA-D and both; test on each (needs both corpora)")
    cv.add_argument("--cross-fold", type=int, default=0, help="fold of the cross-corpus table (default: 0)")
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

    ex = sub.add_parser("export", help="export a checkpoint to ONNX (fp32 + int8), parity-checked, with recipes")
    ex.add_argument("checkpoint", type=Path, help="checkpoint directory written by `ser train`, or a Hugging Face audio-classification checkpoint (folder or hub name; wav2vec2, HuBERT, WavLM, Data2VecAudio)")
    ex.add_argument("--window-s", type=float, default=None, help="Hugging Face checkpoint: window W in seconds (or give --audio-dir)")
    ex.add_argument("--out", type=Path, required=True, help="export directory (one sub-folder per variant)")
    ex.add_argument("--variants", type=_csv, default=("fp32", "int8"), help="comma-separated: fp32, int8 (CPU instances), fp16 (GPU instances) (default: fp32,int8)")
    ex.add_argument("--preset", default=None, choices=sorted(QUANTIZATION_PRESETS),
                    help="int8 quantization preset: exactly this one, or an error if it fails the agreement check "
                         f"(default: the first of {', '.join(INT8_PRESET_ORDER)} that passes)")
    ex.add_argument("--verify-cpu-class", action="append", default=[], choices=CPU_CLASSES, metavar="CLASS",
                    help="also check int8 against fp32 on this CPU class (avx2 is emulated with qemu-x86_64 on "
                         "other x86 hosts; repeatable). This host's class is always checked")
    ex.add_argument("--repository", type=Path, default=None, help="also write a Triton model repository here")
    ex.add_argument("--runtime", choices=["portable", "native"], default="portable", help="repository runtime (with --repository)")
    ex.add_argument("--report", action="store_true", help="also write the quantization report (size, latency, accuracy, agreement per variant) to OUT/report")
    ex.add_argument("--manifest", type=Path, default=None, help="report: score this split.json's test clips (default: the checkpoint's recorded split)")
    ex.add_argument("--audio-dir", type=Path, default=None, help="report: score this audio folder instead (RAVDESS/CREMA-D names give labels); Hugging Face checkpoint without --window-s: W from these clips' durations")
    ex.add_argument("--report-out", type=Path, default=None, help="report folder (default: OUT/report)")
    ex.add_argument("--report-threads", type=_positive_int, default=2, help="report: ONNX Runtime intra-op threads (default: 2)")
    ex.set_defaults(func=cmd_export)

    ip = sub.add_parser("int8-presets", help="how far each int8 preset drifts from fp32 on an exported model, per CPU class")
    ip.add_argument("export_dir", type=Path, help="an export directory with fp32/ (written by `ser export`)")
    ip.add_argument("--presets", type=_csv, default=None, help="comma-separated presets (default: all)")
    ip.add_argument("--cpu-class", action="append", default=[], choices=CPU_CLASSES, metavar="CLASS",
                    help="also run on this CPU class (avx2: emulated with qemu-x86_64); repeatable")
    ip.set_defaults(func=cmd_int8_presets)

    rp = sub.add_parser("repository", help="write a Triton model repository from an export directory")
    rp.add_argument("export_dir", type=Path)
    rp.add_argument("--out", type=Path, required=True, help="repository root to write")
    rp.add_argument("--runtime", choices=["portable", "native"], default="portable",
                    help="portable: python-backend + ONNX Runtime (any tritonserver, this machine); native: onnxruntime backend (NGC container, GPU nodes)")
    rp.add_argument("--variants", type=_csv, default=("fp32", "int8"))
    rp.add_argument("--max-batch-size", type=_positive_int, default=None, help="(default: from --bench, else 8)")
    rp.add_argument("--max-queue-delay-us", type=int, default=None, help="(default: from --bench, else 2000)")
    rp.add_argument("--bench", type=Path, default=None, help="a `ser bench --json` result: max batch, preferred batch and queue delay per variant come from it")
    rp.add_argument("--bench-shape", default=None, help="bench shape to read (default: the largest measured)")
    rp.add_argument("--intra-op-threads", type=_positive_int, default=None, help="ONNX Runtime threads per CPU instance (native default: 4)")
    rp.add_argument("--gpu-accelerator", choices=["tensorrt", "cuda"], default="tensorrt", help="native GPU models: TensorRT EP (fp16 precision, engine cache) or plain CUDA EP")
    rp.add_argument("--verify-cpu-class", action="append", default=[], choices=CPU_CLASSES, metavar="CLASS",
                    help="check the int8 model against fp32 on this CPU class too (avx2: emulated with qemu-x86_64) "
                         "and record it in its config; repeatable")
    from client.audio_service import DEFAULT_MAX_BYTES  # numpy-only module
    from client.audio_service import DEFAULT_MAX_DURATION_S as AUDIO_MAX_S

    rp.add_argument("--audio-model", action="store_true",
                    help="also write 'ser', the server-side audio model: one encoded clip (or PCM + rate) per request, "
                         "label/probabilities/timeline back; on GPU nodes it needs the image of deploy/Dockerfile")
    rp.add_argument("--audio-instances", type=_positive_int, default=4, help="--audio-model: clips decoded at once (default: 4)")
    rp.add_argument("--audio-max-bytes", type=_positive_int, default=DEFAULT_MAX_BYTES,
                    help=f"--audio-model: largest encoded clip accepted, bytes (default: {DEFAULT_MAX_BYTES})")
    rp.add_argument("--audio-max-duration-s", type=float, default=AUDIO_MAX_S,
                    help=f"--audio-model: longest clip accepted, s (default: {AUDIO_MAX_S:g})")
    rp.set_defaults(func=cmd_repository)

    sv = sub.add_parser("serve", help="run the bundled tritonserver on 127.0.0.1 until Ctrl-C")
    sv.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help=f"model repository (default: {DEFAULT_REPOSITORY})")
    sv.add_argument("--http-port", type=int, default=8000)
    sv.add_argument("--grpc-port", type=int, default=8001)
    sv.add_argument("--metrics-port", type=int, default=8002)
    sv.add_argument("--admin-key-file", type=Path, default=None,
                    help="file holding a key that the repository (load/unload), shared-memory, trace and logging APIs "
                         "then require (HTTP header 'admin-key'; gRPC 'triton-grpc-protocol-admin-key'); default: open")
    sv.add_argument("--grpc-tls-dir", type=Path, default=None,
                    help="serve gRPC over TLS with DIR/tls.crt and DIR/tls.key (mutual TLS if DIR/ca.crt exists)")
    sv.add_argument("--no-http", action="store_true",
                    help="serve gRPC and metrics only (closes the HTTP JSON path one request can crash tritonserver 2.51 through)")
    sv.add_argument("--max-restarts", type=_non_negative_int, default=5,
                    help="restart a server that died up to N times in a row, backoff 1 s doubling to 30 s; "
                         "5 minutes of serving resets the count; 0: exit with the error instead (default: 5)")
    sv.add_argument("--log", type=Path, default=None, help="write the server log here (appended across restarts)")
    sv.set_defaults(func=cmd_serve)

    pr = sub.add_parser("predict", help="classify audio files and directories through a running Triton server")
    pr.add_argument("files", nargs="+", type=Path, metavar="DIR_OR_FILE", help="audio files, or directories searched recursively (wav, flac, ogg, mp3; m4a and others with ffmpeg)")
    pr.add_argument("--url", default=None, help="server address HOST:PORT (default: 127.0.0.1:8001 for gRPC, 127.0.0.1:8000 for HTTP)")
    pr.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    pr.add_argument("--model", default=None, help="model name (default: ser_int8; ser with --server-side)")
    pr.add_argument("--server-side", action="store_true",
                    help="send each file's bytes to the server-side audio model, which decodes and windows it "
                         "(same answers; the client decodes nothing)")
    pr.add_argument("--timeout-s", type=float, default=30.0, help="time limit of each call, s (default: 30)")
    pr.add_argument("--request-timeout-s", type=float, default=None, help="per-request limit (gRPC client_timeout, HTTP network timeout); default: --timeout-s")
    pr.add_argument("--json", action="store_true", help="same as --format jsonl")
    pr.add_argument("--format", choices=["jsonl", "csv", "text"], default=None, help="default: text on stdout; csv for --output *.csv, else jsonl")
    pr.add_argument("--output", "-o", type=Path, default=None, help="write rows here (flushed per row) instead of stdout")
    pr.add_argument("--resume", action="store_true", help="keep the rows already in --output and classify only the missing files")
    pr.add_argument("--concurrency", type=_positive_int, default=4, help="files in flight (default: 4); the server's dynamic batcher merges them")
    pr.add_argument("--top-k", type=_positive_int, default=None, help="add the k best classes (Triton's classification extension)")
    pr.add_argument("--max-duration-s", type=float, default=600.0, help="refuse longer files, checked before decoding (default: 600)")
    pr.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar on stderr (default: when stderr is a terminal)")
    pr.add_argument("--retries", type=int, default=2, help="retries on UNAVAILABLE/connection errors, never on refused requests (default: 2)")
    pr.add_argument("--retry-for", type=_non_negative_float, default=None, metavar="SECONDS",
                    help="time budget on top of --retries: keep retrying a call that could not reach the server until "
                         "SECONDS after its first attempt, so a server restart does not end the job; refused requests "
                         f"still fail at once (default: {BATCH_RETRY_FOR_S:g} with a directory or --output, else 0)")
    pr.add_argument("--retry-backoff-s", type=float, default=0.1, help="first retry wait, doubled each retry, ±20%% jitter (default: 0.1)")
    pr.add_argument("--retry-max-backoff-s", type=float, default=2.0, help="cap on one retry wait (default: 2)")
    pr.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="extra request header (repeatable)")
    pr.add_argument("--tls", action="store_true", help="use TLS (gRPC ssl / HTTPS)")
    pr.add_argument("--tls-root-certs", type=Path, default=None, help="PEM CA file to trust (with --tls)")
    pr.add_argument("--tls-private-key", type=Path, default=None, help="PEM client key for mutual TLS (with --tls-cert-chain)")
    pr.add_argument("--tls-cert-chain", type=Path, default=None, help="PEM client certificate chain for mutual TLS")
    pr.add_argument("--tls-insecure", action="store_true", help="HTTP: skip the server certificate check")
    pr.set_defaults(func=cmd_predict)

    from ser.bench_options import add_bench_arguments  # no torch, numpy or onnxruntime

    add_bench_arguments(sub.add_parser(
        "bench", help="in-process benchmark: model shapes x runners (ORT fp32/int8 presets, PyTorch fp32/int8/fp16) x batch sizes"
    )).set_defaults(func=cmd_bench)

    from client.bench import add_arguments as add_client_bench_arguments  # numpy only, no server

    bc = add_client_bench_arguments(sub.add_parser(
        "bench-client", help="client benchmark: preprocessing cost vs served latency per 2.5 s clip, directory-mode clips/s"
    ))
    bc.add_argument("--repository", type=Path, default=None, help="start the local tritonserver on this repository for the run (instead of --url)")
    bc.set_defaults(func=cmd_bench_client)

    lt = sub.add_parser("loadtest", help="Locust load test: throughput, latency percentiles, executed batch size; gates set the exit code")
    target = lt.add_mutually_exclusive_group(required=True)
    target.add_argument("--repository", type=Path, help="start the local tritonserver on this repository for the run")
    target.add_argument("--url", help="target a running server HOST:PORT instead")
    lt.add_argument("--metrics-url", default=None, help="HOST:PORT of Triton's metrics endpoint (with --url; default: same host, port 8002)")
    lt.add_argument("--model", default="ser_int8")
    lt.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    lt.add_argument("--users", type=lambda t: tuple(_positive_int(x) for x in _csv(t)), default=(1, 4, 16), help="user counts to sweep (default: 1,4,16)")
    lt.add_argument("--run-time", type=_positive_int, default=10, help="seconds each run measures (default: 10)")
    lt.add_argument("--warmup", type=_non_negative_int, default=0,
                    help="seconds of load before each run measures (statistics reset, server counters read then; "
                         "warm-up failures still fail the run; default: 0)")
    lt.add_argument("--windows-per-request", type=_positive_int, default=1)
    lt.add_argument("--audio-dir", type=Path, default=None, help="audio to send (default: generated synthetic clips)")
    lt.add_argument("--manifest", type=Path, default=None, help="split manifest written by `ser train`: send its --partition clips")
    lt.add_argument("--partition", default="test")
    lt.add_argument("--generated-clips", type=_positive_int, default=8)
    lt.add_argument("--max-p95-ms", type=float, default=None, help="gate: fail (exit 1) if p95 latency exceeds this")
    lt.add_argument("--max-p99-ms", type=float, default=None, help="gate: fail if p99 latency exceeds this")
    lt.add_argument("--max-failure-ratio", type=float, default=None, help="gate: fail if failed/total exceeds this")
    lt.add_argument("--max-rss-growth", type=_non_negative_float, default=None, metavar="PCT",
                    help="gate: fail a run whose server + python-backend stub memory grows by more than PCT %% from the "
                         "warm-up's end to its end (sampled every second; needs --repository or --server-pid)")
    lt.add_argument("--server-pid", type=_positive_int, default=None,
                    help="with --url: the tritonserver process on this host, for its and its stubs' memory over the run")
    lt.add_argument("--compare-batching", action="store_true", help="also run with dynamic batching off at --compare-users (needs --repository)")
    lt.add_argument("--compare-users", type=_positive_int, default=16, help="users of every comparison run (default: 16)")
    lt.add_argument("--compare-instances", type=_positive_int, default=None, help="also run with N instances of the model (needs --repository)")
    lt.add_argument("--compare-model", default=None, help="also run another model of the repository, e.g. ser_fp32 (needs --repository)")
    lt.add_argument("--ort-baseline", action="store_true", help="also measure in-process ONNX Runtime at --ort-batch (needs --repository)")
    lt.add_argument("--ort-batch", type=_positive_int, default=8)
    lt.add_argument("--compare-server-side", action="store_true",
                    help="instead of the sweep: whole clips at --compare-users, the client decoding them (windows to --model) "
                         "against the server decoding them (bytes to --audio-model), side by side; report paths.md")
    lt.add_argument("--audio-model", default="ser", help="--compare-server-side: the server-side audio model (default: ser)")
    lt.add_argument("--out", type=Path, default=Path(".cache/loadtest"), help="report directory (default: .cache/loadtest)")
    lt.set_defaults(func=cmd_loadtest)

    dm = sub.add_parser("demo", help="the whole path on a synthetic corpus, against the real local Triton")
    dm.add_argument("--workdir", type=Path, default=Path(".cache/demo"), help="where the demo keeps its corpus, model and repository")
    dm.add_argument("--fresh", action="store_true", help="rebuild everything instead of reusing cached steps")
    dm.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    dm.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ser`` console script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
