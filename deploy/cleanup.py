"""What a tritonserver's python backend can leave behind, and removing it.

Each model instance of the python backend runs in a stub process and talks to the
server through ``/dev/shm`` regions named with a prefix (``--backend-config=python,
shm-region-prefix-name=...``). A server that is killed can leave both behind. Given
the prefix one server was started with, this module finds its stubs (by their command
line in ``/proc``) and its regions, and removes them; :meth:`deploy.local_triton.LocalTriton.stop`
calls it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from deploy.triton_binary import STUB_NAME

#: Where the python backend puts its shared-memory regions.
SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class Stub:
    """One python-backend stub process: one instance of one model.

    Attributes:
        pid: the stub's process id.
        model: the model's name (the folder above ``<version>/model.py`` on its command line).
        instance: the instance's name, e.g. ``ser_int8_0_0`` (a reload starts a new stub under the same name).
    """

    pid: int
    model: str
    instance: str


def stubs_of(prefix: str) -> list[Stub]:
    """The python-backend stubs whose command line carries the shm ``prefix``.

    The stub's arguments are ``model.py``'s path, the shm region, two sizes, the server's
    PID, the backend folder, an IPC handle and the instance name (tritonserver 2.51).
    """
    stubs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if STUB_NAME.encode() in cmdline and prefix.encode() in cmdline:
            args = cmdline.decode(errors="replace").split("\0")
            model = Path(args[1]).parent.parent.name if len(args) > 1 else ""
            stubs.append(Stub(int(entry.name), model, args[8] if len(args) > 8 else ""))
    return stubs


def pids_of_stubs(prefix: str) -> list[int]:
    """PIDs of python-backend stubs whose command line carries the shm ``prefix``."""
    return [stub.pid for stub in stubs_of(prefix)]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a zombie is as good as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is as good as gone


def kill_stubs(pids: Iterable[int], *, wait_s: float = 5.0) -> None:
    """SIGKILL each live process of ``pids``, then wait up to ``wait_s`` seconds for all to be gone."""
    stubs = set(pids)
    for pid in stubs:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while any(pid_alive(p) for p in stubs) and time.monotonic() < deadline:
        time.sleep(0.05)


def shm_regions(prefix: str) -> list[Path]:
    """The python-backend shared-memory regions under :data:`SHM_DIR` named with ``prefix``."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(SHM_DIR.glob(f"{prefix}*"))


#: The prefix :class:`deploy.local_triton.LocalTriton` names its regions with: ``ser_<owner pid>_<8 hex>_``.
_OWNED_PREFIX = re.compile(r"^(ser_(\d+)_[0-9a-f]{8}_)")


def remove_orphaned_regions() -> list[str]:
    """Remove the regions of local servers whose owner died without stopping them; returns the prefixes removed.

    A server SIGKILLed with its owner (``ser serve`` killed: :mod:`deploy.spawn`) cannot unlink
    its regions, and ``/dev/shm`` is memory. A prefix counts as orphaned when its owner
    process is gone and no live process (a server or a stub) names it on its command line.
    """
    prefixes: dict[str, int] = {}
    for region in shm_regions("ser_"):
        m = _OWNED_PREFIX.match(region.name)
        if m and not pid_alive(int(m.group(2))):
            prefixes[m.group(1)] = int(m.group(2))
    if not prefixes:
        return []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                for prefix in [p for p in prefixes if p.encode() in cmdline]:
                    del prefixes[prefix]
    for prefix in prefixes:
        remove_shm_regions(prefix)
    return sorted(prefixes)


def remove_shm_regions(prefix: str) -> None:
    """Delete the regions of :func:`shm_regions` (ones already gone are fine)."""
    for region in shm_regions(prefix):
        with contextlib.suppress(FileNotFoundError):
            region.unlink()
