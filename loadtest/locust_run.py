"""One Locust run: the headless ``locust`` subprocess, its warm-up, its statistics and the server's counters.

:func:`run_locust` runs ``locust -f <locustfile> --headless`` once at one user count (bounded by
``warmup_s + run_time_s``), while a :class:`~loadtest.sampler.RunSampler` reads the server's
counters per model version and its memory; it returns a :class:`RunResult` read from the run's
final statistics table (:func:`final_stats_csv`, written by the locustfile when Locust quits), the
gate lines of its log and the sampler. Locust's own files go to ``<out_dir>/<scenario>-u<N>_stats.csv``
and ``.log``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.errors import SerError
from deploy.spawn import spawn_tied
from loadtest.gates import (
    CLIENT_TIMEOUT_S,
    GATE_PREFIX,
    PERCENTILES,
    exact_figures_path,
    memory_gate,
)
from loadtest.metrics import ModelCounters
from loadtest.run_config import LoadTestConfig
from loadtest.sampler import MemorySample, RunSampler, rss_growth_pct

REPO_ROOT = Path(__file__).resolve().parent.parent


class LocustRunError(SerError):
    """Locust did not run (crashed, timed out, or wrote no statistics); the message quotes its log."""


@dataclass(frozen=True)
class RunResult:
    """One Locust run at one user count.

    Attributes:
        scenario: ``batching-on`` or ``batching-off``.
        users: concurrent users.
        requests: requests made (Locust), failures: of them failed (after the warm-up, if any).
        rps: requests per second, failed ones included (Locust's figure); windows_per_s: windows of the
            *successful* requests per second (``(rps - failures/s) * windows_per_request``).
        p50_ms, p90_ms, p95_ms, p99_ms: request latency percentiles (ms, client side), exact: from every
            response time the locustfile recorded, not from Locust's histogram, which rounds them (254 ms to 250).
        avg_ms, max_ms: Locust's mean and maximum (ms).
        server: Triton's counters over the run (after − before), or None without metrics.
        exit_code: Locust's exit code (1 on a broken gate or any failure).
        gate_failures: the broken gates, one line each.
        stats_csv: the statistics table the figures were read from: :func:`final_stats_csv`, or Locust's
            ``_stats.csv`` for a locustfile that does not install the bundle's listeners.
        warmup_requests, warmup_failures: requests made and failed during the warm-up (not in the figures above).
        server_seconds: wall time between the two reads of the server's counters (s; NaN without metrics): the
            measured window, from the statistics' start (the warm-up's end, or Locust's start of the test when
            there is none) to ``run_time_s`` later; Locust's start-up and stop fall outside it.
        memory: resident memory of the server and its stubs, sampled over the run (empty when the
            server is not on this host).
        warmup_end_s: when the measured window opened (the warm-up's end), on :attr:`memory`'s time axis.
        warmup_s: the warm-up asked for (s; 0: none).
    """

    scenario: str
    users: int
    requests: int
    failures: int
    rps: float
    windows_per_s: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    max_ms: float
    server: ModelCounters | None
    exit_code: int
    gate_failures: tuple[str, ...]
    stats_csv: Path
    warmup_requests: int = 0
    warmup_failures: int = 0
    server_seconds: float = math.nan
    memory: tuple[MemorySample, ...] = ()
    warmup_end_s: float = 0.0
    warmup_s: float = 0.0

    @property
    def rss_growth_pct(self) -> float:
        """Server + stub memory growth from the warm-up's end to the run's end, % (NaN if not sampled)."""
        return rss_growth_pct(self.memory, after_s=self.warmup_end_s)

    @property
    def rss_mib_end(self) -> float:
        """Server + stub memory at the last sample, MiB (NaN if not sampled)."""
        return self.memory[-1].total_bytes / (1 << 20) if self.memory else math.nan

    @property
    def server_inferences_per_s(self) -> float:
        """Windows the server computed per second of its counter window (NaN without metrics).

        Independent of Locust's statistics, which are a snapshot taken up to a second before the end.
        """
        s = self.server
        return s.inference_count / self.server_seconds if s is not None and self.server_seconds > 0 else math.nan

    def row(self) -> dict[str, Any]:
        """A flat dict for the CSV and markdown report."""
        s = self.server
        nan = math.nan
        return {
            "scenario": self.scenario,
            "users": self.users,
            "requests": self.requests,
            "failures": self.failures,
            "requests_per_s": round(self.rps, 2),
            "windows_per_s": round(self.windows_per_s, 2),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "avg_ms": round(self.avg_ms, 2),
            "max_ms": round(self.max_ms, 2),
            "server_inferences": int(s.inference_count) if s else "",
            "server_inferences_per_s": round(self.server_inferences_per_s, 2),
            "server_executions": int(s.exec_count) if s else "",
            "mean_batch_size": round(s.mean_batch_size, 3) if s else nan,
            "queue_us_per_request": round(s.queue_us_per_request, 1) if s else nan,
            "compute_us_per_request": round(s.compute_us_per_request, 1) if s else nan,
            "server_success": int(s.success) if s else "",
            "server_failure": int(s.failure) if s else "",
            "warmup_requests": self.warmup_requests,
            "warmup_failures": self.warmup_failures,
            "rss_mib_end": round(self.rss_mib_end, 1),
            "rss_growth_pct": round(self.rss_growth_pct, 2),
            "exit_code": self.exit_code,
        }


def locust_command(config: LoadTestConfig, *, url: str, users: int, csv_prefix: Path) -> list[str]:
    """The headless Locust command line of one run."""
    cmd = [
        sys.executable, "-m", "locust", "-f", str(config.locustfile), "--headless",
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{config.warmup_s + config.run_time_s}s",
        "--host", url, "--csv", str(csv_prefix), "--final-stats", str(final_stats_csv(csv_prefix)),
        "--only-summary", "--loglevel", "WARNING",
        # At the end, let requests in flight finish: killed, they reach the server as cancelled (= failed) requests.
        "--stop-timeout", f"{CLIENT_TIMEOUT_S:g}s",
        "--model", config.model, "--protocol", config.protocol,
        "--windows-per-request", str(config.windows_per_request),
        "--generated-clips", str(config.audio.generated_clips), "--partition", config.audio.partition,
    ]
    # The marker is written when the statistics start (after the warm-up, or at the test's start without one):
    # the runner opens the server's counter window then, not when Locust starts up.
    cmd += ["--warmup-s", str(config.warmup_s), "--warmup-marker", str(warmup_marker(csv_prefix))]
    if config.audio.audio_dir is not None:
        cmd += ["--audio-dir", str(config.audio.audio_dir)]
    if config.audio.manifest is not None:
        cmd += ["--manifest", str(config.audio.manifest)]
    if config.live_calls is not None:  # calls cycle through generated clips; failed calls / calls is judged per call by the runner
        cmd += ["--calls-clips", str(config.audio.generated_clips), *config.live_calls.cli_args()]
    else:
        cmd += config.thresholds.cli_args()
    return cmd + list(config.user_classes)


def final_stats_csv(csv_prefix: Path) -> Path:
    """The statistics table with the run's final totals, written by the locustfile when Locust quits (``--final-stats``).

    Locust rewrites its own ``<prefix>_stats.csv`` once a second and not at exit, so that file can miss
    the last second of a run (all of a short one on a busy host); the figures are read from this one.
    """
    return Path(f"{csv_prefix}_stats_final.csv")


def warmup_marker(csv_prefix: Path) -> Path:
    """The file the locustfile writes when a run's statistics start: the warm-up's end (``--warmup-marker``)."""
    return Path(f"{csv_prefix}_warmup.json")


def _await_warmup(proc: subprocess.Popen, marker: Path, *, deadline_s: float) -> dict[str, float] | None:
    """Wait until ``marker`` holds the warm-up's JSON (None if Locust exits or the deadline passes first)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and proc.poll() is None:
        try:
            return json.loads(marker.read_text())
        except (FileNotFoundError, ValueError):  # not yet written, or half written
            time.sleep(0.05)
    return None


def _read_back(fh) -> str:
    """All text written to a temporary file so far."""
    fh.seek(0)
    return fh.read()


def named_rows(stats_csv: Path) -> dict[str, dict[str, str]]:
    """Every row of Locust's ``_stats.csv`` by request name (``Aggregated`` included; column name -> text)."""
    with open(stats_csv, newline="") as fh:
        return {row.get("Name", ""): row for row in csv.DictReader(fh)}


def aggregated_row(stats_csv: Path) -> dict[str, str]:
    """The ``Aggregated`` row of Locust's ``_stats.csv`` (column name -> text).

    Raises:
        LocustRunError: the file has no such row.
    """
    row = named_rows(stats_csv).get("Aggregated")
    if row is None:
        raise LocustRunError(f"{stats_csv}: no Aggregated row")
    return row


def _num(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except ValueError:
        return math.nan


def run_locust(
    config: LoadTestConfig, *, scenario: str, url: str, users: int, metrics: str | None, out_dir: Path,
    server_pid: int | None = None, counted_model: str | None = None,
) -> RunResult:
    """Run Locust once (headless subprocess) and read its statistics and the server's counters.

    ``server_pid`` (the server's process on this host) adds memory samples over the run. ``counted_model``:
    whose counters :attr:`RunResult.server` holds (default ``config.model``; the audio model's run counts
    the window model it calls).

    Raises:
        LocustRunError: Locust crashed, overran, or wrote no statistics.
        ServerUnavailableError: the metrics endpoint went away.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"{scenario}-u{users}"
    log_path = prefix.with_suffix(".log")
    marker = warmup_marker(prefix)
    final_csv, stats_csv = final_stats_csv(prefix), Path(f"{prefix}_stats.csv")
    for stale in (marker, final_csv, exact_figures_path(final_csv), stats_csv):  # an earlier run's files in the same folder must not be read as this run's
        stale.unlink(missing_ok=True)
    after = before = None
    sampler = RunSampler(metrics=metrics, model=counted_model or config.model, server_pid=server_pid, interval_s=config.sample_interval_s)
    t_before = t_after = time.monotonic()
    warmup_end_s = 0.0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    cmd = locust_command(config, url=url, users=users, csv_prefix=prefix)
    timeout = config.warmup_s + config.run_time_s + CLIENT_TIMEOUT_S + 90
    warmup = None
    # Output to files, not pipes: nothing reads a pipe while the runner waits, and a full one would stall Locust.
    # Tied to this process (killed by the kernel if it dies, SIGTERM included) and killed when the wait is interrupted
    # (SIGINT): a Locust left behind would go on calling the server, or one that is gone, for its whole run time.
    with sampler, tempfile.TemporaryFile("w+") as out_fh, tempfile.TemporaryFile("w+") as err_fh, \
            spawn_tied(cmd, cwd=REPO_ROOT, env=env, stdout=out_fh, stderr=err_fh, text=True) as proc:
        try:
            # The server's window is Locust's: from the statistics' start (the warm-up's end, or the test's start
            # without a warm-up) for run_time_s; Locust's start-up before it and its stop after it are outside.
            warmup = _await_warmup(proc, marker, deadline_s=timeout)
            if warmup is not None:
                before = sampler.counters.begin(metrics) if metrics else None
                t_before, warmup_end_s = time.monotonic(), sampler.elapsed_s()
                try:
                    proc.wait(timeout=config.run_time_s)
                except subprocess.TimeoutExpired:  # what Locust's queued requests do after this is not the run's
                    after = sampler.counters.end(metrics) if before is not None else None
                    t_after = time.monotonic()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise LocustRunError(f"locust ({scenario}, {users} users) did not finish within {timeout:g} s") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        stdout, stderr = _read_back(out_fh), _read_back(err_fh)
    log_path.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n")
    if warmup is None and proc.returncode == 0:
        raise LocustRunError(f"locust ({scenario}, {users} users) never started its statistics"
                             + (f" or ended its {config.warmup_s} s warm-up" if config.warmup_s else "")
                             + f" (no {marker.name}; log: {log_path})")
    if after is None and before is not None:  # Locust stopped before run_time_s had passed
        after, t_after = sampler.counters.end(metrics), time.monotonic()
    server_seconds = t_after - t_before if after is not None and before is not None else math.nan
    if final_csv.is_file():  # the locustfile's final totals; _stats.csv can miss the run's last second
        stats_csv = final_csv
    if not stats_csv.is_file():
        tail = " | ".join(line for line in stderr.strip().splitlines()[-3:])
        raise LocustRunError(f"locust ({scenario}, {users} users) exited {proc.returncode} without statistics: {tail} (log: {log_path})")
    row = aggregated_row(stats_csv)
    exact = _exact_figures(final_csv)
    gates = tuple(line.split(GATE_PREFIX, 1)[1].strip() for line in stderr.splitlines() if GATE_PREFIX in line)
    memory = tuple(sampler.memory)
    gates += tuple(memory_gate(config.max_rss_growth_pct, memory, warmup_end_s))
    rps, failures_per_s = _num(row, "Requests/s"), _num(row, "Failures/s")
    server = sampler.counters.total() if after is not None and before is not None else None
    latency = {f"p{q}_ms": exact.get(f"p{q}_ms", _num(row, f"{q}%")) for q in PERCENTILES}
    return RunResult(
        scenario=scenario, users=users,
        requests=int(_num(row, "Request Count")), failures=int(_num(row, "Failure Count")),
        rps=rps, windows_per_s=(rps - (0.0 if math.isnan(failures_per_s) else failures_per_s)) * config.windows_per_request,
        **latency,
        avg_ms=_num(row, "Average Response Time"), max_ms=_num(row, "Max Response Time"),
        server=server,
        exit_code=proc.returncode, gate_failures=gates, stats_csv=stats_csv,
        warmup_requests=int(warmup["requests"]) if warmup else 0, warmup_failures=int(warmup["failures"]) if warmup else 0,
        server_seconds=server_seconds, memory=memory, warmup_end_s=warmup_end_s, warmup_s=config.warmup_s,
    )


def _exact_doc(final_csv: Path) -> dict[str, Any]:
    try:
        doc = json.loads(exact_figures_path(final_csv).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _exact_figures(final_csv: Path) -> dict[str, float]:
    """The exact percentiles the locustfile wrote beside its final table (empty when it wrote none)."""
    return {k: float(v) for k, v in _exact_doc(final_csv).items() if k.endswith("_ms")}


def exact_figures_by_name(final_csv: Path) -> dict[str, dict[str, float]]:
    """The exact figures per request name the locustfile wrote beside its final table.

    Returns:
        ``{request name: {"requests": n, "p50_ms": ..., "p99_ms": ...}}`` (ms; empty when it wrote none).
    """
    by_name = _exact_doc(final_csv).get("by_name") or {}
    return {name: {k: float(v) for k, v in figures.items()} for name, figures in by_name.items()}
