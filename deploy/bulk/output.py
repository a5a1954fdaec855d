"""The output folder of a bulk job: what is already done there, and its manifest.

The folder holds Parquet parts (one row per file, :func:`deploy.bulk.stages.schema`) written by
every run into it, and ``batch.json`` (the labels in the order of ``probabilities``, the model, the
servers, the counts of the last run). A re-run reads the ``source`` column of the parts and scores
only the files missing from them, so each file is written once. A part that cannot be read (a run
killed while it wrote it) is removed first: its files are scored again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from client.errors import ConfigError

MANIFEST = "batch.json"


def _filesystem(out: str):
    from pyarrow import fs as pafs

    if "://" in out:
        from .sources import filesystem_for

        return filesystem_for(out)
    from pathlib import Path

    return pafs.LocalFileSystem(), str(Path(out).resolve())


def output_path(out: str) -> str:
    """``out`` as Ray writes to it: a URI as given, a local folder made absolute (every worker sees the same path)."""
    if "://" in out:
        return out
    from pathlib import Path

    return str(Path(out).resolve())


def done_sources(out: str) -> set[str]:
    """The sources that have a row in ``out``'s Parquet parts; parts that cannot be read are removed.

    Raises:
        ConfigError: ``out`` is a file, not a folder.
    """
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    filesystem, root = _filesystem(out)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return set()
    if info.type != pafs.FileType.Directory:
        raise ConfigError(f"--out {out}: not a folder")
    done: set[str] = set()
    for entry in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        if entry.type != pafs.FileType.File or not entry.path.endswith(".parquet"):
            continue
        try:
            table = pq.read_table(entry.path, columns=["source"], filesystem=filesystem)
        except (OSError, ValueError):  # cut short by a kill: no footer
            filesystem.delete_file(entry.path)
            continue
        done.update(table.column("source").to_pylist())
    return done


def read_rows(out: str) -> list[dict[str, Any]]:
    """Every row of ``out``'s parts (for counting and for tests; a large archive reads them with its own tools)."""
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    filesystem, root = _filesystem(out)
    rows: list[dict[str, Any]] = []
    for entry in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        if entry.type == pafs.FileType.File and entry.path.endswith(".parquet"):
            rows.extend(pq.read_table(entry.path, filesystem=filesystem).to_pylist())
    return rows


@dataclass(frozen=True)
class BatchSummary:
    """What a ``ser batch`` run did.

    Attributes:
        total: files found (in this shard).
        skipped: files already in the output (resume).
        scored: files this run wrote a row for.
        failed: of those, rows with an error.
        actors: clients in the pool.
        elapsed_s: wall time of the run on the cluster (actors started, files read, scored, written), seconds.
        startup_s: seconds to start (or reach) the Ray cluster, before :attr:`elapsed_s`.
    """

    total: int
    skipped: int
    scored: int
    failed: int
    actors: int
    elapsed_s: float
    startup_s: float = 0.0

    @property
    def files_per_s(self) -> float:
        """Files scored per second of :attr:`elapsed_s`."""
        return self.scored / self.elapsed_s if self.elapsed_s > 0 else 0.0


def write_manifest(out: str, *, labels: tuple[str, ...], model: str, url: str, summary: BatchSummary | None) -> None:
    """Write ``batch.json``: the labels (the order of ``probabilities``), the model, the servers, the last run's counts."""
    filesystem, root = _filesystem(out)
    filesystem.create_dir(root, recursive=True)
    body: dict[str, Any] = {"labels": list(labels), "model": model, "url": url}
    if summary is not None:
        body["last_run"] = {**asdict(summary), "files_per_s": round(summary.files_per_s, 3)}
    with filesystem.open_output_stream(f"{root}/{MANIFEST}") as stream:
        stream.write(json.dumps(body, indent=2).encode())


__all__ = ["MANIFEST", "BatchSummary", "done_sources", "output_path", "read_rows", "write_manifest"]
