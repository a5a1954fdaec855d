"""``ser loadtest --live-calls``: how many real-time calls the streaming model holds, swept over callers.

Each Locust user is one caller (``LiveCallUser`` of ``loadtest/locustfile_stream.py``) placing calls
of generated speech back to back, each chunk sent once it has been spoken. One run per user count,
through :func:`loadtest.locust_run.run_locust` (warm-up, final statistics, memory gate), against a
running server (``url``, its gRPC port) or the local tritonserver serving ``repository`` as written.

Per run, from the exact times the locustfile recorded per request name (not Locust's rounded
histogram): calls placed and failed, the update lag (p50/p95/p99), the gap between updates
(p50/p99), the time to the first emotion (p50/p99) and END to the segments (p99). The hop, read from
the served model's config parameters (``ser.stream.hop_ms``, else the window model's hop), is the
bar: the headline names the most concurrent calls whose p99 update lag stayed under it with no
call failed. The report (``live-calls.md``, ``live-calls.json``) is :mod:`loadtest.live_calls_report`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from client.contract import ModelContract, string_parameters
from client.errors import ConfigError, ContractError, ModelNotFoundError
from client.stream_service import StreamSettings
from loadtest.gates import Thresholds, evaluate
from loadtest.locust_run import RunResult, exact_figures_by_name, named_rows, run_locust
from loadtest.run_config import LoadTestConfig

#: Locust's request type of every live-call record, and the request names ``locustfile_stream.py`` fires.
WORKLOAD = "stream"
SETUP = "setup"  # a caller whose stream did not open (failures only)
CALL = "call"  # END sent -> the call's segments; a refused or lost call fails here
FIRST_EMOTION = "time to first emotion"  # START -> the first update carrying a label
UPDATE_LAG = "update lag"  # the window's last sample spoken -> its update received
UPDATE_GAP = "update gap"  # between two consecutive updates of a call
SCENARIO = "live-calls"
#: What ``ser repository`` writes a streaming model with (named when a server or repository has none).
HOW_TO_WRITE = "ser repository EXPORT_DIR --out REPO --stream-model"


@dataclass(frozen=True)
class LiveCallRun:
    """One run at one number of concurrent callers.

    Attributes:
        run: Locust's run (its ``p50_ms``... mix every request name: use :meth:`ms`).
        calls: calls placed (``call`` records, failed ones included, plus each failed opening of a caller's stream).
        failed_calls: of them failed (refused, lost, timed out, or never started).
        figures: ``{request name: {"requests": n, "p50_ms", "p90_ms", "p95_ms", "p99_ms"}}``, exact, ms.
        gate_failures: the run's broken gates (the locustfile's update-lag gate, memory, and the failed-call ratio).
    """

    run: RunResult
    calls: int
    failed_calls: int
    figures: dict[str, dict[str, float]]
    gate_failures: tuple[str, ...]

    @property
    def users(self) -> int:
        """Concurrent callers."""
        return self.run.users

    def ms(self, name: str, q: int) -> float:
        """The exact ``q``-th percentile of ``name``'s times, ms (NaN when none was recorded)."""
        return float(self.figures.get(name, {}).get(f"p{q}_ms", math.nan))

    @property
    def updates(self) -> int:
        """Updates received (each has a lag)."""
        return int(self.figures.get(UPDATE_LAG, {}).get("requests", 0))

    @property
    def passed(self) -> bool:
        """Locust exited 0 (no failure) and no gate broke."""
        return self.run.exit_code == 0 and not self.gate_failures

    def held(self, hop_ms: float) -> bool:
        """Every call completed and the p99 update lag stayed under one hop."""
        lag = self.ms(UPDATE_LAG, 99)
        return self.calls > 0 and self.failed_calls == 0 and self.updates > 0 and lag < hop_ms

    def row(self) -> dict[str, Any]:
        """The report's columns (ms rounded to 0.1; NaN where nothing was recorded)."""
        def r(name: str, q: int) -> float:
            return round(self.ms(name, q), 1)

        return {
            "users": self.users, "calls": self.calls, "failed_calls": self.failed_calls, "updates": self.updates,
            "update_lag_p50_ms": r(UPDATE_LAG, 50), "update_lag_p95_ms": r(UPDATE_LAG, 95), "update_lag_p99_ms": r(UPDATE_LAG, 99),
            "update_gap_p50_ms": r(UPDATE_GAP, 50), "update_gap_p99_ms": r(UPDATE_GAP, 99),
            "first_emotion_p50_ms": r(FIRST_EMOTION, 50), "first_emotion_p99_ms": r(FIRST_EMOTION, 99),
            "end_to_segments_p99_ms": r(CALL, 99), "exit_code": self.run.exit_code,
        }


