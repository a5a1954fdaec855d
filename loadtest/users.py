"""Locust users over tritonclient: transport and timing here, scenarios in the locustfile.

:class:`TritonUser` is abstract (after locust's ``examples/grpc``): it
opens its own tritonclient connection (gRPC or HTTP), sends the served model's
real audio windows, times each call itself and fires Locust's ``request`` event
with the typed exception on failure. A locustfile subclasses it and only
declares tasks (``self.infer_next()``).

gRPC inside Locust needs ``grpc.experimental.gevent.init_gevent()`` before any
channel is made, or every user's call blocks the whole process (users run
serially and the server never sees concurrent requests to batch): it is called
when this module is imported, right after locust (which monkey-patches).
``tritonclient.http`` runs on geventhttpclient and needs nothing.

Options (added by :func:`add_arguments` through Locust's
``init_command_line_parser`` hook, shown in the web UI too):
``--model``, ``--protocol``, ``--windows-per-request``, ``--audio-dir`` |
``--manifest`` [``--partition``] | (neither: generated speech),
``--generated-clips``, ``--client-timeout-s``, and the gates
``--max-p95-ms``, ``--max-p99-ms``, ``--max-failure-ratio`` that
:func:`gate_failures` checks when Locust quits, on exact percentiles of every response time
this process recorded, kept per request name (a worker hands its times to the master with each
report), not on Locust's histogram, which rounds them. A missing ``--manifest`` or ``--audio-dir`` ends the run
at start with one ``error:`` line (:func:`check_audio_source`).

``--warmup-s S`` measures the steady state: S seconds after the test starts,
:func:`end_warmup` resets Locust's statistics (so throughput and percentiles
cover only what follows) and, with ``--warmup-marker F``, writes F as JSON
(``{"requests", "failures", "time"}`` of the warm-up) for a runner that reads the
server's counters at the same moment; without a warm-up F is written when the test starts. Warm-up failures are not forgiven: they
count towards ``--max-failure-ratio`` and any of them makes the exit code 1.
(Locust's own ``--reset-stats`` resets when spawning ends, before a dynamic
batcher's first part-full batches of a slow model have cleared.) In master/worker
mode the master resets, on the counts its workers have reported so far (every 3 s):
the boundary is that coarse there.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import locust  # noqa: F401 - monkey-patches the standard library before grpc sets up
from locust import User
from locust.exception import StopUser

import grpc.experimental.gevent as grpc_gevent  # isort: skip

grpc_gevent.init_gevent()  # before any channel is created, or users run one after another

from client.contract import (  # noqa: E402
    INPUT_NUM_SAMPLES,
    INPUT_WAVEFORM,
    OUTPUT_LOGITS,
    OUTPUT_PROBABILITIES,
    ModelContract,
)
from client.errors import ConfigError, ContractError, SerError  # noqa: E402
from client.option_values import arg_type, one_of, positive_float, positive_int, seconds  # noqa: E402
from client.timing import percentile  # noqa: E402
from client.triton_client import DEFAULT_MODEL, PROTOCOLS, SerClient, normalize_url, translate_error  # noqa: E402
from loadtest.gates import (  # noqa: E402
    CLIENT_TIMEOUT_S,
    GATE_PREFIX,
    PERCENTILES,
    Thresholds,
    evaluate,
    exact_figures_path,
    limit_check,
)
from loadtest.payload import AudioSourceConfig, build_window_pool, source_files  # noqa: E402

log = logging.getLogger("loadtest")

#: Distinct requests prepared per process (cycled by every user).
REQUESTS_IN_POOL = 32


# --- options -------------------------------------------------------------------------


def add_arguments(parser) -> None:
    """Register the load test's options on Locust's parser (``init_command_line_parser`` hook)."""
    group = parser  # locust's own parser: its ``include_in_web_ui`` keyword is not known to argument groups
    group.add_argument("--model", default=DEFAULT_MODEL, help="model name in the repository", include_in_web_ui=True)
    group.add_argument("--protocol", default="grpc", type=arg_type(one_of(PROTOCOLS)), help="grpc or http", include_in_web_ui=True)
    group.add_argument(
        "--windows-per-request", type=arg_type(positive_int), default=1,
        help="windows (batch rows) per request, <= the model's max_batch_size", include_in_web_ui=True,
    )
    group.add_argument("--audio-dir", default="", help="folder of audio files (recursive)", include_in_web_ui=True)
    group.add_argument("--manifest", default="", help="split manifest JSON (training.folds)", include_in_web_ui=True)
    group.add_argument("--partition", default="test", help="manifest partition (default: test, the held-out actors)")
    group.add_argument("--generated-clips", type=arg_type(positive_int), default=8,
                       help="synthetic clips when neither --audio-dir nor --manifest is given")
    group.add_argument("--client-timeout-s", type=arg_type(positive_float), default=CLIENT_TIMEOUT_S,
                       help=f"per-request time limit (s; default {CLIENT_TIMEOUT_S:g})")
    group.add_argument("--max-p95-ms", type=arg_type(limit_check("max_p95_ms")), default=None,
                       help="fail (exit 1) when p95 latency exceeds this (ms)", include_in_web_ui=True)
    group.add_argument("--max-p99-ms", type=arg_type(limit_check("max_p99_ms")), default=None,
                       help="fail (exit 1) when p99 latency exceeds this (ms)", include_in_web_ui=True)
    group.add_argument("--max-failure-ratio", type=arg_type(limit_check("max_failure_ratio")),
                       default=None, help="fail (exit 1) when failed/all requests exceeds this", include_in_web_ui=True)
    group.add_argument("--warmup-s", type=arg_type(seconds), default=0.0, include_in_web_ui=True,
                       help="reset the statistics this many seconds after the start: report the steady state "
                            "(warm-up failures still count; default 0: no warm-up)")
    group.add_argument("--warmup-marker", default="",
                       help="write this JSON file (warm-up requests, failures, time) when the statistics start: when "
                            "the --warmup-s warm-up ends, or when the test starts without one")
    group.add_argument("--final-stats", default="",
                       help="write Locust's statistics table with the run's final totals to this CSV file when it quits "
                            "(Locust's own --csv table is rewritten once a second, not at exit)")


#: What :func:`end_warmup` keeps of the warm-up on the environment (its counts are gone from the stats).
WARMUP_ATTRIBUTE = "ser_warmup"

#: Key of the response times a worker sends its master with each report.
TIMES_KEY = "ser_response_times"

#: Every request's response time (ms, unrounded) since the start or the warm-up's end, in this process,
#: by request name. Locust's own percentiles come from a histogram that rounds times above 100 ms to two
#: significant digits (254 ms is counted as 250): a gate judged on them passes a run whose every request broke it.
_response_times: dict[str, list[float]] = {}


def record_response_time(name: str, response_time: float, **_kwargs) -> None:
    """``request`` hook: keep the request's exact response time (ms), failed requests included as Locust does."""
    _response_times.setdefault(str(name), []).append(float(response_time))


