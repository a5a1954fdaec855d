"""``ser loadtest``: sweep users against Triton with Locust, and show what batching buys.

:func:`run_loadtest` starts the real local tritonserver on a repository (or
targets a running server), runs ``locust -f loadtest/locustfile.py --headless``
as a subprocess for each user count (bounded by ``run_time_s``), scrapes the
server's metrics endpoint before and after each run, and writes a report:

* ``loadtest.csv``: one row per run (scenario, users, requests, failures,
  throughput in requests/s and windows/s, p50/p90/p95/p99/avg/max latency in ms,
  and from Triton's metrics: inferences, executions, mean executed batch size,
  queue and compute µs per request, server successes/failures, exit code);
* ``loadtest.md``: the same as a markdown table, with the comparison lines;
* ``loadtest.png``: latency percentiles and throughput against users, and the server's and
  its stubs' resident memory over each run (when the server runs on this host);
* ``loadtest.json``: everything above plus the configuration;
* ``locust/<scenario>-u<N>_stats.csv`` and ``.log``: Locust's own files.

Comparisons (need a repository, because they serve edited copies of it):

* ``compare_batching``: the model served from two single-model repository
  copies, ``batching-on`` (the config as written) and ``batching-off`` (the
  parsed ModelConfig with ``dynamic_batching`` cleared, written with
  text_format), at ``compare_users`` users each;
* ``ort_baseline``: in-process ONNX Runtime on the same ``model.onnx`` at batch
  ``ort_batch`` (same session options and threads as the served model), with
  the same windows: the denominator of the served/in-process ratio.

Throughput is counted in windows (batch rows) per second on both sides, so the
ratio is fair whatever ``windows_per_request`` is.

During each run a :class:`~loadtest.sampler.RunSampler` scrapes the counters per model version
(so a version swapped in mid-run does not hide the old version's requests) and the memory of
the server and its stubs; ``max_rss_growth_pct`` gates the growth after the warm-up.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence, TextIO

from client.errors import ConfigError, SerError
from client.triton_client import DEFAULT_MODEL, PROTOCOLS, SerClient, normalize_url
from loadtest.gates import CLIENT_TIMEOUT_S, GATE_PREFIX, Thresholds
from loadtest.metrics import ModelCounters
from loadtest.payload import AudioSourceConfig, WindowPool, build_window_pool
from loadtest.sampler import MemorySample, RunSampler, rss_growth_pct

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(".cache/loadtest")
SCENARIO_ON = "batching-on"
SCENARIO_OFF = "batching-off"
SCENARIO_INSTANCES = "instances-{}"  # batching on, N instances of the model
SCENARIO_MODEL = "model-{}"  # batching on, another model of the same repository (e.g. ser_fp32 vs ser_int8)
#: Longest single Locust run allowed (s): load tests here are bounded.
MAX_RUN_TIME_S = 3600


class LocustRunError(SerError):
    """Locust did not run (crashed, timed out, or wrote no statistics); the message quotes its log."""


@dataclass(frozen=True)
class LoadTestConfig:
    """What one ``ser loadtest`` does.

    Attributes:
        repository: a model repository to serve with the local tritonserver
            (one server per scenario, on free loopback ports). Exclusive with ``url``.
        url: ``HOST:PORT`` of a running server (its gRPC or HTTP port, matching ``protocol``).
        metrics_url: ``HOST:PORT`` of that server's metrics endpoint (batch size,
            queue and compute times); without it those columns stay empty.
        model: the model to load (``ser_int8``, ``ser_fp32``...).
        protocol: ``grpc`` or ``http``.
        users: concurrent users of the sweep (each keeps one request in flight).
        run_time_s: seconds each Locust run measures (whole seconds, 1..3600), after the warm-up.
        warmup_s: seconds of load before the measurement (whole seconds, 0..3600): Locust's
            statistics are reset and the server's counters read when it ends, so every figure
            of a run is the steady state's (a slow model's first batches run part-full while
            users connect). Warm-up failures still fail the run.
        windows_per_request: k, windows (batch rows) per request (<= max_batch_size).
        audio: where the requests' audio comes from.
        thresholds: gates; a run that breaks one exits 1 and fails the report.
        compare_batching: also serve a copy without ``dynamic_batching`` (needs ``repository``).
        compare_users: users of every comparison run (added to the sweep if absent).
        compare_instances: also serve a copy with this many instances (>= 2; batching on).
        compare_model: also serve this other model of the repository (e.g. ``ser_fp32`` against ``ser_int8``).
        ort_baseline: measure in-process ONNX Runtime on the same model (needs ``repository``).
        ort_batch: batch size of the in-process baseline.
        ort_seconds: how long the baseline runs (s; None: as long as a run measures, ``run_time_s``,
            so both sides of the served/in-process ratio are sampled over the same time).
        out_dir: where the report goes (created).
        startup_timeout_s: seconds a local server may take to become ready.
        server_pid: with ``url``: the server's process id on this host, for its memory samples
            (with ``repository`` the runner knows it).
        max_rss_growth_pct: gate: fail a run whose server + stub memory grows by more than this
            many percent from the warm-up's end to its end (:func:`loadtest.sampler.rss_growth_pct`).
        sample_interval_s: seconds between samples of counters and memory during a run.
        locustfile: the Locust file each run loads (default: ``loadtest/locustfile.py``, window users).
        user_classes: the Locust user classes to run (default: every class of ``locustfile``).
    """

    repository: Path | None = None
    url: str | None = None
    metrics_url: str | None = None
    model: str = DEFAULT_MODEL
    protocol: str = "grpc"
    users: tuple[int, ...] = (1, 4, 16)
    run_time_s: int = 10
    warmup_s: int = 0
    windows_per_request: int = 1
    audio: AudioSourceConfig = field(default_factory=AudioSourceConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    compare_batching: bool = False
    compare_users: int = 16
    compare_instances: int | None = None
    compare_model: str | None = None
    ort_baseline: bool = False
    ort_batch: int = 8
    ort_seconds: float | None = None
    out_dir: Path = DEFAULT_OUT
    startup_timeout_s: float = 120.0
    server_pid: int | None = None
    max_rss_growth_pct: float | None = None
    sample_interval_s: float = 1.0
    locustfile: Path = LOCUSTFILE
    user_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.repository is not None:
            object.__setattr__(self, "repository", Path(self.repository))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if (self.repository is None) == (self.url is None):
            raise ConfigError(
                f"repository={self.repository!r}, url={self.url!r}: give exactly one "
                "(a repository to serve locally, or the address of a running server)"
            )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol={self.protocol!r}: expected one of {list(PROTOCOLS)}")
        if self.url is not None:
            object.__setattr__(self, "url", normalize_url(self.url, protocol=self.protocol))
        if not self.model:
            raise ConfigError("model='': a model name is required")
        users = tuple(int(u) for u in ((self.users,) if isinstance(self.users, int) else self.users))
        if not users or any(u < 1 for u in users) or len(set(users)) != len(users):
            raise ConfigError(f"users={list(users)}: need distinct user counts >= 1")
        object.__setattr__(self, "users", tuple(sorted(users)))
        if isinstance(self.run_time_s, bool) or not isinstance(self.run_time_s, int) or not 1 <= self.run_time_s <= MAX_RUN_TIME_S:
            raise ConfigError(f"run_time_s={self.run_time_s!r}: need whole seconds in 1..{MAX_RUN_TIME_S}")
        if isinstance(self.warmup_s, bool) or not isinstance(self.warmup_s, int) or not 0 <= self.warmup_s <= MAX_RUN_TIME_S:
            raise ConfigError(f"warmup_s={self.warmup_s!r}: need whole seconds in 0..{MAX_RUN_TIME_S}")
        if self.windows_per_request < 1:
            raise ConfigError(f"windows_per_request={self.windows_per_request}: must be >= 1")
        if self.compare_users < 1:
            raise ConfigError(f"compare_users={self.compare_users}: must be >= 1")
        if self.ort_seconds is None:
            object.__setattr__(self, "ort_seconds", float(self.run_time_s))
        if self.ort_batch < 1 or not self.ort_seconds > 0:
            raise ConfigError(f"ort_batch={self.ort_batch}, ort_seconds={self.ort_seconds}: need >= 1 and > 0")
        if self.compare_instances is not None and self.compare_instances < 2:
            raise ConfigError(f"compare_instances={self.compare_instances}: compare against >= 2 instances")
        if self.compare_model is not None and self.compare_model == self.model:
            raise ConfigError(f"compare_model={self.compare_model!r}: must differ from model={self.model!r}")
        if (self.comparisons or self.ort_baseline) and self.repository is None:
            raise ConfigError(
                "compare_batching/compare_instances/compare_model/ort_baseline need repository= (they serve "
                "edited copies of it and read its model.onnx); against url= only the sweep runs"
            )
        if self.startup_timeout_s <= 0:
            raise ConfigError(f"startup_timeout_s={self.startup_timeout_s}: must be > 0")
        if self.server_pid is not None and (self.url is None or self.server_pid < 1):
            raise ConfigError(f"server_pid={self.server_pid}: give a process id >= 1, with url= (a local repository's is known)")
        if self.max_rss_growth_pct is not None:
            if not (math.isfinite(self.max_rss_growth_pct) and self.max_rss_growth_pct >= 0):
                raise ConfigError(f"max_rss_growth_pct={self.max_rss_growth_pct}: must be a finite percentage >= 0")
            if self.url is not None and self.server_pid is None:
                raise ConfigError("max_rss_growth_pct needs the server's memory: give server_pid= with url=, or serve a repository")
        if not 0 < self.sample_interval_s <= 60:
            raise ConfigError(f"sample_interval_s={self.sample_interval_s}: must be in (0, 60] seconds")

    @property
    def comparisons(self) -> tuple[str, ...]:
        """The comparison scenarios asked for, each run at ``compare_users`` against ``batching-on``."""
        out = [SCENARIO_OFF] if self.compare_batching else []
        if self.compare_instances:
            out.append(SCENARIO_INSTANCES.format(self.compare_instances))
        if self.compare_model:
            out.append(SCENARIO_MODEL.format(self.compare_model))
        return tuple(out)

    def sweep(self, scenario: str) -> tuple[int, ...]:
        """User counts run in ``scenario``."""
        if scenario != SCENARIO_ON:
            return (self.compare_users,)
        extra = (self.compare_users,) if self.comparisons else ()
        return tuple(sorted(set(self.users) | set(extra)))


@dataclass(frozen=True)
class RunResult:
    """One Locust run at one user count.

    Attributes:
        scenario: ``batching-on`` or ``batching-off``.
        users: concurrent users.
        requests: requests made (Locust), failures: of them failed (after the warm-up, if any).
        rps: requests per second; windows_per_s: ``rps * windows_per_request``.
        p50_ms, p90_ms, p95_ms, p99_ms, avg_ms, max_ms: request latency (ms, client side).
        server: Triton's counters over the run (after − before), or None without metrics.
        exit_code: Locust's exit code (1 on a broken gate or any failure).
        gate_failures: the broken gates, one line each.
        stats_csv: Locust's ``_stats.csv`` of this run.
        warmup_requests, warmup_failures: requests made and failed during the warm-up (not in the figures above).
        server_seconds: wall time between the two reads of the server's counters (s; NaN without metrics).
        memory: resident memory of the server and its stubs, sampled over the run (empty when the
            server is not on this host).
        warmup_end_s: when the warm-up ended, on :attr:`memory`'s time axis (0 without a warm-up).
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


