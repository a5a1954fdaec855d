"""Directory mode: classify many files, write results incrementally, resume after an interruption.

What ``ser predict DIR_OR_FILES --concurrency N --output FILE [--resume]`` runs:

* :func:`find_audio` expands directories recursively into audio files (sorted, by suffix);
* :func:`predict_files` sends them through :meth:`SerClient.classify_many` (N in flight,
  so the server's dynamic batcher merges them) and writes one row per file, in input order,
  flushed as it is written: JSON lines or CSV;
* a file that fails (bad audio, a refused request, no answer within the time limit) is a
  row with ``ok=false``, its error type and one-line message; the summary counts it;
* losing the server (UNAVAILABLE / HTTP 503 after the retries, model gone) stops the run
  with a :class:`~client.errors.ServerUnavailableError`: every row written is complete, the
  failing file is not written, and ``resume=True`` later classifies the files missing from
  the output and those whose row records a failure (a partial last line, from a kill
  mid-write, is cut off first), so the output ends with one row per file;
* one run at a time writes an output: a second fails at once with an
  :class:`~client.errors.OutputLockedError` (:mod:`client.output_file`).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

from .audio import AUDIO_SUFFIXES, list_audio_files
from .errors import ConfigError, ModelNotFoundError, ServerUnavailableError
from .output_file import output_lock, prepare_resume
from .progress import progress_bar
from .results import ClassifyResult
from .sync_client import SerClient

#: Output formats of :func:`predict_files`.
FORMATS = ("jsonl", "csv", "text")
#: CSV columns before the one-per-label ``p_<label>`` columns (``v_<name>`` for a regression head's values).
CSV_COLUMNS = ("file", "ok", "label", "confidence", "windows", "latency_s", "top_k", "error_type", "error")


def find_audio(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named as given; directories searched recursively for :data:`client.audio.AUDIO_SUFFIXES` (sorted).

    Raises:
        ConfigError: nothing to classify (no inputs, or directories without audio).
    """
    out: list[Path] = []
    given = [Path(p) for p in inputs]
    for path in given:
        if path.is_dir():
            out.extend(list_audio_files(path))
        else:
            out.append(path)  # a missing file becomes a per-file error, not a crash
    if not out:
        raise ConfigError(f"no audio files in {[str(p) for p in given]} (looked for {', '.join(AUDIO_SUFFIXES)})")
    return list(dict.fromkeys(out))


def format_for(output: Path | None, fmt: str | None) -> str:
    """The output format: ``fmt`` if given, else ``csv`` for ``*.csv``, ``jsonl`` for other files, ``text`` for stdout."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"format={fmt!r}: expected one of {FORMATS}")
        return fmt
    if output is None:
        return "text"
    return "csv" if output.suffix.lower() == ".csv" else "jsonl"


@dataclass(frozen=True)
class PredictSummary:
    """What a :func:`predict_files` run did.

    Attributes:
        total: files asked for.
        skipped: files whose result was already in the output (``resume``).
        ok: files classified in this run.
        failed: files whose row records an error in this run.
        elapsed_s: wall time of this run's classification, seconds.
    """

    total: int
    skipped: int
    ok: int
    failed: int
    elapsed_s: float

    @property
    def clips_per_s(self) -> float:
        """Files classified per second in this run; failed files are not counted (a refusal is quick, and no throughput)."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


def row_of(result: ClassifyResult) -> dict:
    """The output row of one result (JSON-ready)."""
    if result.ok:
        pred = result.prediction
        assert pred is not None
        if pred.values:  # a regression head: named values, no label
            return {"file": result.source, "ok": True, "values": {k: round(v, 6) for k, v in pred.values.items()},
                    "windows": pred.num_windows, "latency_s": round(pred.latency_s, 6)}
        row = {"file": result.source, "ok": True, "label": pred.label, "confidence": round(pred.confidence, 6),
               "probabilities": {k: round(v, 6) for k, v in pred.probabilities.items()},
               "windows": pred.num_windows, "latency_s": round(pred.latency_s, 6)}
        if pred.top_k:
            row["top_k"] = [[lab, round(p, 6)] for lab, p in pred.top_k]
        return row
    return {"file": result.source, "ok": False, "error_type": type(result.error).__name__, "error": str(result.error)}


class _Writer:
    """Writes rows in one format, flushing each."""

    def __init__(self, stream: TextIO, fmt: str, labels: Sequence[str], *, header: bool, values: bool = False) -> None:
        self.stream, self.fmt, self.labels = stream, fmt, tuple(labels)
        self.key, self.prefix = ("values", "v_") if values else ("probabilities", "p_")
        self.columns = _csv_columns(self.labels, values=values)
        self._csv = csv.DictWriter(stream, fieldnames=self.columns, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None and header:
            self._csv.writeheader()
            stream.flush()

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(row) + "\n")
        elif self.fmt == "csv":
            assert self._csv is not None
            flat = {k: row.get(k, "") for k in CSV_COLUMNS}
            flat["top_k"] = ";".join(f"{lab}:{p}" for lab, p in row.get("top_k", []))
            flat.update({f"{self.prefix}{lab}": row.get(self.key, {}).get(lab, "") for lab in self.labels})
            self._csv.writerow(flat)
        elif row["ok"] and "values" in row:
            named = " ".join(f"{k}={v:.3f}" for k, v in row["values"].items())
            self.stream.write(f"{row['file']}\t{named}\n")
        elif row["ok"]:
            top = ", ".join(f"{k}={v:.2f}" for k, v in sorted(row["probabilities"].items(), key=lambda kv: -kv[1])[:3])
            self.stream.write(f"{row['file']}\t{row['label']}\t{row['confidence']:.3f}\t[{top}]\n")
        self.stream.flush()


