"""What one ``ser loadtest`` does: :class:`LoadTestConfig` (checked on construction) and the scenario names.

A load test sweeps user counts in the ``batching-on`` scenario (the model as its repository
serves it); the comparisons (:attr:`LoadTestConfig.comparisons`) each add one scenario, run at
``compare_users`` users, whose repository copy :mod:`loadtest.scenarios` writes. With
:class:`LiveCalls` it sweeps live callers of the streaming model instead (:mod:`loadtest.live_calls`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from client.errors import ConfigError
from client.stream_service import STREAM_MODEL
from client.triton_client import DEFAULT_MODEL, PROTOCOLS, normalize_url
from loadtest.gates import Thresholds
from loadtest.payload import AudioSourceConfig

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOCUSTFILE_STREAM = Path(__file__).with_name("locustfile_stream.py")
#: The user class of ``locustfile_stream.py``: one caller placing live calls back to back.
LIVE_CALL_USER = "LiveCallUser"
DEFAULT_OUT = Path(".cache/loadtest")
SCENARIO_ON = "batching-on"
SCENARIO_OFF = "batching-off"
SCENARIO_INSTANCES = "instances-{}"  # batching on, N instances of the model
SCENARIO_MODEL = "model-{}"  # batching on, another model of the same repository (e.g. ser_fp32 vs ser_int8)
#: Longest single Locust run allowed (s): load tests here are bounded.
MAX_RUN_TIME_S = 3600


@dataclass(frozen=True)
class LiveCalls:
    """The live-call sweep (``ser loadtest --live-calls``): each Locust user is one caller of the streaming model.

    Attributes:
        stream_model: the streaming model the calls go to (written by ``ser repository ... --stream-model``).
        chunk_ms: audio per chunk, ms (1..10000); each chunk is sent once it has been spoken.
        max_update_lag_p99_ms: gate: fail a run whose p99 update lag (exact, ms) is above this (None: no limit).
    """

    stream_model: str = STREAM_MODEL
    chunk_ms: int = 100
    max_update_lag_p99_ms: float | None = None

    def __post_init__(self) -> None:
        if not self.stream_model:
            raise ConfigError("stream_model='': a streaming model name is required")
        if isinstance(self.chunk_ms, bool) or not isinstance(self.chunk_ms, int) or not 1 <= self.chunk_ms <= 10_000:
            raise ConfigError(f"chunk_ms={self.chunk_ms!r}: need whole milliseconds in 1..10000")
        limit = self.max_update_lag_p99_ms
        if limit is not None and not (isinstance(limit, (int, float)) and math.isfinite(limit) and limit > 0):
            raise ConfigError(f"max_update_lag_p99_ms={limit!r}: must be a finite number of milliseconds > 0 (or unset)")

    def cli_args(self) -> list[str]:
        """``locustfile_stream.py``'s options for these settings."""
        args = ["--stream-model", self.stream_model, "--chunk-ms", str(self.chunk_ms)]
        if self.max_update_lag_p99_ms is not None:
            args += ["--max-update-lag-p99-ms", repr(float(self.max_update_lag_p99_ms))]
        return args


def live_chunk_ms(text: str) -> int:
    """``--chunk-ms`` given as text, checked by :class:`LiveCalls` itself (raises its ConfigError)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"chunk_ms={text!r}: expected whole milliseconds") from None
    return LiveCalls(chunk_ms=value).chunk_ms


def live_lag_limit(text: str) -> float:
    """``--max-update-lag-p99-ms`` given as text, checked by :class:`LiveCalls` itself (raises its ConfigError)."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ConfigError(f"max_update_lag_p99_ms={text!r}: expected a number of milliseconds") from None
    return float(LiveCalls(max_update_lag_p99_ms=value).max_update_lag_p99_ms)


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
        locustfile: the Locust file each run loads (default: ``loadtest/locustfile.py``, window users;
            with ``live_calls``: ``loadtest/locustfile_stream.py``).
        user_classes: the Locust user classes to run (default: every class of ``locustfile``; with
            ``live_calls``: :data:`LIVE_CALL_USER`).
        live_calls: sweep live callers of the streaming model instead of window requests (gRPC, generated
            speech, no comparison; ``thresholds`` may set only ``max_failure_ratio``, judged per call).
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
    live_calls: LiveCalls | None = None

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
        if self.live_calls is not None:
            self._check_live_calls()

    def _check_live_calls(self) -> None:
        """Refuse what a live-call sweep cannot do; point it at the streaming locustfile and its caller."""
        refused = [name for name, given in (
            ("compare_batching", self.compare_batching), ("compare_instances", self.compare_instances is not None),
            ("compare_model", self.compare_model is not None), ("ort_baseline", self.ort_baseline),
            ("max_p95_ms", self.thresholds.max_p95_ms is not None), ("max_p99_ms", self.thresholds.max_p99_ms is not None),
            ("windows_per_request", self.windows_per_request != 1),
        ) if given]
        if refused:
            raise ConfigError(f"live_calls with {', '.join(refused)}: a live-call sweep runs no comparison and sends no "
                              "window requests; its latency gate is max_update_lag_p99_ms")
        if self.protocol != "grpc":
            raise ConfigError(f"live_calls with protocol={self.protocol!r}: live calls stream over gRPC only")
        if self.audio.kind != "generated":
            raise ConfigError(f"live_calls with audio {self.audio.describe()}: calls play generated speech "
                              "(give generated_clips, not an audio folder or manifest)")
        if self.locustfile == LOCUSTFILE:
            object.__setattr__(self, "locustfile", LOCUSTFILE_STREAM)
            object.__setattr__(self, "user_classes", self.user_classes or (LIVE_CALL_USER,))

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