@dataclass(frozen=True)
class OrtBaseline:
    """In-process ONNX Runtime throughput on the served model file.

    Attributes:
        model_path: the ``model.onnx`` measured.
        batch: windows per ``session.run``.
        threads: ONNX Runtime intra-op threads (as the served model uses).
        runs: ``session.run`` calls timed.
        seconds: wall time of those runs (s).
        windows_per_s: ``batch * runs / seconds``.
        ms_per_batch: mean latency of one run (ms).
    """

    model_path: Path
    batch: int
    threads: int
    runs: int
    seconds: float
    windows_per_s: float
    ms_per_batch: float


@dataclass
class LoadTestReport:
    """What :func:`run_loadtest` measured and wrote.

    Attributes:
        config: the configuration.
        runs: one entry per Locust run, in order.
        ort: the in-process baseline, if measured: both of ``ort_slices`` together.
        ort_slices: the baseline's two halves, measured before the load (first server up, idle) and
            after it (servers stopped), so that a drift of the machine's speed during the run shows.
        pool_windows, pool_clips: size of the window pool the requests cycle through.
        files: ``{"csv", "markdown", "plot", "json"}`` -> written paths.
    """

    config: LoadTestConfig
    runs: list[RunResult]
    ort: OrtBaseline | None = None
    ort_slices: tuple[OrtBaseline, ...] = ()
    pool_windows: int = 0
    pool_clips: int = 0
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every run exited 0 (no failure, no broken gate) and broke no gate the runner judges (memory)."""
        return all(r.exit_code == 0 and not r.gate_failures for r in self.runs)

    def run(self, scenario: str, users: int) -> RunResult | None:
        """The run of ``scenario`` at ``users``, if made."""
        return next((r for r in self.runs if r.scenario == scenario and r.users == users), None)

    def ratio(self, scenario: str) -> float:
        """windows/s of ``scenario`` / of ``batching-on`` at ``compare_users`` (NaN if either is missing)."""
        on, other = self.run(SCENARIO_ON, self.config.compare_users), self.run(scenario, self.config.compare_users)
        return other.windows_per_s / on.windows_per_s if on and other and on.windows_per_s else math.nan

    @property
    def batching_speedup(self) -> float:
        """windows/s with dynamic batching on / off at ``compare_users`` (NaN if not compared)."""
        off = self.ratio(SCENARIO_OFF)
        return 1.0 / off if off else math.nan

    @property
    def ort_ratio(self) -> float:
        """Served windows/s at ``compare_users`` with batching / in-process ORT windows/s (NaN if not measured)."""
        on = self.run(SCENARIO_ON, self.config.compare_users)
        return on.windows_per_s / self.ort.windows_per_s if on and self.ort and self.ort.windows_per_s else math.nan

    @property
    def ort_drift(self) -> float:
        """|before - after| / mean of the two baseline halves' windows/s (NaN without both)."""
        if len(self.ort_slices) != 2:
            return math.nan
        a, b = (o.windows_per_s for o in self.ort_slices)
        return abs(a - b) / ((a + b) / 2) if a + b > 0 else math.nan

    def headline(self) -> str:
        """One line of the figures that matter."""
        cu = self.config.compare_users
        on = self.run(SCENARIO_ON, cu) or (self.runs[-1] if self.runs else None)
        if on is None:
            return "no run"
        parts = [
            f"{self.config.model} over {self.config.protocol}, {on.users} users: {on.windows_per_s:.1f} windows/s, "
            f"p50/p95/p99 {on.p50_ms:g}/{on.p95_ms:g}/{on.p99_ms:g} ms, {on.failures} failures"
        ]
        if on.server is not None:
            parts.append(f"mean executed batch {on.server.mean_batch_size:.2f}")
        if not math.isnan(on.rss_growth_pct):
            parts.append(f"server + stub memory {on.rss_mib_end:.0f} MiB, {on.rss_growth_pct:+.1f} % after the warm-up")
        off = self.run(SCENARIO_OFF, cu)
        if off is not None:
            parts.append(f"batching off: {off.windows_per_s:.1f} windows/s (batch "
                         f"{off.server.mean_batch_size if off.server else math.nan:.2f}), on/off {self.batching_speedup:.2f}x")
        for scenario in (c for c in self.config.comparisons if c != SCENARIO_OFF):
            other = self.run(scenario, cu)
            if other is not None:
                parts.append(f"{scenario}: {other.windows_per_s:.1f} windows/s, p95 {other.p95_ms:g} ms "
                             f"({self.ratio(scenario):.2f}x of batching-on)")
        if self.ort is not None:
            parts.append(f"in-process ORT batch {self.ort.batch}: {self.ort.windows_per_s:.1f} windows/s, "
                         f"served/ORT {self.ort_ratio:.2f}x")
            if self.ort_drift > DRIFT_WARNING:
                parts.append(f"in-process speed drifted {self.ort_drift:.0%} between before and after the load: "
                             "the served/ORT ratio is that uncertain")
        parts.append("PASSED" if self.passed else "FAILED")
        return "; ".join(parts)