def send_response_times(data: dict, **_kwargs) -> None:
    """``report_to_master`` hook (a worker): hand the times recorded since the last report to the master."""
    data[TIMES_KEY] = {name: list(times) for name, times in _response_times.items()}
    _response_times.clear()


def receive_response_times(data: dict, **_kwargs) -> None:
    """``worker_report`` hook (the master): keep a worker's times."""
    for name, times in (data.get(TIMES_KEY) or {}).items():
        _response_times.setdefault(name, []).extend(times)


def exact_percentiles(name: str | None = None) -> dict[str, float]:
    """``{"p50_ms": ..., "p99_ms": ...}`` (:data:`~loadtest.gates.PERCENTILES`) of the recorded times.

    ``name``: one request name's times only (None: every request's). Empty without any time.
    """
    times = _response_times.get(name, []) if name is not None else [t for ts in _response_times.values() for t in ts]
    if not times:
        return {}
    return {f"p{q}_ms": percentile(times, q) for q in PERCENTILES}


def end_warmup(environment, *, marker: str = "") -> dict[str, float]:
    """End the warm-up: keep its counts, reset Locust's statistics, write ``marker`` (JSON) if given.

    Returns:
        ``{"requests": n, "failures": f, "time": unix seconds}`` of the warm-up.
    """
    total = environment.stats.total
    warmup = {"requests": int(total.num_requests), "failures": int(total.num_failures), "time": time.time()}
    setattr(environment, WARMUP_ATTRIBUTE, warmup)
    environment.stats.reset_all()
    _response_times.clear()
    if marker:
        with open(marker, "w") as fh:
            json.dump(warmup, fh)
    if warmup["requests"]:
        log.info("warm-up over after %d requests (%d failed): statistics reset", warmup["requests"], warmup["failures"])
    return warmup


