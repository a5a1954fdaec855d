"""What a load test measured, and its report files.

:class:`LoadTestReport` holds the runs, the in-process baseline and the ratios between them
(:meth:`~LoadTestReport.headline` says them in one line); :func:`write_report` writes into the
configuration's ``out_dir``:

* ``loadtest.csv``: one row per run (scenario, users, requests, failures,
  throughput in requests/s and windows/s, p50/p90/p95/p99/avg/max latency in ms,
  and from Triton's metrics: inferences, executions, mean executed batch size,
  queue and compute µs per request, server successes/failures, exit code);
* ``loadtest.md``: the same as a markdown table, with the comparison lines;
* ``loadtest.png``: latency percentiles and throughput against users, and the server's and
  its stubs' resident memory over each run (when the server runs on this host);
* ``loadtest.json``: everything above plus the configuration.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.locust_run import RunResult
from loadtest.ort_baseline import DRIFT_WARNING, OrtBaseline
from loadtest.run_config import SCENARIO_OFF, SCENARIO_ON, LoadTestConfig


@dataclass
class LoadTestReport:
    """What :func:`loadtest.runner.run_loadtest` measured and wrote.

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
            parts.append(f"server + stub memory {on.rss_mib_end:.0f} MiB, {on.rss_growth_pct:+.1f} % {growth_span(on)}")
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


def growth_span(run: RunResult) -> str:
    """Over what a run's memory growth was measured: after its warm-up, or over the whole run when it had none."""
    return "after the warm-up" if run.warmup_s else "over the run (no warm-up)"


def gate_lines(report: LoadTestReport) -> list[str]:
    """Why a report failed, one line per broken gate or run with failed requests (empty when it passed)."""
    lines = [f"gate failed in {r.scenario} u={r.users}: {g}" for r in report.runs for g in r.gate_failures]
    for r in report.runs:
        failed = r.failures + r.warmup_failures
        if r.exit_code and failed:
            lines.append(f"{r.scenario} u={r.users}: {failed} of {r.requests + r.warmup_requests} requests failed "
                         f"(Locust's log: {r.stats_csv.parent / f'{r.scenario}-u{r.users}.log'})")
        elif r.exit_code and not r.gate_failures:
            lines.append(f"{r.scenario} u={r.users}: Locust exited {r.exit_code} "
                         f"(its log: {r.stats_csv.parent / f'{r.scenario}-u{r.users}.log'})")
    return lines


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
                     f"{c.sample_interval_s:g} s; growth from the {'warm-up' if c.warmup_s else 'measured window'}'s "
                     "start to the run's end, medians of the first and last fifths): " + "; ".join(f"{r.scenario} u={r.users}: {r.rss_mib_end:.0f} MiB at the end, "
                                                 f"{_fmt(round(r.rss_growth_pct, 2))} %" for r in sampled) + ".")
    lines += [f"- {line}" for line in gate_lines(report)]
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
            label = f"{r.scenario} u={r.users} ({'n/a' if math.isnan(growth) else f'{growth:+.1f} %'} {growth_span(r)})"
            line, = mem.plot([m.t_s - r.warmup_end_s for m in r.memory], [m.total_bytes / (1 << 20) for m in r.memory], "-", label=label)
            mem.plot([m.t_s - r.warmup_end_s for m in r.memory], [m.stubs_bytes / (1 << 20) for m in r.memory], ":",
                     color=line.get_color())
        mem.axvline(0, color="gray", linewidth=0.8)
        mem.set_xlabel("seconds after the warm-up" if report.config.warmup_s else "seconds after the statistics started")
        mem.set_ylabel("resident memory (MiB)")
        mem.set_title("Server + stubs (solid), stubs alone (dotted)")
        mem.legend(fontsize=7)
        mem.grid(alpha=0.3)
    fig.suptitle(f"{report.config.model} over {report.config.protocol}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