# --- repositories for the comparison -------------------------------------------------------


#: Baseline drift (before vs after the load) above which the report calls the served/ORT ratio uncertain.
DRIFT_WARNING = 0.10


def write_scenario_repository(
    model_dir: str | Path, repo_dir: str | Path, *, dynamic_batching: bool, instances: int | None = None
) -> Path:
    """Copy one model into a fresh single-model repository, with or without dynamic batching.

    The config is parsed into a ``ModelConfig`` message; without batching its
    ``dynamic_batching`` field is cleared (``max_batch_size`` stays, so clients
    may still send batches; Triton then runs each request as it comes), and the
    message is written with text_format. ``1/model.onnx`` is symlinked, not copied.

    Args:
        model_dir: ``<repository>/<model>`` written by the bundle's repository writer.
        repo_dir: the new repository root (replaced if it exists).
        dynamic_batching: keep (True) or clear (False) the dynamic batcher.
        instances: set every instance group's count to this (None: as written).

    Returns:
        The new model folder ``<repo_dir>/<model>``.

    Raises:
        ModelConfigError: ``model_dir`` has no config.pbtxt, or it does not parse.
    """
    from export.repository import read_model_config, write_config

    model_dir, repo_dir = Path(model_dir), Path(repo_dir)
    message = read_model_config(model_dir)
    if not dynamic_batching:
        message.ClearField("dynamic_batching")
    if instances is not None:
        for group in message.instance_group:
            group.count = instances
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    target = repo_dir / model_dir.name
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("*.onnx", "__pycache__"))
    for onnx in model_dir.rglob("*.onnx"):
        link = target / onnx.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(onnx.resolve())
    write_config(message, target / "config.pbtxt")
    return target


