"""Reading a tritonserver log: one line saying why the server failed or died.

:func:`summarize_failure` is what :class:`deploy.local_triton.LocalTriton` puts in its
:class:`~client.errors.ServerStartError` messages and what :mod:`deploy.supervisor` logs
for each death: the port already in use, the crash (signal and uncaught exception), the
models that failed to load and why, or else the last error lines.
"""

from __future__ import annotations

import re

#: Lines of the server log kept in error messages.
LOG_TAIL_LINES = 40

_ERROR_LINE = re.compile(r"^E\d{4} ")
_FAILED_LOAD = re.compile(r"failed to load '([^']+)'[^:]*: (.*)$")
_IN_USE = re.compile(r"(?:Socket|address) '?([0-9.:]+)'? (?:is )?already in use", re.I)
#: Error lines that are harmless on a CPU host (no GPU, no NVML/DCGM, no pinned memory).
_HARMLESS = ("CudaDriverHelper", "NVML", "DCGM", "pinned memory", "Pinned memory", "GPU metrics")
_TABLE_ROW = re.compile(r"^\|\s*([^|\s]+)\s*\|\s*(\S+)\s*\|\s*UNAVAILABLE: (.*?)\s*\|?\s*$")


def summarize_failure(log_text: str) -> str:
    """One line naming what went wrong, read from a tritonserver log.

    Prefers ``failed to load '<model>' ...: <reason>`` lines and the model-status
    table's ``UNAVAILABLE`` rows; falls back to the last error lines.
    """
    lines = log_text.splitlines()
    for line in lines:
        m = _IN_USE.search(line)
        if m:
            return f"address {m.group(1)} already in use (another server or process holds the port)"
    crash = _crash_reason(lines)
    if crash:
        return crash
    failed: dict[str, str] = {}
    for line in lines:
        m = _FAILED_LOAD.search(line)
        if m:
            failed.setdefault(m.group(1), m.group(2).strip())
    for line in lines:
        m = _TABLE_ROW.match(line.strip())
        if m and m.group(1) not in failed:
            failed[m.group(1)] = m.group(3)
    if failed:
        return "; ".join(f"model {name!r} failed to load: {_squash(reason)}" for name, reason in failed.items())
    errors = [
        _squash(line.split("] ", 1)[-1])
        for line in lines
        if _ERROR_LINE.match(line) and not any(h in line for h in _HARMLESS)
    ]
    if errors:
        return "; ".join(errors[-3:])
    tail = [ln.strip() for ln in lines if ln.strip()]
    return _squash(tail[-1]) if tail else "no output"


_SIGNAL = re.compile(r"^Signal \((\d+)\) received\.")
_TERMINATE = re.compile(r"^terminate called after throwing an instance of '([^']+)'")


def _crash_reason(lines: list[str]) -> str:
    """``aborted by signal 6 (uncaught std::bad_alloc: ...)`` from the last crash in a log, or ``""``."""
    for i in range(len(lines) - 1, -1, -1):
        m = _SIGNAL.match(lines[i].strip())
        if not m:
            continue
        cause = ""
        for j in range(i - 1, max(i - 6, -1), -1):
            t = _TERMINATE.match(lines[j].strip())
            if t:
                what = next((ln.strip()[len("what():"):].strip() for ln in lines[j + 1 : i] if ln.strip().startswith("what():")), "")
                cause = f" (uncaught {t.group(1)}" + (f": {_squash(what, 200)}" if what and what != t.group(1) else "") + ")"
                break
        return f"aborted by signal {m.group(1)}{cause}"
    return ""


def _squash(text: str, limit: int = 400) -> str:
    text = text.replace("\\n", "\n").split("\n\nAt:")[0]  # drop the Python traceback the stub appends
    text = " ".join(text.split()).strip().strip('"').strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
