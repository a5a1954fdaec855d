"""One load test per report folder: two runs writing the same ``--out`` would read each other's Locust files.

Every run of a sweep writes ``<out>/locust/<scenario>-u<users>_*`` and deletes an earlier run's files of the
same name before it starts, so a second ``ser loadtest`` into the same folder would delete the first one's
statistics or report them as its own. :func:`out_dir_lock` holds an exclusive ``flock`` on ``<out>/.lock``
for the whole sweep; the kernel drops it when the process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from client.errors import ConfigError

#: The lock file inside the report folder.
LOCK_NAME = ".lock"


@contextmanager
def out_dir_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold the report folder ``out_dir`` (created if missing) for this process until the block ends.

    Raises:
        ConfigError: another process holds it (its pid named when it wrote one).
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(f"out={str(folder)!r}: another load test (pid {holder}) is writing its report there; "
                              "give --out another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # releases the lock
