"""The quantization report (``ser export ... --report``): every variant, side by side, on real clips.

For each variant of an export directory (``<export>/<variant>/{model.onnx, recipe.json}``)
and one set of clips (a fold's test split from its ``split.json``, or an audio folder):

* the file it measured: path, sha256 (checked against the recipe), size and size vs fp32;
* in-process ONNX Runtime latency at batch 1 and 8 (median and p95 over ``repeat``
  timed calls after ``warmup``, pinned intra-op threads), fed real windows of the clips;
* clip-level accuracy and weighted F1 (labelled clips), label agreement with fp32 and
  max |Δprobability| vs fp32 (every clip);
* a confusion matrix per variant (JSON + PNG, :func:`training.report.write_confusion`).

Clips are scored exactly as serving scores them (:func:`training.evaluate.score_clips`:
:func:`client.audio.make_windows` + :func:`client.audio.aggregate`), so nothing here
re-implements windowing. Every figure of a line comes from the file that line names;
``report.json`` holds the raw numbers, ``report.md`` the table.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from client.audio import AUDIO_SUFFIXES, list_audio_files
from client.contract import default_hop_samples
from client.errors import ConfigError
from export.errors import ExportError
from training.errors import CorpusError

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_FORMAT = 1
#: Variants in report order (others found in the export directory follow, sorted).
VARIANT_ORDER = ("fp32", "int8", "fp16")


@dataclass(frozen=True)
class ReportConfig:
    """What the report measures.

    Attributes:
        batch_sizes: latency batch sizes (windows per call).
        warmup: untimed calls per (variant, batch).
        repeat: timed calls per (variant, batch).
        threads: ONNX Runtime intra-op threads for latency and scoring (pinned; >= 1).
        variants: which variants to report (``None``: every one in the export; fp32 is required).
    """

    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 2
    repeat: int = 10
    threads: int = 2
    variants: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch_sizes={list(self.batch_sizes)}: need at least one, each >= 1")
        if self.warmup < 0 or self.repeat < 1:
            raise ConfigError(f"warmup={self.warmup}, repeat={self.repeat}: need warmup >= 0 and repeat >= 1")
        if self.threads < 1:
            raise ConfigError(f"threads={self.threads}: must be >= 1 (pinned, so figures are comparable)")
        if self.variants is not None:
            object.__setattr__(self, "variants", tuple(self.variants))
            if "fp32" not in self.variants:
                raise ConfigError(f"variants={list(self.variants)}: fp32 must be included (every variant is compared with it)")


@dataclass(frozen=True)
class VariantLine:
    """One variant's line of the report.

    Attributes:
        variant: ``fp32``, ``int8``, ``fp16``.
        preset: quantization preset from the recipe (``None`` for fp32/fp16).
        model_path: the ``model.onnx`` measured.
        model_sha256: its sha256 (equal to the recipe's).
        size_bytes: its size.
        size_vs_fp32: ``size_bytes`` / fp32's.
        latency_ms: ``{batch: {"median": ms, "p95": ms, "runs": n}}``.
        accuracy: clip accuracy (``None`` for unlabelled clips).
        weighted_f1: support-weighted F1 (``None`` for unlabelled clips).
        label_agreement: fraction of clips whose top-1 equals fp32's.
        max_abs_prob_diff: max |Δprobability| vs fp32 over clips and classes.
        confusion: ``{"json", "counts", "normalized"}`` file names (labelled clips only).
    """

    variant: str
    preset: str | None
    model_path: str
    model_sha256: str
    size_bytes: int
    size_vs_fp32: float
    latency_ms: Mapping[int, Mapping[str, float]]
    accuracy: float | None
    weighted_f1: float | None
    label_agreement: float
    max_abs_prob_diff: float
    confusion: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (batch keys as strings)."""
        d = asdict(self)
        d["latency_ms"] = {str(b): dict(v) for b, v in self.latency_ms.items()}
        d["confusion"] = dict(self.confusion)
        return d


@dataclass(frozen=True)
class QuantReport:
    """The whole report.

    Attributes:
        export_dir: the export directory measured.
        data: the manifest or audio folder the clips came from.
        partition: manifest partition (``""`` for an audio folder).
        clips: clips scored.
        labelled: whether accuracy/F1 could be computed.
        labels: the model's classes.
        threads: ONNX Runtime intra-op threads.
        lines: one :class:`VariantLine` per variant, fp32 first.
        environment: host, load average and versions at measurement time.
    """

    export_dir: str
    data: str
    partition: str
    clips: int
    labelled: bool
    labels: tuple[str, ...]
    threads: int
    lines: tuple[VariantLine, ...]
    environment: Mapping[str, Any]

    def line(self, variant: str) -> VariantLine:
        """The line of ``variant`` (KeyError if not reported)."""
        for line in self.lines:
            if line.variant == variant:
                return line
        raise KeyError(variant)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "format": REPORT_FORMAT,
            "export_dir": self.export_dir,
            "data": self.data,
            "partition": self.partition,
            "clips": self.clips,
            "labelled": self.labelled,
            "labels": list(self.labels),
            "threads": self.threads,
            "environment": dict(self.environment),
            "variants": [line.to_json() for line in self.lines],
        }

    def to_markdown(self) -> str:
        """The report as a markdown document (one table + the files it names)."""
        batches = sorted({b for line in self.lines for b in line.latency_ms})
        source = f"{self.data} ({self.partition} partition)" if self.partition else self.data
        out = [
            "# Quantization report",
            "",
            f"- export: `{self.export_dir}`",
            f"- clips: {self.clips} from `{source}`" + ("" if self.labelled else " (unlabelled: no accuracy)"),
            f"- latency: in-process ONNX Runtime (CPU), {self.threads} intra-op threads, real windows; "
            f"load average at start {self.environment.get('loadavg_start')}, at end {self.environment.get('loadavg_end')}",
            "- agreement and max |Δp|: clip-level (windows aggregated as served), against fp32",
            "",
        ]
        head = ["variant", "preset", "size MB", "x fp32"]
        head += [f"b{b} median / p95 ms" for b in batches]
        head += ["accuracy", "weighted F1", "agreement", "max abs dp"]
        out += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]

        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.1f}%"

        for line in self.lines:
            row = [line.variant, line.preset or "-", f"{line.size_bytes / 1e6:.2f}", f"{line.size_vs_fp32:.3f}"]
            for b in batches:
                lat = line.latency_ms.get(b)
                row.append(f"{lat['median']:.1f} / {lat['p95']:.1f}" if lat else "-")
            row += [pct(line.accuracy), pct(line.weighted_f1), f"{line.label_agreement:.3f}", f"{line.max_abs_prob_diff:.2e}"]
            out.append("| " + " | ".join(row) + " |")
        out += ["", "Files measured:", ""]
        for line in self.lines:
            conf = f"; confusion `{line.confusion['counts']}`" if line.confusion else ""
            out.append(f"- {line.variant}: `{line.model_path}` sha256 `{line.model_sha256}`{conf}")
        if any(line.variant == "fp16" for line in self.lines):
            out += ["", "fp16 is the GPU variant: its CPU latency here (ONNX Runtime has few fp16 CPU kernels) "
                        "says nothing about GPU speed; its accuracy and agreement figures hold."]
        return "\n".join(out) + "\n"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``report.json`` and ``report.md`` into ``out_dir``; returns their paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"json": out_dir / REPORT_JSON, "markdown": out_dir / REPORT_MD}
        paths["json"].write_text(json.dumps(self.to_json(), indent=1) + "\n")
        paths["markdown"].write_text(self.to_markdown())
        return paths