@dataclass
class LiveCallReport:
    """The sweep: its runs, the hop they are judged against, and the files written.

    Attributes:
        config: the configuration (``config.live_calls`` set).
        hop_ms: the served streaming model's hop, ms: the update lag a call can afford.
        runs: one per user count, in order.
        files: ``{"markdown", "json"}`` -> written paths.
    """

    config: LoadTestConfig
    hop_ms: float
    runs: list[LiveCallRun] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def stream_model(self) -> str:
        """The streaming model called."""
        assert self.config.live_calls is not None
        return self.config.live_calls.stream_model

    @property
    def passed(self) -> bool:
        """Every run passed."""
        return all(r.passed for r in self.runs)

    @property
    def most_held(self) -> int | None:
        """The most concurrent calls held: p99 update lag under one hop, no call failed (None: no count held)."""
        held = [r.users for r in self.runs if r.held(self.hop_ms)]
        return max(held) if held else None

    def gate_lines(self) -> list[str]:
        """Why the sweep failed, one line per broken gate or run with failures (empty when it passed)."""
        lines = [f"gate failed at {r.users} callers: {g}" for r in self.runs for g in r.gate_failures]
        for r in self.runs:
            log = r.run.stats_csv.parent / f"{SCENARIO}-u{r.users}.log"
            if r.run.exit_code and not r.gate_failures:
                failed = r.failed_calls + r.run.warmup_failures
                what = f"{failed} failed (calls, or any record of the warm-up)" if failed else f"Locust exited {r.run.exit_code}"
                lines.append(f"{r.users} callers: {what} (Locust's log: {log})")
        return lines

    def headline(self) -> str:
        """One line: the most concurrent calls held under one hop, and the verdict."""
        if not self.runs:
            return "no run"
        most = self.most_held
        held = (f"the most concurrent real-time calls held with p99 update lag under one hop ({self.hop_ms:g} ms): "
                + (f"{most}" if most is not None else f"none of {', '.join(str(r.users) for r in self.runs)}"))
        at = next((r for r in self.runs if r.users == most), None) or self.runs[-1]
        figures = (f"at {at.users}: update lag p50/p95/p99 {at.ms(UPDATE_LAG, 50):.0f}/{at.ms(UPDATE_LAG, 95):.0f}/"
                   f"{at.ms(UPDATE_LAG, 99):.0f} ms, {at.calls} calls, {at.failed_calls} failed")
        return f"{self.stream_model}: {held}; {figures}; {'PASSED' if self.passed else 'FAILED'}"


def stream_hop_ms(url: str, model: str, *, timeout_s: float = 10.0) -> float:
    """The hop ``model`` answers updates at, ms, from its config on the server at ``url`` (gRPC ``HOST:PORT``).

    ``ser.stream.hop_ms`` of the config parameters, or the window model's hop (``ser.hop_samples``) when 0.

    Raises:
        ServerUnavailableError: nothing answers. ModelNotFoundError: no ready model of that name (the message
        says how to write one). ContractError: the model is not a streaming (decoupled) model.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from client.client_options import TransportOptions
    from client.error_mapping import translate_error

    # A loopback server is reached directly: gRPC would send even 127.0.0.1 through a proxy of the environment.
    client = grpcclient.InferenceServerClient(url, **TransportOptions().grpc_client_kwargs(url))
    try:
        try:
            ready = client.is_model_ready(model, client_timeout=timeout_s)
            raw = client.get_model_config(model, as_json=True, client_timeout=timeout_s) if ready else None
        except InferenceServerException as exc:
            error = translate_error(exc, url=url, model=model, protocol="grpc", what="model config", timeout_s=timeout_s)
            if not isinstance(error, ModelNotFoundError):
                raise error from None
            raw = None
        if raw is None:
            raise ModelNotFoundError(f"{url}: no ready streaming model {model!r} on this server{_ready_models(client)}; "
                                     f"write one with `{HOW_TO_WRITE}` and serve it")
    finally:
        client.close()
    config = raw.get("config", raw)
    if not (config.get("model_transaction_policy") or {}).get("decoupled"):
        raise ContractError(f"{url}: model {model!r} is not a streaming model (not decoupled); "
                            f"give --stream-model the one `{HOW_TO_WRITE}` wrote")
    params = string_parameters(config)
    contract = ModelContract.from_parameters(params, model=model)
    return StreamSettings.from_parameters(params, model=model).hop_samples(contract) * 1000.0 / contract.sample_rate


def _ready_models(client) -> str:
    """`` (ready: [...])`` from the server's repository index, or nothing when it is not readable."""
    try:
        index = client.get_model_repository_index(as_json=True).get("models", [])
    except Exception:  # noqa: BLE001 - a server may restrict its repository API: the list is a courtesy
        return ""
    return f" (ready: {sorted(m['name'] for m in index if m.get('state') == 'READY')})"