# --- the in-process baseline ---------------------------------------------------------------


def measure_ort(model_dir: str | Path, pool: WindowPool, *, batch: int = 8, seconds: float = 3.0) -> OrtBaseline:
    """Throughput of ONNX Runtime in this process on the served ``model.onnx``, at a fixed batch.

    Same session options and intra-op threads as the served python-backend model
    (:func:`export.triton_python_model.make_session`; the config's
    ``intra_op_thread_count`` or its default), same windows as the load test.

    Args:
        model_dir: ``<repository>/<model>`` (reads ``1/model.onnx`` and ``config.pbtxt``).
        pool: the load test's windows ``[N, W]``.
        batch: windows per run.
        seconds: minimum measuring time (after 2 warm-up runs).

    Returns:
        :class:`OrtBaseline`.
    """
    from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM
    from export.repository import read_model_config
    from export.triton_python_model import THREADS_PARAMETER, default_threads, make_session

    model_dir = Path(model_dir)
    onnx_path = model_dir / "1" / "model.onnx"
    if not onnx_path.is_file():
        raise ConfigError(f"{model_dir}: no 1/model.onnx for the in-process baseline")
    message = read_model_config(model_dir)
    text = message.parameters[THREADS_PARAMETER].string_value if THREADS_PARAMETER in message.parameters else ""
    threads = int(text) if text.strip().isdigit() else default_threads()
    session = make_session(onnx_path, intra_op_threads=threads)
    feeds = [{INPUT_WAVEFORM: w, INPUT_NUM_SAMPLES: n} for w, n in pool.requests(windows_per_request=batch, count=8)]
    for feed in feeds[:2]:
        session.run(None, feed)
    runs, t0 = 0, time.perf_counter()
    while True:
        session.run(None, feeds[runs % len(feeds)])
        runs += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and runs >= 3:
            break
    return OrtBaseline(
        model_path=onnx_path, batch=batch, threads=threads, runs=runs, seconds=elapsed,
        windows_per_s=batch * runs / elapsed, ms_per_batch=1000.0 * elapsed / runs,
    )


def combine_baselines(slices: Sequence[OrtBaseline]) -> OrtBaseline:
    """Several baseline measurements of one model as one: runs and seconds added up."""
    first = slices[0]
    runs, seconds = sum(o.runs for o in slices), sum(o.seconds for o in slices)
    return replace(first, runs=runs, seconds=seconds, windows_per_s=first.batch * runs / seconds,
                   ms_per_batch=1000.0 * seconds / runs)


# --- one Locust run --------------------------------------------------------------------------