def _variants(export_dir: Path, wanted: Sequence[str] | None) -> list[str]:
    from export.recipe import MODEL_FILENAME, RECIPE_FILENAME

    found = sorted(p.name for p in export_dir.iterdir() if (p / MODEL_FILENAME).is_file() and (p / RECIPE_FILENAME).is_file())
    if wanted is not None:
        missing = [v for v in wanted if v not in found]
        if missing:
            raise ExportError(f"{export_dir}: no exported {missing} (model.onnx + recipe.json); available: {found}")
        found = list(wanted)
    if "fp32" not in found:
        raise ExportError(f"{export_dir}: no fp32 variant to compare with (found {found}); export with fp32 in --variants")
    order = {v: i for i, v in enumerate(VARIANT_ORDER)}
    return sorted(found, key=lambda v: (order.get(v, len(order)), v))


def _audio_files(audio_dir: Path) -> list[Path]:
    """The audio files under ``audio_dir`` (CorpusError: no such folder, or no audio in it)."""
    if not audio_dir.is_dir():
        raise CorpusError(f"{audio_dir}: no such audio folder")
    files = list_audio_files(audio_dir)
    if not files:
        raise CorpusError(f"{audio_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return files


def check_data_source(*, manifest: str | Path | None = None, audio_dir: str | Path | None = None,
                      partition: str = "test", roots=None) -> None:
    """Refuse clips the report cannot score, cheaply (no model, no decoding).

    ``ser export --report`` calls this before exporting, so a wrong ``--manifest`` or
    ``--audio-dir`` neither costs an export nor replaces the export already in ``--out``.

    Args:
        manifest: a fold's ``split.json`` (or ``None``).
        audio_dir: an audio folder (or ``None``).
        partition: manifest partition.
        roots: corpus root(s) for the manifest (default: the recorded ones).

    Raises:
        ConfigError: both sources given; unknown partition.
        CorpusError: missing or malformed manifest, empty partition; missing audio folder or one without audio.
    """
    if manifest is not None and audio_dir is not None:
        raise ConfigError("manifest and audio_dir: give one data source, not both")
    if manifest is not None:
        from training.folds import PARTITIONS, read_manifest

        if partition not in PARTITIONS:
            raise ConfigError(f"partition={partition!r}: expected one of {list(PARTITIONS)}")
        if not getattr(read_manifest(manifest, root=roots), partition):
            raise CorpusError(f"{manifest}: partition {partition!r} holds no clips")
    if audio_dir is not None:
        _audio_files(Path(audio_dir))


def _clips(*, manifest: Path | None, audio_dir: Path | None, partition: str, roots, labels: Sequence[str]):
    """``(clips, labelled, description)``: Clip objects of a manifest partition or an audio folder."""
    from training.corpus import Clip, read_corpus

    if manifest is not None:
        from training.folds import PARTITIONS, read_manifest

        if partition not in PARTITIONS:
            raise ConfigError(f"partition={partition!r}: expected one of {list(PARTITIONS)}")
        clips = list(getattr(read_manifest(manifest, root=roots), partition))
        unknown = sorted({c.label for c in clips} - set(labels))
        if unknown:
            raise CorpusError(f"{manifest}: {partition} clips labelled {unknown}, which the model does not know ({list(labels)})")
        return clips, True, str(manifest)
    assert audio_dir is not None
    files = _audio_files(audio_dir)
    import warnings

    for layout in ("ravdess", "crema-d"):  # probing: files named for the other layout are skipped with a warning
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clips = [c for c in read_corpus(audio_dir, layout=layout) if c.label in labels]
        except (CorpusError, ConfigError):
            continue
        if clips:
            return clips, True, str(audio_dir)
    clips = [Clip(path=p, actor=0, label=labels[0], statement=0, repetition=0, intensity=0, corpus="folder") for p in files]
    return clips, False, str(audio_dir)


def _latency(path: Path, windows: np.ndarray, counts: np.ndarray, config: ReportConfig) -> dict[int, dict[str, float]]:
    """Median/p95 ms of ``session.run`` on real windows, per batch size, with the served session options."""
    from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM
    from client.onnx_session import open_session
    from client.timing import percentile, time_calls

    session = open_session(path, intra_op_threads=config.threads)
    out = {}
    for b in config.batch_sizes:
        idx = np.arange(b) % len(windows)
        feeds = {INPUT_WAVEFORM: np.ascontiguousarray(windows[idx]), INPUT_NUM_SAMPLES: counts[idx].reshape(-1, 1).astype(np.int64)}
        times = time_calls(lambda feeds=feeds: session.run(None, feeds), warmup=config.warmup, runs=config.repeat)
        out[b] = {"median": percentile(times, 50), "p95": percentile(times, 95), "runs": len(times)}
    return out


def quantization_report(
    export_dir: str | Path,
    *,
    manifest: str | Path | None = None,
    audio_dir: str | Path | None = None,
    partition: str = "test",
    roots=None,
    out_dir: str | Path | None = None,
    config: ReportConfig = ReportConfig(),
) -> QuantReport:
    """Measure every variant of an export on one set of clips (see the module docstring).

    Args:
        export_dir: written by :func:`export.pipeline.export_checkpoint` (fp32 required).
        manifest: a fold's ``split.json``; default: the one recorded in the source
            checkpoint's ``ser_checkpoint.json`` (``extra.split_manifest``) when neither
            ``manifest`` nor ``audio_dir`` is given.
        audio_dir: an audio folder instead (RAVDESS/CREMA-D names give labels;
            other files are scored unlabelled: agreement and Δp only).
        partition: manifest partition.
        roots: corpus root(s) for the manifest (default: the recorded ones).
        out_dir: where ``report.{json,md}`` and the confusion matrices go (default ``<export_dir>/report``).
        config: latency batches, repeats, threads, variants.

    Returns:
        The :class:`QuantReport` (also written to ``out_dir``).

    Raises:
        ConfigError: both or neither data sources and no recorded manifest; bad options.
        ExportError: missing export/variant, or a model that is not its recipe's.
        CorpusError: missing manifest/folder, no clips, labels the model does not know.
    """
    from client.audio import make_windows
    from export.recipe import MODEL_FILENAME, RECIPE_FILENAME, ExportRecord, sha256_file
    from training.data import load_clips
    from training.evaluate import onnx_window_scorer, score_clips
    from training.report import write_confusion

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir}: no such export directory (run `ser export` first)")
    if manifest is not None and audio_dir is not None:
        raise ConfigError("manifest and audio_dir: give one data source, not both")
    variants = _variants(export_dir, config.variants)
    recipes = {v: ExportRecord.read(export_dir / v / RECIPE_FILENAME) for v in variants}
    contract = recipes["fp32"].contract
    for v, r in recipes.items():
        if r.contract.labels != contract.labels or r.contract.window_samples != contract.window_samples:
            raise ExportError(f"{export_dir / v}: labels/window differ from fp32's: not one export")
    if manifest is None and audio_dir is None:
        info_path = Path(recipes["fp32"].source_checkpoint) / "ser_checkpoint.json"
        recorded = json.loads(info_path.read_text()).get("extra", {}).get("split_manifest") if info_path.is_file() else None
        if not recorded:
            raise ConfigError(f"{export_dir}: no clips to score: pass a manifest (split.json) or an audio folder "
                              f"({info_path} records no split_manifest)")
        manifest = recorded
    clips, labelled, data = _clips(manifest=Path(manifest) if manifest is not None else None,
                                   audio_dir=Path(audio_dir) if audio_dir is not None else None,
                                   partition=partition, roots=roots, labels=contract.labels)
    if not clips:
        raise CorpusError(f"{data}: partition {partition!r} holds no clips")
    loaded = load_clips(clips, labels=contract.labels, sample_rate=contract.sample_rate)
    W = contract.window_samples
    hop = contract.hop_samples or default_hop_samples(W)
    wins = [make_windows(lc.audio, window_samples=W, hop_samples=hop) for lc in loaded]
    windows = np.concatenate([w.waveforms for w in wins]).astype(np.float32)
    counts = np.concatenate([w.num_samples for w in wins]).astype(np.int64)

    out_dir = Path(out_dir) if out_dir is not None else export_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    measured: dict[str, dict[str, Any]] = {}
    for v in variants:
        path = export_dir / v / MODEL_FILENAME
        sha = sha256_file(path)
        if sha != recipes[v].model_sha256:
            raise ExportError(f"{path}: sha256 {sha[:12]}… does not match its recipe ({recipes[v].model_sha256[:12]}…)")
        scores = score_clips(onnx_window_scorer(path, threads=config.threads), loaded, labels=contract.labels,
                             window_samples=W, hop_samples=hop)
        measured[v] = {"path": path, "sha": sha, "scores": scores, "latency": _latency(path, windows, counts, config)}
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    ref = measured["fp32"]["scores"].probabilities
    fp32_bytes = (export_dir / "fp32" / MODEL_FILENAME).stat().st_size
    lines = []
    for v in variants:
        m = measured[v]
        scores = m["scores"]
        confusion: dict[str, str] = {}
        accuracy = weighted_f1 = None
        if labelled:
            metrics = scores.metrics()
            accuracy, weighted_f1 = float(metrics.accuracy), float(metrics.weighted_f1)
            paths = write_confusion(metrics, out_dir / f"confusion_{v}", title=f"{v}: {len(loaded)} clips")
            confusion = {k: p.name for k, p in paths.items()}
        lines.append(VariantLine(
            variant=v,
            preset=recipes[v].preset,
            model_path=str(m["path"]),
            model_sha256=m["sha"],
            size_bytes=m["path"].stat().st_size,
            size_vs_fp32=m["path"].stat().st_size / fp32_bytes,
            latency_ms=m["latency"],
            accuracy=accuracy,
            weighted_f1=weighted_f1,
            label_agreement=float((scores.predictions == ref.argmax(axis=1)).mean()),
            max_abs_prob_diff=float(np.abs(scores.probabilities - ref).max()),
            confusion=confusion,
        ))
    import platform

    from export.versions import installed_versions

    report = QuantReport(
        export_dir=str(export_dir),
        data=data,
        partition=partition if manifest is not None else "",
        clips=len(loaded),
        labelled=labelled,
        labels=tuple(contract.labels),
        threads=config.threads,
        lines=tuple(lines),
        environment={"host": platform.node(), "cpus": os.cpu_count(), "onnxruntime": installed_versions(("onnxruntime",), missing="not installed")["onnxruntime"],
                     "loadavg_start": None if load_start is None else round(load_start, 2),
                     "loadavg_end": None if load_end is None else round(load_end, 2)},
    )
    report.write(out_dir)
    return report
