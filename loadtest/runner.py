"""``ser loadtest``: sweep users against Triton with Locust, and show what batching buys.

:func:`run_loadtest` starts the real local tritonserver on a repository (or
targets a running server), runs ``locust -f loadtest/locustfile.py --headless``
as a subprocess for each user count (bounded by ``run_time_s``), scrapes the
server's metrics endpoint before and after each run, and writes a report
(``loadtest.{csv,md,png,json}``, :mod:`loadtest.report`) next to Locust's own files
(``locust/<scenario>-u<N>_stats.csv``, ``_stats_final.csv`` and ``.log``).

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

This module orchestrates; each job has its module: the options (:mod:`loadtest.run_config`),
one Locust run (:mod:`loadtest.locust_run`), the scenarios' repository copies
(:mod:`loadtest.scenarios`), the in-process baseline (:mod:`loadtest.ort_baseline`) and the
report (:mod:`loadtest.report`).
"""

from __future__ import annotations

import sys
from typing import TextIO

from client.errors import ConfigError
from client.triton_client import SerClient
from loadtest.locust_run import RunResult, run_locust
from loadtest.ort_baseline import combine_baselines, measure_ort
from loadtest.payload import WindowPool, build_window_pool
from loadtest.report import LoadTestReport, gate_lines, write_report
from loadtest.run_config import SCENARIO_ON, LoadTestConfig
from loadtest.scenarios import model_folder, prepare_scenario


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

        model_dir = model_folder(config)
        for scenario in (SCENARIO_ON, *config.comparisons):
            run_config, repo = prepare_scenario(config, scenario, out / "repositories")
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


# --- the CLI's function ------------------------------------------------------------------------


def loadtest(config: LoadTestConfig, *, out: TextIO | None = None) -> int:
    """``ser loadtest``: run :func:`run_loadtest`, print a line per run, each broken gate and the headline.

    Returns:
        0 when every run passed (no failure, no broken gate), else 1.

    Raises:
        SerError subclasses (see :func:`run_loadtest`); the CLI prints them on one line.
    """
    out = out or sys.stdout
    report = run_loadtest(config, progress=out)
    print(f"report: {report.files['markdown']} (+ .csv, .png, .json)", file=out)
    for line in gate_lines(report):  # why it failed, not only that it did
        print(line, file=out)
    print(report.headline(), file=out, flush=True)
    return 0 if report.passed else 1