def schedule_warmup(environment) -> None:
    """``test_start`` hook: call :func:`end_warmup` ``--warmup-s`` seconds from now (not on workers).

    Without a warm-up, ``--warmup-marker`` is written at once: the statistics start with the test, and a
    runner reading the server's counters opens its window then, not when the Locust process started.
    """
    import gevent  # noqa: PLC0415 - Locust's own dependency
    from locust.runners import WorkerRunner  # noqa: PLC0415

    options = environment.parsed_options
    seconds = float(getattr(options, "warmup_s", 0.0) or 0.0)
    marker = getattr(options, "warmup_marker", "") or ""
    if isinstance(environment.runner, WorkerRunner):
        return
    if seconds > 0:
        gevent.spawn_later(seconds, end_warmup, environment, marker=marker)
    elif marker:
        end_warmup(environment, marker=marker)


def source_from(options: Any) -> AudioSourceConfig:
    """The audio source the options name (``--audio-dir``, ``--manifest`` [``--partition``], or generated speech)."""
    return AudioSourceConfig(
        audio_dir=getattr(options, "audio_dir", "") or None,
        manifest=getattr(options, "manifest", "") or None,
        partition=getattr(options, "partition", "test"),
        generated_clips=getattr(options, "generated_clips", 8),
    )


def check_audio_source(environment) -> None:
    """``init`` hook: a missing manifest or audio folder ends the run at once, with one ``error:`` line.

    Without it every user would find the same missing file at its start and report it: one failed
    ``setup`` request per user and nothing else.

    Raises:
        SystemExit: (code 1) the audio source is unusable.
    """
    from locust.runners import MasterRunner  # noqa: PLC0415

    options = environment.parsed_options
    if options is None or isinstance(environment.runner, MasterRunner):  # a master sends nothing: its workers check
        return
    try:
        source_files(source_from(options))
    except SerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def thresholds_from(options: Any) -> Thresholds:
    """The gates set on the command line (raises ConfigError for a bad combination)."""
    return Thresholds(
        max_p95_ms=getattr(options, "max_p95_ms", None),
        max_p99_ms=getattr(options, "max_p99_ms", None),
        max_failure_ratio=getattr(options, "max_failure_ratio", None),
    )


def gate_failures(environment) -> list[str]:
    """Check the run's totals against the gates (``quitting`` hook); sets the exit code to 1 on a breach.

    Returns:
        One line per broken limit (also logged with :data:`GATE_PREFIX`).
    """
    from locust.runners import WorkerRunner  # noqa: PLC0415

    if isinstance(environment.runner, WorkerRunner):
        return []  # the master judges the aggregated stats
    try:
        thresholds = thresholds_from(environment.parsed_options)
    except ConfigError as exc:
        broken = [f"bad limits: {exc}"]
    else:
        total = environment.stats.total
        warmup = getattr(environment, WARMUP_ATTRIBUTE, {"requests": 0, "failures": 0})
        exact = exact_percentiles()
        broken = evaluate(
            thresholds,
            requests=total.num_requests + warmup["requests"],
            failures=total.num_failures + warmup["failures"],
            p95_ms=exact.get("p95_ms", 0.0),
            p99_ms=exact.get("p99_ms", 0.0),
        )
    for line in broken:
        log.error("%s%s", GATE_PREFIX, line)
    if broken or getattr(environment, WARMUP_ATTRIBUTE, {}).get("failures"):
        environment.process_exit_code = 1  # as Locust does for any failure, which the reset hid
    return broken