def locust_command(config: LoadTestConfig, *, url: str, users: int, csv_prefix: Path) -> list[str]:
    """The headless Locust command line of one run."""
    cmd = [
        sys.executable, "-m", "locust", "-f", str(config.locustfile), "--headless",
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{config.warmup_s + config.run_time_s}s",
        "--host", url, "--csv", str(csv_prefix), "--only-summary", "--loglevel", "WARNING",
        # At the end, let requests in flight finish: killed, they reach the server as cancelled (= failed) requests.
        "--stop-timeout", f"{CLIENT_TIMEOUT_S:g}s",
        "--model", config.model, "--protocol", config.protocol,
        "--windows-per-request", str(config.windows_per_request),
        "--generated-clips", str(config.audio.generated_clips), "--partition", config.audio.partition,
    ]
    if config.warmup_s:
        cmd += ["--warmup-s", str(config.warmup_s), "--warmup-marker", str(warmup_marker(csv_prefix))]
    if config.audio.audio_dir is not None:
        cmd += ["--audio-dir", str(config.audio.audio_dir)]
    if config.audio.manifest is not None:
        cmd += ["--manifest", str(config.audio.manifest)]
    return cmd + config.thresholds.cli_args() + list(config.user_classes)


def warmup_marker(csv_prefix: Path) -> Path:
    """The file the locustfile writes when a run's warm-up ends (``--warmup-marker``)."""
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


