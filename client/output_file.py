"""Directory mode's output file: one writer at a time, and what ``resume`` keeps of an earlier run.

:func:`output_lock` holds an exclusive ``flock`` on ``<output>.lock`` beside the output
for a whole run, so a second run on the same output fails at once with an
:class:`~client.errors.OutputLockedError` instead of writing every row twice.
:func:`prepare_resume` reads what an earlier run wrote and keeps, for each file, its
latest row unless that row records a failure of a file this run classifies again: the
output then ends with one row per file, the latest result.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ConfigError, OutputLockedError


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: ``<output>.lock`` in the same folder (left in place after a run)."""
    return output.with_name(output.name + ".lock")


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``output`` for the ``with`` block; yields the lock file's path.

    The lock is ``fcntl.flock`` on :func:`lock_path`: the kernel drops it when the process ends,
    however it ends, so a killed run never leaves the output locked. The lock file stays (removing
    it would let a third run lock a new file while a second still holds the old one); it holds the
    process id of the run that last took it.

    Raises:
        OutputLockedError: another process holds the lock; names the output and that process.
    """
    import fcntl  # POSIX; here so that the client still imports where it is missing

    path = lock_path(output)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
            by = f" by process {holder}" if holder.isdigit() else ""
            raise OutputLockedError(
                f"{output}: another run is writing it (its lock {path.name} is held{by}); "
                "wait for that run to end, or write to another output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def prepare_resume(output: Path, fmt: str, files: Iterable[str]) -> set[str]:
    """Make ``output`` hold only what a resumed run keeps; return the files it need not classify again.

    Kept: for each file, its latest row, unless that row records a failure (``ok`` false) and the
    file is in ``files`` (it is classified again, and its new row appended). A partial last line
    (a run killed mid-write) is cut. The file is rewritten (a new file renamed over it) only when
    something is dropped; rows kept are not changed.

    Args:
        output: the output of an earlier run (may be missing).
        fmt: ``jsonl`` or ``csv``.
        files: the files of the run about to start.

    Returns:
        The files among ``files`` whose kept row is a result (``ok``).

    Raises:
        ConfigError: a complete line is not a row of this format.
    """
    if not output.exists():
        return set()
    data = output.read_bytes()
    cut = data.rfind(b"\n") + 1
    text = data[:cut].decode("utf-8", errors="replace")
    header, rows = _read_rows(output, fmt, text)
    wanted = set(files)
    latest = {file: i for i, (file, _, _) in enumerate(rows)}
    kept = [(file, ok, raw) for i, (file, ok, raw) in enumerate(rows) if latest[file] == i and (ok or file not in wanted)]
    if len(kept) < len(rows):
        _replace(output, header, [raw for _, _, raw in kept], fmt)
    elif cut < len(data):
        with open(output, "r+b") as fh:
            fh.truncate(cut)
    return {file for file, ok, _ in kept if ok and file in wanted}


def _read_rows(output: Path, fmt: str, text: str) -> tuple[list[str] | None, list[tuple[str, bool, object]]]:
    """``(csv header or None, [(file, ok, raw row)])``: raw is the JSON line, or the CSV row's fields."""
    rows: list[tuple[str, bool, object]] = []
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if text and (header is None or "file" not in header):
            raise ConfigError(f"{output}: not a CSV written by ser predict (no 'file' column); cannot resume")
        if header is None:
            return None, rows
        at_file, at_ok = header.index("file"), header.index("ok") if "ok" in header else None
        for fields in reader:
            if not fields:
                continue
            ok = at_ok is None or fields[at_ok] != "False"
            rows.append((fields[at_file], ok, fields))
        return header, rows
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((row["file"], row.get("ok", True) is not False, line))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"{output}: line {number} is not a JSON row with a 'file' key; cannot resume") from None
    return None, rows


def _replace(output: Path, header: list[str] | None, rows: list, fmt: str) -> None:
    """Write ``header`` and ``rows`` to a new file beside ``output`` and rename it over ``output``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            if fmt == "csv":
                writer = csv.writer(fh, lineterminator="\n")
                if header is not None:
                    writer.writerow(header)
                writer.writerows(rows)
            else:
                fh.writelines(f"{line}\n" for line in rows)
            fh.flush()
            os.fsync(fh.fileno())
        shutil.copymode(output, tmp)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = ["lock_path", "output_lock", "prepare_resume"]