def _live_run(config: LoadTestConfig, run: RunResult) -> LiveCallRun:
    """Calls, failures and exact figures per name of one finished run; the failed-call ratio judged on calls."""
    rows = {name: row for name, row in named_rows(run.stats_csv).items() if row.get("Type") == WORKLOAD}

    def count(name: str, column: str) -> int:
        text = rows.get(name, {}).get(column, "0") or "0"
        return int(float(text))

    calls = count(CALL, "Request Count") + count(SETUP, "Request Count")
    failed = count(CALL, "Failure Count") + count(SETUP, "Failure Count")
    ratio = Thresholds(max_failure_ratio=config.thresholds.max_failure_ratio)
    broken = [f"calls: {line}" for line in evaluate(ratio, requests=calls, failures=failed, p95_ms=0.0, p99_ms=0.0)]
    return LiveCallRun(run=run, calls=calls, failed_calls=failed, figures=exact_figures_by_name(run.stats_csv),
                       gate_failures=(*run.gate_failures, *broken))


def run_live_calls(config: LoadTestConfig, *, progress: TextIO | None = None) -> LiveCallReport:
    """Sweep ``config.users`` concurrent callers of the streaming model, then write the report.

    Raises:
        ConfigError: not a live-call configuration, or a repository without the streaming model.
        ModelNotFoundError, ContractError, ServerUnavailableError: see :func:`stream_hop_ms` (before any load).
        ServerStartError: the local server failed. LocustRunError: Locust itself failed.
    """
    from loadtest.live_calls_report import write_live_report

    live = config.live_calls
    if live is None:
        raise ConfigError("run_live_calls needs a LoadTestConfig with live_calls=LiveCalls(...)")
    config.out_dir.mkdir(parents=True, exist_ok=True)

    def sweep(url: str, server_pid: int | None) -> LiveCallReport:
        report = LiveCallReport(config=config, hop_ms=stream_hop_ms(url, live.stream_model))
        for users in config.users:
            run = run_locust(config, scenario=SCENARIO, url=url, users=users, metrics=None,
                             out_dir=config.out_dir / "locust", server_pid=server_pid)
            report.runs.append(_live_run(config, run))
            if progress is not None:
                r = report.runs[-1]
                print(f"{SCENARIO} u={users}: {r.calls} calls, {r.failed_calls} failed, update lag p50/p95/p99 "
                      f"{r.ms(UPDATE_LAG, 50):.0f}/{r.ms(UPDATE_LAG, 95):.0f}/{r.ms(UPDATE_LAG, 99):.0f} ms, "
                      f"exit {run.exit_code}", file=progress, flush=True)
        return report

    if config.url is not None:
        report = sweep(config.url, config.server_pid)
    else:
        from deploy.local_triton import LocalTriton

        assert config.repository is not None
        if not (config.repository / live.stream_model / "config.pbtxt").is_file():
            raise ConfigError(f"repository={str(config.repository)!r}: no streaming model {live.stream_model!r} in it; "
                              f"write one with `{HOW_TO_WRITE}`")
        with LocalTriton(config.repository, startup_timeout_s=config.startup_timeout_s,
                         log_path=config.out_dir / f"tritonserver-{SCENARIO}.log") as server:
            report = sweep(server.grpc_url, server.pid)
    write_live_report(report)
    return report


def live_calls(config: LoadTestConfig, *, out: TextIO) -> int:
    """``ser loadtest --live-calls``: run the sweep, print a line per run, the table, each broken gate and the headline.

    Returns:
        0 when every run passed, else 1.

    Raises:
        SerError subclasses (see :func:`run_live_calls`); the CLI prints them on one line.
    """
    from loadtest.live_calls_report import table_lines

    report = run_live_calls(config, progress=out)
    print(f"report: {report.files['markdown']} (+ .json)", file=out)
    print("\n".join(table_lines(report)), file=out)
    for line in report.gate_lines():
        print(line, file=out)
    print(report.headline(), file=out, flush=True)
    return 0 if report.passed else 1

