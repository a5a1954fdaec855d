"""What the server does during a load run, sampled: per-version counters and memory.

:class:`RunSampler` is a background thread that, every ``interval_s``:

* scrapes the metrics endpoint and feeds each model version's counters to a
  :class:`~loadtest.metrics.CounterTracker`, so a version that unloads mid-run (a version
  swap) still counts;
* reads the resident memory (``VmRSS`` in ``/proc/<pid>/status``) of the server process and of
  every process below it (the python-backend stubs, which hold the models), so a leak shows.

:func:`rss_growth_pct` turns the memory series into one number: the growth from just after the
warm-up to the end of the run, in percent, from the medians of the first and last fifths of
the samples (a single garbage-collection spike does not decide it).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from client.errors import ConfigError, SerError
from loadtest.metrics import CounterTracker

#: Samples needed after the warm-up for a memory growth figure.
MIN_GROWTH_SAMPLES = 5


@dataclass(frozen=True)
class MemorySample:
    """Resident memory at one moment of a run.

    Attributes:
        t_s: seconds since the sampler started.
        server_bytes: the server process's resident set.
        stubs_bytes: the sum over the processes below it (python-backend stubs).
    """

    t_s: float
    server_bytes: int
    stubs_bytes: int

    @property
    def total_bytes(self) -> int:
        """Server and stubs together."""
        return self.server_bytes + self.stubs_bytes


def _rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return 0  # a zombie has no VmRSS line


def _children() -> dict[int, list[int]]:
    """``{parent pid: [child pids]}`` of every process visible in /proc."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...)."""
    tree = _children()
    found, todo = [], list(tree.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(tree.get(p, []))
    return sorted(found)


def memory_sample(pid: int, *, t_s: float) -> MemorySample | None:
    """Resident memory of ``pid`` and of every process below it; None if ``pid`` is gone."""
    server = _rss_bytes(pid)
    if server is None:
        return None
    stubs = sum(r for r in (_rss_bytes(c) for c in descendants(pid)) if r is not None)
    return MemorySample(t_s=t_s, server_bytes=server, stubs_bytes=stubs)


def rss_growth_pct(samples: Sequence[MemorySample], *, after_s: float = 0.0) -> float:
    """Growth of server + stubs memory from ``after_s`` (the warm-up's end) to the last sample, in %.

    Compares the median of the first fifth of the samples taken at or after ``after_s`` with
    the median of the last fifth (at least one sample each). NaN with fewer than
    :data:`MIN_GROWTH_SAMPLES` samples.
    """
    steady = [s.total_bytes for s in samples if s.t_s >= after_s]
    if len(steady) < MIN_GROWTH_SAMPLES:
        return math.nan
    k = max(1, len(steady) // 5)
    start, end = statistics.median(steady[:k]), statistics.median(steady[-k:])
    return 100.0 * (end - start) / start if start > 0 else math.nan


class RunSampler:
    """A thread sampling counters per version and memory until :meth:`stop`; a context manager.

    Args:
        metrics: ``HOST:PORT`` of Triton's metrics endpoint, or None (no counters).
        model: the model whose counters are kept.
        server_pid: the server's process id on this host, or None (no memory samples).
        interval_s: seconds between samples.

    Attributes:
        memory: the memory samples so far.
        counters: the model's counter increases, from :meth:`CounterTracker.begin` on.
        errors: scrapes that failed (the endpoint went away for a moment), counted.
    """

    def __init__(self, *, metrics: str | None, model: str, server_pid: int | None, interval_s: float = 1.0) -> None:
        if not interval_s > 0:
            raise ConfigError(f"interval_s={interval_s}: must be positive (seconds)")
        self.metrics, self.model, self.server_pid, self.interval_s = metrics, model, server_pid, float(interval_s)
        self.memory: list[MemorySample] = []
        self.counters = CounterTracker(model=model)
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-sampler", daemon=True)
        self._t0 = time.monotonic()

    def elapsed_s(self) -> float:
        """Seconds since the sampler started (the time axis of :attr:`memory`)."""
        return time.monotonic() - self._t0

    def sample(self) -> None:
        """Take one sample now."""
        t = self.elapsed_s()
        if self.metrics is not None:
            try:
                self.counters.sample(self.metrics)
            except SerError:
                self.errors += 1
        if self.server_pid is not None:
            m = memory_sample(self.server_pid, t_s=t)
            if m is not None:
                self.memory.append(m)

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> "RunSampler":
        """Start sampling (the first sample is taken at once)."""
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10 * self.interval_s + 5)

    def __enter__(self) -> "RunSampler":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def plot_memory(runs: Sequence[tuple[str, Sequence[MemorySample], float]], path: str | Path) -> Path:
    """Server and stub memory over each run, the warm-up's end marked: one panel per run.

    Args:
        runs: ``(title, samples, warm-up end in the samples' seconds)`` per run.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(runs))
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 3.8), squeeze=False)
    for ax, (title, samples, warm) in zip(axes[0], runs, strict=False):
        t = [s.t_s for s in samples]
        mib = 1 << 20
        ax.plot(t, [s.total_bytes / mib for s in samples], "-", label="server + stubs")
        ax.plot(t, [s.server_bytes / mib for s in samples], "--", label="tritonserver")
        ax.plot(t, [s.stubs_bytes / mib for s in samples], ":", label="python-backend stubs")
        if warm > 0:
            ax.axvline(warm, color="gray", linewidth=0.8, label="warm-up ends")
        growth = rss_growth_pct(samples, after_s=warm)
        ax.set_title(f"{title}: {'n/a' if math.isnan(growth) else f'{growth:+.1f} %'} after warm-up", fontsize=9)
        ax.set_xlabel("seconds")
        ax.set_ylabel("resident memory (MiB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