def write_final_stats(environment) -> Path | None:
    """Write Locust's statistics table with the run's final totals to ``--final-stats`` (``quitting`` hook).

    The table is Locust's own ``_stats.csv`` format (one row per request name and ``Aggregated``).
    Locust rewrites its ``--csv`` table once a second and not when it exits, so that one can miss the
    last second of a run; the runner reads this one. Beside it, :func:`~loadtest.gates.exact_figures_path`
    gets the exact percentiles the gates judged (``{"requests", "p50_ms", "p90_ms", "p95_ms", "p99_ms"}``,
    ms), which the table rounds, and the same per request name (``"by_name": {name: {...}}``).

    Returns:
        The file written, or ``None`` (no ``--final-stats``, or a worker process).
    """
    import csv  # noqa: PLC0415

    from locust.runners import WorkerRunner  # noqa: PLC0415
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV  # noqa: PLC0415

    target = getattr(environment.parsed_options, "final_stats", "")
    if not target or isinstance(environment.runner, WorkerRunner):
        return None
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        StatsCSV(environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(fh))
    by_name = {name: {"requests": len(times), **exact_percentiles(name)} for name, times in _response_times.items()}
    total = sum(len(times) for times in _response_times.values())
    exact_figures_path(path).write_text(json.dumps({"requests": total, **exact_percentiles(), "by_name": by_name}))
    return path


# --- what every user of one process shares ------------------------------------------------


def install_listeners(events) -> None:
    """Register the bundle's Locust listeners on ``locust.events``: options, exact response times, warm-up, gates.

    Each locustfile calls this once at import (Locust loads one locustfile per run).
    """
    events.init_command_line_parser.add_listener(lambda parser, **_kwargs: add_arguments(parser))
    events.init.add_listener(lambda environment, **_kwargs: check_audio_source(environment))
    events.request.add_listener(record_response_time)
    events.report_to_master.add_listener(send_response_times)
    events.worker_report.add_listener(receive_response_times)
    events.test_start.add_listener(lambda environment, **_kwargs: schedule_warmup(environment))
    events.quitting.add_listener(lambda environment, **_kwargs: gate_failures(environment))
    events.quitting.add_listener(lambda environment, **_kwargs: write_final_stats(environment))


@dataclass(frozen=True)
class _Shared:
    contract: ModelContract
    max_batch_size: int
    inputs: list  # per request: ([InferInput, InferInput], [InferRequestedOutput x2], windows)
    source: str


_shared: dict[tuple, _Shared | SerError] = {}
_shared_lock = threading.Lock()  # a gevent lock once locust has monkey-patched