def _aggregated(stats_csv: Path) -> dict[str, str]:
    with open(stats_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") == "Aggregated":
                return row
    raise LocustRunError(f"{stats_csv}: no Aggregated row")


def _num(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except ValueError:
        return math.nan


def run_locust(
    config: LoadTestConfig, *, scenario: str, url: str, users: int, metrics: str | None, out_dir: Path,
    server_pid: int | None = None,
) -> RunResult:
    """Run Locust once (headless subprocess) and read its statistics and the server's counters.

    ``server_pid`` (the server's process on this host) adds memory samples over the run.

    Raises:
        LocustRunError: Locust crashed, overran, or wrote no statistics.
        ServerUnavailableError: the metrics endpoint went away.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"{scenario}-u{users}"
    log_path = prefix.with_suffix(".log")
    marker = warmup_marker(prefix)
    marker.unlink(missing_ok=True)
    after = None
    sampler = RunSampler(metrics=metrics, model=config.model, server_pid=server_pid, interval_s=config.sample_interval_s)
    before = sampler.counters.begin(metrics) if metrics and not config.warmup_s else None
    t_before = time.monotonic()
    warmup_end_s = 0.0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    cmd = locust_command(config, url=url, users=users, csv_prefix=prefix)
    timeout = config.warmup_s + config.run_time_s + CLIENT_TIMEOUT_S + 90
    warmup = None
    # Output to files, not pipes: nothing reads a pipe while the runner waits, and a full one would stall Locust.
    with sampler, tempfile.TemporaryFile("w+") as out_fh, tempfile.TemporaryFile("w+") as err_fh, \
            subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out_fh, stderr=err_fh, text=True) as proc:
        try:
            if config.warmup_s:  # the server's window is Locust's: from the statistics' reset to the run's end
                warmup = _await_warmup(proc, marker, deadline_s=timeout)
                before = sampler.counters.begin(metrics) if metrics and warmup is not None else None
                t_before, warmup_end_s = time.monotonic(), sampler.elapsed_s()
                if before is not None:  # (not after Locust exits: requests it left queued still run then)
                    try:
                        proc.wait(timeout=config.run_time_s)
                    except subprocess.TimeoutExpired:  # what Locust's queued requests do after this is not the run's
                        after, t_after = sampler.counters.end(metrics), time.monotonic()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise LocustRunError(f"locust ({scenario}, {users} users) did not finish within {timeout:g} s") from None
        stdout, stderr = _read_back(out_fh), _read_back(err_fh)
    log_path.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n")
    if config.warmup_s and warmup is None and proc.returncode == 0:
        raise LocustRunError(f"locust ({scenario}, {users} users) never ended its {config.warmup_s} s warm-up "
                             f"(no {marker.name}; log: {log_path})")
    if after is None:
        after, t_after = (sampler.counters.end(metrics) if before is not None else None), time.monotonic()
    server_seconds = t_after - t_before if after is not None and before is not None else math.nan
    stats_csv = Path(f"{prefix}_stats.csv")
    if not stats_csv.is_file():
        tail = " | ".join(line for line in stderr.strip().splitlines()[-3:])
        raise LocustRunError(f"locust ({scenario}, {users} users) exited {proc.returncode} without statistics: {tail} (log: {log_path})")
    row = _aggregated(stats_csv)
    gates = tuple(line.split(GATE_PREFIX, 1)[1].strip() for line in stderr.splitlines() if GATE_PREFIX in line)
    memory = tuple(sampler.memory)
    gates += tuple(_memory_gate(config.max_rss_growth_pct, memory, warmup_end_s))
    rps = _num(row, "Requests/s")
    server = sampler.counters.total() if after is not None and before is not None else None
    return RunResult(
        scenario=scenario, users=users,
        requests=int(_num(row, "Request Count")), failures=int(_num(row, "Failure Count")),
        rps=rps, windows_per_s=rps * config.windows_per_request,
        p50_ms=_num(row, "50%"), p90_ms=_num(row, "90%"), p95_ms=_num(row, "95%"), p99_ms=_num(row, "99%"),
        avg_ms=_num(row, "Average Response Time"), max_ms=_num(row, "Max Response Time"),
        server=server,
        exit_code=proc.returncode, gate_failures=gates, stats_csv=stats_csv,
        warmup_requests=int(warmup["requests"]) if warmup else 0, warmup_failures=int(warmup["failures"]) if warmup else 0,
        server_seconds=server_seconds, memory=memory, warmup_end_s=warmup_end_s,
    )


def _memory_gate(limit_pct: float | None, memory: Sequence[MemorySample], warmup_end_s: float) -> list[str]:
    """The memory gate's broken limit, one line (empty: passed or no limit)."""
    if limit_pct is None:
        return []
    growth = rss_growth_pct(memory, after_s=warmup_end_s)
    if math.isnan(growth):
        return [f"server memory growth not measurable ({len(memory)} samples; run longer than the warm-up by a few "
                "sampling intervals)"]
    if growth > limit_pct:
        return [f"server + stub memory grew {growth:.1f} % after the warm-up > {limit_pct:g} %"]
    return []


# --- the whole load test ------------------------------------------------------------------------


def _preflight(config: LoadTestConfig, url: str) -> WindowPool:
    """Check the server, model and audio before any Locust run; typed errors, no load sent."""
    with SerClient(url, model=config.model, protocol=config.protocol, timeout_s=10.0) as client:
        contract, max_batch = client.contract, client.max_batch_size
    assert contract is not None
    if config.windows_per_request > max_batch:
        raise ConfigError(
            f"windows_per_request={config.windows_per_request}: model {config.model!r} takes at most "
            f"max_batch_size={max_batch} windows per request"
        )
    return build_window_pool(config.audio, contract=contract)


def _model_dir(config: LoadTestConfig) -> Path:
    assert config.repository is not None
    if not config.repository.is_dir():
        raise ConfigError(f"repository={str(config.repository)!r}: no such directory")
    model_dir = config.repository / config.model
    if not (model_dir / "config.pbtxt").is_file():
        models = sorted(p.name for p in config.repository.iterdir() if (p / "config.pbtxt").is_file())
        from client.errors import ModelNotFoundError

        raise ModelNotFoundError(f"model {config.model!r} is not in repository {config.repository}; it has {models}")
    return model_dir


def run_loadtest(config: LoadTestConfig, *, progress: TextIO | None = None) -> LoadTestReport:
    """Run the sweep (and the comparisons), then write the report.

    Args:
        config: what to run.
        progress: where one line per finished run goes (None: silent).

    Returns:
        :class:`LoadTestReport` (``passed`` False when a gate broke or a request failed).

    Raises:
        ConfigError: bad options. ModelNotFoundError: no such model.
        ServerUnavailableError: nothing answers at ``url``. ServerStartError: the local server failed.
        CorpusError: the audio source gave nothing usable. LocustRunError: Locust itself failed.
    """
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    locust_dir = out / "locust"
    runs: list[RunResult] = []
    report = LoadTestReport(config=config, runs=runs)

    def say(run: RunResult) -> None:
        if progress is not None:
            batch = f", batch {run.server.mean_batch_size:.2f}" if run.server else ""
            print(f"{run.scenario} u={run.users}: {run.windows_per_s:.1f} windows/s, p95 {run.p95_ms:g} ms, "
                  f"{run.failures} failures{batch}, exit {run.exit_code}", file=progress, flush=True)

    if config.url is not None:
        pool = _preflight(config, config.url)
        report.pool_windows, report.pool_clips = len(pool), pool.clips
        for users in config.sweep(SCENARIO_ON):
            runs.append(run_locust(config, scenario=SCENARIO_ON, url=config.url, users=users,
                                   metrics=config.metrics_url, out_dir=locust_dir, server_pid=config.server_pid))
            say(runs[-1])
    else:
        from deploy.local_triton import LocalTriton

        model_dir = _model_dir(config)
        for scenario in (SCENARIO_ON, *config.comparisons):
            run_config = config
            if config.compare_model and scenario == SCENARIO_MODEL.format(config.compare_model):
                run_config = replace(config, model=config.compare_model, compare_model=None)
            repo = write_scenario_repository(
                _model_dir(run_config), out / "repositories" / scenario,
                dynamic_batching=scenario != SCENARIO_OFF,
                instances=config.compare_instances if scenario == SCENARIO_INSTANCES.format(config.compare_instances) else None,
            )
            with LocalTriton(repo.parent, startup_timeout_s=config.startup_timeout_s,
                             log_path=out / f"tritonserver-{scenario}.log") as server:
                url = server.grpc_url if run_config.protocol == "grpc" else server.http_url
                pool = _preflight(run_config, url)
                report.pool_windows, report.pool_clips = len(pool), pool.clips
                if config.ort_baseline and not report.ort_slices:  # first half: before any load, server idle
                    report.ort_slices = (measure_ort(model_dir, pool, batch=config.ort_batch, seconds=config.ort_seconds / 2),)
                for users in config.sweep(scenario):
                    runs.append(run_locust(run_config, scenario=scenario, url=url, users=users,
                                           metrics=server.metrics_url, out_dir=locust_dir, server_pid=server.pid))
                    say(runs[-1])
        if config.ort_baseline:  # second half: servers stopped, the baseline has the CPU to itself as each server did
            after = measure_ort(model_dir, pool, batch=config.ort_batch, seconds=config.ort_seconds / 2)
            report.ort_slices = (*report.ort_slices, after)
            report.ort = combine_baselines(report.ort_slices)
    write_report(report)
    return report


# --- the report -------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:g}"
    return str(v)


def write_report(report: LoadTestReport) -> dict[str, Path]:
    """Write ``loadtest.{csv,md,png,json}`` into ``config.out_dir``; returns (and records) the paths."""
    out = report.config.out_dir
    rows = [r.row() for r in report.runs]
    files = {"csv": out / "loadtest.csv", "markdown": out / "loadtest.md", "plot": out / "loadtest.png", "json": out / "loadtest.json"}
    columns = list(rows[0]) if rows else list(RunResult.__dataclass_fields__)
    with open(files["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: _fmt(v) for k, v in row.items()} for row in rows)
    files["markdown"].write_text(_markdown(report, rows, columns))
    _plot(report, files["plot"])
    cfg = asdict(report.config)
    doc = {
        "config": json.loads(json.dumps(cfg, default=str)),
        "runs": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows],
        "gate_failures": {f"{r.scenario}-u{r.users}": list(r.gate_failures) for r in report.runs if r.gate_failures},
        "memory": {f"{r.scenario}-u{r.users}": {"warmup_end_s": r.warmup_end_s,
                                                 "samples": [[round(m.t_s, 2), m.server_bytes, m.stubs_bytes] for m in r.memory]}
                   for r in report.runs if r.memory},
        "ort_baseline": json.loads(json.dumps(asdict(report.ort), default=str)) if report.ort else None,
        "ort_baseline_slices": [json.loads(json.dumps(asdict(o), default=str)) for o in report.ort_slices],
        "ort_drift": None if math.isnan(report.ort_drift) else report.ort_drift,
        "batching_speedup": None if math.isnan(report.batching_speedup) else report.batching_speedup,
        "served_over_ort": None if math.isnan(report.ort_ratio) else report.ort_ratio,
        "pool": {"windows": report.pool_windows, "clips": report.pool_clips},
        "passed": report.passed,
        "headline": report.headline(),
    }
    files["json"].write_text(json.dumps(doc, indent=1) + "\n")
    report.files = files
    return files


def _markdown(report: LoadTestReport, rows: list[dict[str, Any]], columns: list[str]) -> str:
    c = report.config
    lines = [
        f"# Load test: `{c.model}` over {c.protocol}",
        "",
        f"{c.run_time_s} s measured per run"
        + (f" after a {c.warmup_s} s warm-up (statistics reset and server counters read when it ended; "
           "warm-up requests are counted apart and their failures still fail the run)" if c.warmup_s else "")
        + f", {c.windows_per_request} window(s) per request, audio: {c.audio.describe()} "
        f"({report.pool_windows} windows from {report.pool_clips} clips). Latencies are client-side (Locust, ms); "
        "batch size, queue and compute times come from Triton's metrics endpoint "
        "(Δnv_inference_count / Δnv_inference_exec_count, Δqueue_duration_us and Δcompute_infer_duration_us per request).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_fmt(row[k]) for k in columns) + " |" for row in rows]
    lines.append("")
    if report.ort is not None:
        o = report.ort
        lines.append(f"In-process ONNX Runtime, batch {o.batch}, {o.threads} thread(s): {o.windows_per_s:.1f} windows/s "
                     f"({o.ms_per_batch:.1f} ms per batch, {o.runs} runs).")
        if len(report.ort_slices) == 2:
            before, after = report.ort_slices
            lines.append(f"Its halves: {before.windows_per_s:.2f} windows/s before the load, {after.windows_per_s:.2f} after "
                         f"(drift {report.ort_drift:.0%}; above {DRIFT_WARNING:.0%} the machine's speed changed enough "
                         "during the run to move the served/ORT ratio by as much).")
    if not math.isnan(report.batching_speedup):
        lines.append(f"Dynamic batching on/off at {c.compare_users} users: {report.batching_speedup:.2f}x windows/s.")
    for scenario in (x for x in c.comparisons if x != SCENARIO_OFF):
        if not math.isnan(report.ratio(scenario)):
            lines.append(f"{scenario} / batching-on at {c.compare_users} users: {report.ratio(scenario):.2f}x windows/s.")
    if not math.isnan(report.ort_ratio):
        lines.append(f"Served (batching on, {c.compare_users} users) / in-process ORT batch {c.ort_batch}: {report.ort_ratio:.2f}x.")
    sampled = [r for r in report.runs if r.memory]
    if sampled:
        lines.append("Server + stub resident memory (sampled every "
                     f"{c.sample_interval_s:g} s; growth from the warm-up's end to the run's end, medians of the first and "
                     "last fifths): " + "; ".join(f"{r.scenario} u={r.users}: {r.rss_mib_end:.0f} MiB at the end, "
                                                 f"{_fmt(round(r.rss_growth_pct, 2))} %" for r in sampled) + ".")
    for r in report.runs:
        for g in r.gate_failures:
            lines.append(f"- gate failed in {r.scenario} u={r.users}: {g}")
    lines += ["", f"**{report.headline()}**", ""]
    return "\n".join(lines)


def _plot(report: LoadTestReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sampled = [r for r in report.runs if r.memory]
    fig, axes = plt.subplots(1, 3 if sampled else 2, figsize=(16.5 if sampled else 11, 4.2))
    lat, thr = axes[0], axes[1]
    on = [r for r in report.runs if r.scenario == SCENARIO_ON]
    off = [r for r in report.runs if r.scenario != SCENARIO_ON]
    users = [r.users for r in on]
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s-"), ("p99_ms", "^-")):
        lat.plot(users, [getattr(r, key) for r in on], style, label=f"{key[:3]} (batching on)")
    for r in off:
        lat.plot([r.users], [r.p95_ms], "x", markersize=10, label=f"p95 ({r.scenario}, {r.users} users)")
    lat.set_xlabel("concurrent users")
    lat.set_ylabel("latency (ms)")
    lat.set_title("Request latency")
    lat.legend(fontsize=8)
    lat.grid(alpha=0.3)
    thr.plot(users, [r.windows_per_s for r in on], "o-", label="served, batching on")
    for r in off:
        thr.plot([r.users], [r.windows_per_s], "x", markersize=10, label=f"served, {r.scenario} ({r.users} users)")
    if report.ort is not None:
        thr.axhline(report.ort.windows_per_s, color="gray", linestyle="--", label=f"in-process ORT, batch {report.ort.batch}")
    thr.set_xlabel("concurrent users")
    thr.set_ylabel("windows / s")
    thr.set_title("Throughput")
    thr.legend(fontsize=8)
    thr.grid(alpha=0.3)
    for ax in (lat, thr):
        if users:
            ax.set_xticks(sorted(set(users) | {r.users for r in off}))
    if sampled:
        mem = axes[2]
        for r in sampled:
            growth = r.rss_growth_pct
            label = f"{r.scenario} u={r.users} ({'n/a' if math.isnan(growth) else f'{growth:+.1f} %'} after warm-up)"
            line, = mem.plot([m.t_s - r.warmup_end_s for m in r.memory], [m.total_bytes / (1 << 20) for m in r.memory], "-", label=label)
            mem.plot([m.t_s - r.warmup_end_s for m in r.memory], [m.stubs_bytes / (1 << 20) for m in r.memory], ":",
                     color=line.get_color())
        mem.axvline(0, color="gray", linewidth=0.8)
        mem.set_xlabel("seconds after the warm-up")
        mem.set_ylabel("resident memory (MiB)")
        mem.set_title("Server + stubs (solid), stubs alone (dotted)")
        mem.legend(fontsize=7)
        mem.grid(alpha=0.3)
    fig.suptitle(f"{report.config.model} over {report.config.protocol}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the CLI's function ------------------------------------------------------------------------


def loadtest(
    *,
    repository: str | Path | None = None,
    url: str | None = None,
    metrics_url: str | None = None,
    model: str = DEFAULT_MODEL,
    protocol: str = "grpc",
    users: Sequence[int] = (1, 4, 16),
    run_time_s: int = 10,
    warmup_s: int = 0,
    windows_per_request: int = 1,
    audio_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    partition: str = "test",
    generated_clips: int = 8,
    max_p95_ms: float | None = None,
    max_p99_ms: float | None = None,
    max_failure_ratio: float | None = None,
    compare_batching: bool = False,
    compare_users: int = 16,
    compare_instances: int | None = None,
    compare_model: str | None = None,
    ort_baseline: bool = False,
    ort_batch: int = 8,
    out_dir: str | Path = DEFAULT_OUT,
    server_pid: int | None = None,
    max_rss_growth_pct: float | None = None,
    out: TextIO | None = None,
) -> int:
    """``ser loadtest``: run :func:`run_loadtest`, print a line per run and the headline.

    Returns:
        0 when every run passed (no failure, no broken gate), else 1.

    Raises:
        SerError subclasses (see :func:`run_loadtest`); the CLI prints them on one line.
    """
    out = out or sys.stdout
    config = LoadTestConfig(
        repository=Path(repository) if repository is not None else None,
        url=url, metrics_url=metrics_url, model=model, protocol=protocol, users=tuple(users),
        run_time_s=run_time_s, warmup_s=warmup_s, windows_per_request=windows_per_request,
        audio=AudioSourceConfig(audio_dir=audio_dir, manifest=manifest, partition=partition, generated_clips=generated_clips),
        thresholds=Thresholds(max_p95_ms=max_p95_ms, max_p99_ms=max_p99_ms, max_failure_ratio=max_failure_ratio),
        compare_batching=compare_batching, compare_users=compare_users, compare_instances=compare_instances,
        compare_model=compare_model, ort_baseline=ort_baseline, ort_batch=ort_batch,
        out_dir=Path(out_dir), server_pid=server_pid, max_rss_growth_pct=max_rss_growth_pct,
    )
    report = run_loadtest(config, progress=out)
    print(f"report: {report.files['markdown']} (+ .csv, .png, .json)", file=out)
    print(report.headline(), file=out, flush=True)
    return 0 if report.passed else 1