def predict_files(
    client: SerClient,
    files: Sequence[str | Path],
    *,
    output: Path | None = None,
    fmt: str | None = None,
    resume: bool = False,
    concurrency: int = 4,
    top_k: int | None = None,
    progress: bool = False,
    stdout: TextIO | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> PredictSummary:
    """Classify ``files`` through an open ``client``, writing one row per file as it completes (in input order).

    Args:
        client: an open :class:`SerClient`.
        files: audio paths (expand directories with :func:`find_audio` first).
        output: file to write; None writes to ``stdout``. Without ``resume`` it is overwritten.
        fmt: ``jsonl``, ``csv`` or ``text`` (stdout only); None chooses by :func:`format_for`.
        resume: keep the results already in ``output`` and classify the other files: those
            missing, and those whose latest row records a failure (that row is replaced, so
            the output ends with one row per file, the latest result).
        concurrency: files in flight (>= 1).
        top_k: add the k best classes to each row.
        progress: show progress on stderr (:func:`client.progress.progress_bar`: a bar on a terminal, else a line per tenth).
        stdout: where rows go without ``output`` (default ``sys.stdout``).
        on_row: called with each row after it is written (tests, progress hooks).

    Returns:
        :class:`PredictSummary`.

    Raises:
        ServerUnavailableError: the server went away mid-run (rows written so far are
            complete; run again with ``resume=True``). ModelNotFoundError likewise.
        OutputLockedError: another run is writing ``output`` (:func:`client.output_file.output_lock`).
        ConfigError: bad options, or an output that cannot be resumed.
    """
    fmt = format_for(output, fmt)
    if resume and output is None:
        raise ConfigError("resume=True needs an output file (--output FILE) to resume from")
    if fmt == "text" and output is not None:
        raise ConfigError(f"format='text' is for the terminal; write {output} as jsonl or csv")
    assert client.contract is not None, "client must be open"
    run = dict(fmt=fmt, resume=resume, concurrency=concurrency, top_k=top_k, progress=progress, on_row=on_row)
    if output is None:
        return _predict(client, [str(f) for f in files], output=None, stream=stdout or sys.stdout, **run)
    with output_lock(output):
        return _predict(client, [str(f) for f in files], output=output, stream=None, **run)


def _predict(
    client: SerClient, names: list[str], *, output: Path | None, stream: TextIO | None, fmt: str, resume: bool,
    concurrency: int, top_k: int | None, progress: bool, on_row: Callable[[dict], None] | None,
) -> PredictSummary:
    """:func:`predict_files` once its options are checked and the output, if any, is locked."""
    assert client.contract is not None
    resuming = resume and output is not None and output.exists() and output.stat().st_size > 0
    if fmt == "csv" and resuming:
        _check_csv_header(output, client.contract.labels, values=client.contract.regression)
    done = prepare_resume(output, fmt, names) if resuming else set()
    todo = [n for n in names if n not in done]
    header = fmt == "csv" and not resuming
    ok = failed = 0
    t0 = time.perf_counter()
    if output is not None:
        stream = open(output, "a" if resuming else "w", encoding="utf-8", newline="")  # noqa: SIM115
    assert stream is not None
    try:
        writer = _Writer(stream, fmt, client.contract.labels, header=header, values=client.contract.regression)
        with progress_bar(total=len(names), initial=len(names) - len(todo), file=sys.stderr, unit="file",
                          disable=not progress, desc="predict") as bar:
            for result in client.classify_many(todo, concurrency=concurrency, top_k=top_k):
                if isinstance(result.error, (ServerUnavailableError, ModelNotFoundError)):
                    written = len(done) + ok + failed
                    raise type(result.error)(
                        f"{result.error}; stopped after {written} of {len(names)} files"
                        + (f" (rerun with --resume to finish {output})" if output is not None else "")
                    ) from None
                row = row_of(result)
                writer.write(row)
                if result.ok:
                    ok += 1
                else:
                    failed += 1
                    message = str(result.error)  # audio errors name their file; request errors name the server
                    named = message if message.startswith(result.source) else f"{result.source}: {message}"
                    bar.write(f"error: {named}", file=sys.stderr)
                bar.update(1)
                if on_row is not None:
                    on_row(row)
    finally:
        if output is not None:
            stream.close()
    return PredictSummary(total=len(names), skipped=len(names) - len(todo), ok=ok, failed=failed,
                          elapsed_s=time.perf_counter() - t0)


def _csv_columns(labels: Sequence[str], *, values: bool) -> tuple[str, ...]:
    """The CSV header: :data:`CSV_COLUMNS`, then ``p_<label>`` per class (``v_<name>`` per value of a regression head)."""
    return (*CSV_COLUMNS, *(f"{'v_' if values else 'p_'}{lab}" for lab in labels))


def _check_csv_header(output: Path, labels: Sequence[str], *, values: bool = False) -> None:
    with open(output, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh), [])
    expected = list(_csv_columns(labels, values=values))
    if header != expected:
        raise ConfigError(f"{output}: its CSV columns {header} differ from this model's {expected}; cannot resume into it")


__all__ = ["FORMATS", "PredictSummary", "find_audio", "format_for", "predict_files", "row_of"]