def _tc(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as tc  # noqa: PLC0415
    else:
        import tritonclient.http as tc  # noqa: PLC0415
    return tc


def shared_setup(*, url: str, model: str, protocol: str, windows_per_request: int, source: AudioSourceConfig,
                 timeout_s: float) -> _Shared:
    """Read the model's contract from the server and prepare the requests, once per process.

    Raises:
        ServerUnavailableError, ModelNotFoundError, ContractError: from the server check.
        CorpusError: the audio source gave nothing usable.
        ConfigError: ``windows_per_request`` exceeds the model's ``max_batch_size``.
    """
    key = (url, model, protocol, windows_per_request, source)
    with _shared_lock:
        cached = _shared.get(key)
        if isinstance(cached, SerError):
            raise cached
        if cached is not None:
            return cached
        try:
            with SerClient(url, model=model, protocol=protocol, timeout_s=timeout_s) as client:
                contract, max_batch = client.contract, client.max_batch_size
            assert contract is not None
            if windows_per_request > max_batch:
                raise ConfigError(
                    f"windows_per_request={windows_per_request}: model {model!r} takes at most "
                    f"max_batch_size={max_batch} windows per request"
                )
            pool = build_window_pool(source, contract=contract)
            tc = _tc(protocol)
            inputs = []
            for wav, ns in pool.requests(windows_per_request=windows_per_request, count=REQUESTS_IN_POOL):
                a = tc.InferInput(INPUT_WAVEFORM, list(wav.shape), "FP32")
                a.set_data_from_numpy(wav)
                b = tc.InferInput(INPUT_NUM_SAMPLES, list(ns.shape), "INT64")
                b.set_data_from_numpy(ns)
                outs = [tc.InferRequestedOutput(OUTPUT_LOGITS), tc.InferRequestedOutput(OUTPUT_PROBABILITIES)]
                inputs.append(([a, b], outs, wav.shape[0]))
            shared = _Shared(contract=contract, max_batch_size=max_batch, inputs=inputs, source=pool.source)
        except SerError as exc:
            _shared[key] = exc
            raise
        _shared[key] = shared
        return shared


# --- the user ---------------------------------------------------------------------------


class TritonUser(User):
    """An abstract Locust user that sends the served model's real windows to Triton.

    Subclasses declare tasks that call :meth:`infer_next`. Class attributes left
    None are taken from the command-line options.

    Attributes:
        model: model name (``--model``).
        protocol: ``grpc`` or ``http`` (``--protocol``).
        windows_per_request: k, batch rows per request (``--windows-per-request``).
    """

    abstract = True
    model: str | None = None
    protocol: str | None = None
    windows_per_request: int | None = None
    _ids = 0

    def __init__(self, environment) -> None:
        super().__init__(environment)
        opts = environment.parsed_options
        self.model = self.model or getattr(opts, "model", DEFAULT_MODEL)
        self.protocol = self.protocol or getattr(opts, "protocol", "grpc")
        self.windows_per_request = self.windows_per_request or getattr(opts, "windows_per_request", 1)
        self.timeout_s = float(getattr(opts, "client_timeout_s", 30.0))
        self.source = source_from(opts)
        if not self.host:
            raise ConfigError("no --host: give the Triton server's HOST:PORT (gRPC or HTTP port to match --protocol)")
        self.url = normalize_url(self.host, protocol=self.protocol)
        self._client = None
        self._shared: _Shared | None = None
        TritonUser._ids += 1
        self._next = (TritonUser._ids * 7) % REQUESTS_IN_POOL
        self.request_name = f"{self.model} x{self.windows_per_request}"

    def on_start(self) -> None:
        """Prepare the requests (once per process) and open this user's connection."""
        t0 = time.perf_counter()
        try:
            self._shared = shared_setup(
                url=self.url, model=self.model, protocol=self.protocol, windows_per_request=self.windows_per_request,
                source=self.source, timeout_s=self.timeout_s,
            )
            tc = _tc(self.protocol)
            if self.protocol == "grpc":
                self._client = tc.InferenceServerClient(self.url)
            else:
                self._client = tc.InferenceServerClient(
                    self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
        except SerError as exc:
            # Reported as a failed "setup" request; the first task stops the user (StopUser raised here, in
            # on_start, would make Locust log a traceback per user).
            self._fire("setup", t0, 0, exc)

    def on_stop(self) -> None:
        """Close the connection (an open HTTP keep-alive would hold a stopping server)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110 - best effort
                pass

    def _fire(self, name: str, t0: float, length: int, exc: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type=self.protocol,
            name=name,
            response_time=(time.perf_counter() - t0) * 1000.0,
            response_length=length,
            response=None,
            context={"model": self.model, "windows": self.windows_per_request},
            exception=exc,
            url=self.url,
        )

    def infer_next(self) -> None:
        """Send the next prepared request, time it, and report it to Locust.

        A transport or server error is reported as a failure carrying the typed
        :class:`~client.errors.SerError` (one line, no request id), so Locust
        groups equal errors; a response lacking the outputs is a ContractError.
        """
        if self._client is None or self._shared is None:
            raise StopUser()
        inputs, outputs, k = self._shared.inputs[self._next]
        self._next = (self._next + 1) % len(self._shared.inputs)
        kw = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        t0 = time.perf_counter()
        length, error = 0, None
        try:
            result = self._client.infer(self.model, inputs, outputs=outputs, **kw)
            probs = result.as_numpy(OUTPUT_PROBABILITIES)
            logits = result.as_numpy(OUTPUT_LOGITS)
            if probs is None or logits is None or probs.shape != (k, self._shared.contract.num_labels):
                raise ContractError(
                    f"model {self.model!r}: response lacks {OUTPUT_PROBABILITIES!r} [{k}, "
                    f"{self._shared.contract.num_labels}] (got {None if probs is None else list(probs.shape)})"
                )
            length = probs.nbytes + logits.nbytes
        except Exception as exc:  # noqa: BLE001 - every failure is reported, typed
            error = translate_error(exc, url=self.url, model=self.model, protocol=self.protocol, what="infer")
        self._fire(self.request_name, t0, length, error)
