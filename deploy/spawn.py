"""Start a child process that cannot outlive this one.

A ``tritonserver`` left running by a ``ser serve`` that was SIGKILLed (or whose terminal
closed) keeps answering on its ports and holding its models. :func:`spawn_tied` asks the
kernel to SIGKILL the child when its parent dies (``prctl(PR_SET_PDEATHSIG)``); the
server's backend stubs watch the server and exit about 2 s after it.

The kernel sends that signal when the *thread* that forked exits, not the process, so
every child is forked from one daemon thread that lives as long as this process (a
server started from a short-lived worker thread must not die with that thread).
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import threading
from concurrent.futures import Future
from typing import Any, Sequence

#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``.
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls into it
_requests: queue.SimpleQueue = queue.SimpleQueue()
_thread: threading.Thread | None = None
_thread_lock = threading.Lock()


def _die_with_parent(parent_pid: int) -> None:
    """In the child, before exec: SIGKILL me when my parent's forking thread exits."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _forker() -> None:
    while True:
        future, argv, kwargs = _requests.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(subprocess.Popen(argv, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            future.set_exception(exc)


def spawn_tied(argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv, **popen_kwargs)``, SIGKILLed by the kernel if this process dies.

    Raises:
        OSError: as :class:`subprocess.Popen` (the executable cannot be run).
    """
    global _thread
    with _thread_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_forker, name="ser-spawn", daemon=True)
            _thread.start()
    parent = os.getpid()
    future: Future = Future()
    _requests.put((future, list(argv), {**popen_kwargs, "preexec_fn": lambda: _die_with_parent(parent)}))
    return future.result()
