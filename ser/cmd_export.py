"""``ser export``, ``ser int8-presets`` and ``ser repository``: from a checkpoint to a Triton repository.

Their options and handlers; the handlers import :mod:`export` (and torch, onnx) when run.
Registering the options imports only the preset and CPU-class names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ser.arg_types import csv_list, non_negative_int, positive_float, positive_int


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
    from client.contract import default_hop_samples
    from export.gate_windows import held_out_windows

    recipe = ExportRecord.read(fp32 / "recipe.json")
    window = recipe.contract.window_samples
    held_out = held_out_windows(recipe.source_checkpoint, window_samples=window,
                                hop_samples=recipe.contract.hop_samples or default_hop_samples(window))
    source = "the checkpoint's held-out clips" if held_out is not None else "seeded"
    print(f"  windows: {source}", file=sys.stderr)
    rows = survey_presets(fp32 / "model.onnx", window_samples=window, presets=args.presets or _all_presets(),
                          classes=args.cpu_class, progress=lambda what: print(f"  checking {what}", file=sys.stderr),
                          batches=None if held_out is None else held_out.batches,
                          clips=None if held_out is None else held_out.clips)
    print(survey_markdown(rows, tolerance=ParityConfig().prob_atol))
    return 0


def _all_presets() -> tuple[str, ...]:
    from export.quantize import QUANTIZATION_PRESETS

    return tuple(QUANTIZATION_PRESETS)


def cmd_repository(args: argparse.Namespace) -> int:
    """`ser repository`: write a Triton model repository."""
    from client.errors import ConfigError
    from export.repository import write_repository

    for flag, needs, given, wanted in (("--audio-vad", "--audio-model", args.audio_vad, args.audio_model),
                                       ("--stream-no-vad", "--stream-model", args.stream_no_vad, args.stream_model)):
        if given and not wanted:  # an option of a model not written would be dropped without a word
            raise ConfigError(f"{flag} sets up the model {needs} writes: add {needs}")
    audio = None
    if args.audio_model:
        from client.audio_service import AudioLimits, SpeechGate
        from client.vad import VAD_OFF, VAD_SILERO
        from export.audio_repository import AudioModelConfig

        audio = AudioModelConfig(instances=args.audio_instances, limits=AudioLimits(
            max_bytes=args.audio_max_bytes, max_duration_s=args.audio_max_duration_s),
            gate=SpeechGate(vad=VAD_SILERO if args.audio_vad else VAD_OFF))
    stream = None
    if args.stream_model:
        from client.stream_service import StreamSettings
        from export.stream_repository import StreamModelConfig

        stream = StreamModelConfig(instances=args.stream_instances, settings=StreamSettings(
            hop_ms=args.stream_hop_ms or 0, max_calls=args.stream_max_calls, max_call_s=args.stream_max_call_s,
            idle_timeout_s=args.stream_idle_timeout_s, vad="off" if args.stream_no_vad else "silero"))
    written = write_repository(
        args.export_dir,
        args.out,
        runtime=args.runtime,
        variants=args.variants,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        intra_op_threads=args.intra_op_threads,
        placement=args.placement,
        gpu_accelerator=args.gpu_accelerator,
        bench=args.bench,
        bench_shape=args.bench_shape,
        verify_cpu_classes=args.verify_cpu_class,
        audio=audio,
        stream=stream,
    )
    for path in written:
        print(f"wrote {path}")
    return 0


def add_parsers(sub) -> None:
    """Add ``export``, ``int8-presets`` and ``repository`` to ``sub`` (the ``ser`` subcommands)."""
    from export.cpu_class import CPU_CLASSES
    from export.quantize import INT8_PRESET_ORDER, QUANTIZATION_PRESETS

    ex = sub.add_parser("export", help="export a checkpoint to ONNX (fp32 + int8), parity-checked, with recipes")
    ex.add_argument("checkpoint", type=Path, help="checkpoint directory written by `ser train`, or a Hugging Face audio-classification checkpoint (folder or hub name; wav2vec2, HuBERT, WavLM, Data2VecAudio)")
    ex.add_argument("--window-s", type=positive_float, default=None, help="Hugging Face checkpoint: window W in seconds (or give --audio-dir)")
    ex.add_argument("--out", type=Path, required=True, help="export directory (one sub-folder per variant)")
    ex.add_argument("--variants", type=csv_list, default=("fp32", "int8"), help="comma-separated: fp32, int8 (CPU instances), fp16 (GPU instances) (default: fp32,int8)")
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
    ex.add_argument("--report-threads", type=positive_int, default=2, help="report: ONNX Runtime intra-op threads (default: 2)")
    ex.set_defaults(func=cmd_export)

    ip = sub.add_parser("int8-presets", help="how far each int8 preset drifts from fp32 on an exported model, per CPU class")
    ip.add_argument("export_dir", type=Path, help="an export directory with fp32/ (written by `ser export`)")
    ip.add_argument("--presets", type=csv_list, default=None, help="comma-separated presets (default: all)")
    ip.add_argument("--cpu-class", action="append", default=[], choices=CPU_CLASSES, metavar="CLASS",
                    help="also run on this CPU class (avx2: emulated with qemu-x86_64); repeatable")
    ip.set_defaults(func=cmd_int8_presets)

    rp = sub.add_parser("repository", help="write a Triton model repository from an export directory")
    rp.add_argument("export_dir", type=Path)
    rp.add_argument("--out", type=Path, required=True, help="repository root to write")
    rp.add_argument("--runtime", choices=["portable", "native"], default="portable",
                    help="portable: python-backend + ONNX Runtime (any tritonserver, this machine); native: onnxruntime backend (NGC container, GPU nodes)")
    rp.add_argument("--variants", type=csv_list, default=("fp32", "int8"))
    rp.add_argument("--max-batch-size", type=positive_int, default=None, help="(default: from --bench, else 8)")
    rp.add_argument("--max-queue-delay-us", type=non_negative_int, default=None, help="(default: from --bench, else 2000)")
    rp.add_argument("--bench", type=Path, default=None, help="a `ser bench --json` result: max batch, preferred batch and queue delay per variant come from it")
    rp.add_argument("--bench-shape", default=None, help="bench shape to read (default: the largest measured)")
    rp.add_argument("--intra-op-threads", type=positive_int, default=None,
                    help="ONNX Runtime threads per CPU instance (default: none written: native models share the server's "
                         "pool, sized from the node's CPUs by `ser serve` and the deploy files)")
    rp.add_argument("--placement", choices=["auto", "gpu", "cpu"], default="auto",
                    help="native fp32/fp16 instances: auto (the node's GPU when it has one, else CPU: starts on both), "
                         "gpu (GPU only) or cpu; int8 is always CPU (default: auto)")
    rp.add_argument("--gpu-accelerator", choices=["tensorrt", "cuda"], default="tensorrt", help="native GPU models: TensorRT EP (fp16 precision, engine cache) or plain CUDA EP")
    rp.add_argument("--verify-cpu-class", action="append", default=[], choices=CPU_CLASSES, metavar="CLASS",
                    help="check the int8 model against fp32 on this CPU class too (avx2: emulated with qemu-x86_64) "
                         "and record it in its config; repeatable")
    from client.audio_service import DEFAULT_MAX_BYTES  # numpy-only module
    from client.audio_service import DEFAULT_MAX_DURATION_S as AUDIO_MAX_S

    rp.add_argument("--audio-model", action="store_true",
                    help="also write 'ser', the server-side audio model: one encoded clip (or PCM + rate) per request, "
                         "label/probabilities/timeline back; on GPU nodes it needs the image of deploy/Dockerfile")
    rp.add_argument("--audio-instances", type=positive_int, default=4, help="--audio-model: clips decoded at once (default: 4)")
    rp.add_argument("--audio-max-bytes", type=positive_int, default=DEFAULT_MAX_BYTES,
                    help=f"--audio-model: largest encoded clip accepted, bytes (default: {DEFAULT_MAX_BYTES})")
    rp.add_argument("--audio-max-duration-s", type=positive_float, default=AUDIO_MAX_S,
                    help=f"--audio-model: longest clip accepted, s (default: {AUDIO_MAX_S:g})")
    from client.vad import DEFAULT_VAD_MIN_SPEECH_MS

    rp.add_argument("--audio-vad", action="store_true",
                    help="--audio-model: voice-activity gate: silero-vad (copied from the installed silero-vad "
                         f"package) runs over each clip and only windows with {DEFAULT_VAD_MIN_SPEECH_MS} ms of speech "
                         "are classified; the scores aggregate those, the timeline marks the others no_speech, a clip "
                         "without one is refused (NoSpeechError); needs a 16 kHz model (default: off, every window)")
    from client.stream_service import StreamSettings

    live = StreamSettings()
    rp.add_argument("--stream-model", action="store_true",
                    help="also write 'ser-stream', the streaming model for live calls: PCM chunks over one gRPC "
                         "stream per call (sequence batching), an update every hop, segments at END (docs/live-calls.md)")
    rp.add_argument("--stream-instances", type=positive_int, default=1,
                    help="--stream-model: instances; each holds --stream-max-calls calls (default: 1)")
    rp.add_argument("--stream-hop-ms", type=positive_int, default=None,
                    help="--stream-model: time between updates, ms (default: the window model's hop)")
    rp.add_argument("--stream-max-calls", type=positive_int, default=live.max_calls,
                    help=f"--stream-model: concurrent calls per instance (default: {live.max_calls})")
    rp.add_argument("--stream-max-call-s", type=positive_float, default=live.max_call_s,
                    help=f"--stream-model: longest call, s of audio (default: {live.max_call_s:g})")
    rp.add_argument("--stream-idle-timeout-s", type=positive_float, default=live.idle_timeout_s,
                    help=f"--stream-model: a call silent for this long is dropped, s (default: {live.idle_timeout_s:g})")
    rp.add_argument("--stream-no-vad", action="store_true",
                    help="--stream-model: no voice-activity gate (every window goes to the emotion model; "
                         "silero-vad is not needed)")
    rp.set_defaults(func=cmd_repository)
