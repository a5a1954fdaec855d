"""``ser loadtest --compare-server-side``: the client-side and server-side paths side by side, one server.

Both runs send the same encoded clips with the same number of Locust users (each keeps one clip
in flight), one after the other against one tritonserver:

* ``client-side``: ``ClientSideClipUser``: the client decodes and windows, the window model
  (``ser_int8``) gets the windows;
* ``server-side``: ``ServerSideClipUser``: the client sends bytes, the audio model ``ser``
  decodes and windows them on the server and sends the windows to the same window model.

Throughput is clips per second; latencies are per clip, from the bytes to the label. Given a
repository, the server serves a fresh copy of it holding the window model and an audio model
written for it (:func:`export.audio_repository.write_audio_model`), so a repository without
``ser`` can be compared too. The report (``paths.md``, ``paths.json``) says the ratio of clips/s
and of p99 latency, with the window model's executed batch size in each run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from client.audio_service import AUDIO_MODEL
from client.client_options import DEFAULT_MODEL
from client.errors import ConfigError
from loadtest.gates import Thresholds
from loadtest.locust_run import RunResult, run_locust
from loadtest.payload import AudioSourceConfig
from loadtest.run_config import DEFAULT_OUT, LoadTestConfig
from loadtest.scenarios import write_scenario_repository

LOCUSTFILE_CLIPS = Path(__file__).with_name("locustfile_clips.py")
PATHS = {"client-side": "ClientSideClipUser", "server-side": "ServerSideClipUser"}


@dataclass(frozen=True)
class PathRun:
    """One path's run.

    Attributes:
        path: ``client-side`` or ``server-side``.
        run: Locust's figures (requests are clips: ``windows_per_s`` is the successful clips per second,
            one request per clip; ``run.server`` holds the window model's counters).
        window_batch: the window model's mean executed batch size over the measured window, the same
            window as the run's figures (NaN without metrics).
    """

    path: str
    run: RunResult
    window_batch: float

    @property
    def clips_per_s(self) -> float:
        """Clips classified per second (one clip per request, failed ones left out)."""
        return self.run.windows_per_s  # the runs send windows_per_request=1: one "window" is one clip


@dataclass(frozen=True)
class PathComparison:
    """Both runs and what they say.

    Attributes:
        runs: the client-side run, then the server-side run.
        users: Locust users of each run.
        window_model: the window model both paths ended at.
        audio_model: the server-side path's model.
        files: ``{"markdown", "json"}`` -> written paths.
    """

    runs: tuple[PathRun, PathRun]
    users: int
    window_model: str
    audio_model: str
    files: dict

    @property
    def throughput_ratio(self) -> float:
        """Server-side clips/s / client-side clips/s (clips classified: failed requests do not count)."""
        client, server = (r.clips_per_s for r in self.runs)
        return server / client if client else math.nan

    @property
    def p99_ratio(self) -> float:
        """Server-side p99 / client-side p99."""
        client, server = (r.run.p99_ms for r in self.runs)
        return server / client if client else math.nan

    @property
    def passed(self) -> bool:
        """Both runs exited 0 (no failure, no broken gate) and broke no gate the runner judges."""
        return all(r.run.exit_code == 0 and not r.run.gate_failures for r in self.runs)

    def headline(self) -> str:
        """One line with both paths' figures."""
        parts = [f"{r.path}: {r.clips_per_s:.1f} clips/s, p50/p95/p99 {r.run.p50_ms:g}/{r.run.p95_ms:g}/{r.run.p99_ms:g} ms, "
                 f"{r.run.failures} failures, window batch {r.window_batch:.2f}" for r in self.runs]
        parts.append(f"server/client clips/s {self.throughput_ratio:.2f}x, p99 {self.p99_ratio:.2f}x")
        return f"{self.users} users, {self.window_model}: " + "; ".join(parts) + ("; PASSED" if self.passed else "; FAILED")


def compare_repository(repository: Path, out: Path, *, window_model: str, audio_model: str = AUDIO_MODEL) -> Path:
    """A fresh repository with ``window_model`` (batching as written) and an audio model sending to it only."""
    from client.contract import ModelContract
    from export.audio_repository import AudioModelConfig, write_audio_model
    from export.repository import read_model_config

    source = Path(repository) / window_model
    if not (source / "config.pbtxt").is_file():
        raise ConfigError(f"repository={str(repository)!r} has no window model {window_model!r}")
    target = write_scenario_repository(source, out, dynamic_batching=True)
    params = {k: v.string_value for k, v in read_model_config(target).parameters.items()}
    contract = ModelContract.from_parameters(params, model=window_model)
    write_audio_model(out, contract=contract, runtime="portable",
                      config=AudioModelConfig(name=audio_model, preference=(contract.variant,)))
    return out


def _report(cmp: PathComparison, out_dir: Path, config: LoadTestConfig) -> dict:
    rows = ["| path | model | users | clips | failures | clips/s | p50 ms | p95 ms | p99 ms | window-model batch |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in cmp.runs:
        model = cmp.audio_model if r.path == "server-side" else cmp.window_model
        rows.append(f"| {r.path} | {model} | {r.run.users} | {r.run.requests} | {r.run.failures} | {r.clips_per_s:.2f} | {r.run.p50_ms:g} | "
                    f"{r.run.p95_ms:g} | {r.run.p99_ms:g} | {r.window_batch:.2f} |")
    text = "\n".join([
        f"# Client-side vs server-side audio path, {cmp.users} users over {config.protocol}", "",
        f"{config.run_time_s} s measured per run, {config.warmup_s} s warm-up; audio: {config.audio.describe()}. "
        "One request = one clip, from the encoded bytes to the label.", "", *rows, "",
        "clips/s counts the clips classified (failed requests left out); latencies are exact percentiles of every request.",
        "",
        f"Server-side / client-side: {cmp.throughput_ratio:.2f}x clips/s, {cmp.p99_ratio:.2f}x p99 latency.", "",
        f"**{cmp.headline()}**", "",
    ])
    files = {"markdown": out_dir / "paths.md", "json": out_dir / "paths.json"}
    files["markdown"].write_text(text)
    doc = {"users": cmp.users, "window_model": cmp.window_model, "audio_model": cmp.audio_model,
           "throughput_ratio": cmp.throughput_ratio, "p99_ratio": cmp.p99_ratio, "passed": cmp.passed,
           "runs": [{"path": r.path, "window_batch": None if math.isnan(r.window_batch) else r.window_batch, **r.run.row()}
                    for r in cmp.runs], "headline": cmp.headline()}
    files["json"].write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return files


def compare_paths(
    *,
    repository: Path | None = None,
    url: str | None = None,
    metrics_url: str | None = None,
    window_model: str = DEFAULT_MODEL,
    audio_model: str = AUDIO_MODEL,
    protocol: str = "grpc",
    users: int = 16,
    run_time_s: int = 10,
    warmup_s: int = 0,
    audio: AudioSourceConfig | None = None,
    thresholds: Thresholds | None = None,
    out_dir: Path = DEFAULT_OUT,
    progress: TextIO | None = None,
) -> PathComparison:
    """Run the client-side and the server-side path side by side and write ``paths.{md,json}``.

    Args:
        repository: serve a fresh copy of ``window_model`` + an audio model from it (exclusive with ``url``).
        url: a running server holding both models (its gRPC or HTTP port, matching ``protocol``).
        metrics_url: that server's metrics endpoint (the window model's batch size).
        window_model: where both paths' windows go.
        audio_model: the server-side path's model.
        protocol: ``grpc`` or ``http``.
        users: Locust users of each run.
        run_time_s: seconds each run measures.
        warmup_s: seconds of load before each run measures.
        audio: the clips (default: generated speech).
        thresholds: gates applied to each run.
        out_dir: report folder.
        progress: where a line per run goes.

    Raises:
        ConfigError: bad options; ServerStartError, LocustRunError: as :func:`loadtest.runner.run_loadtest`.
    """
    from deploy.local_triton import LocalTriton

    if (repository is None) == (url is None):
        raise ConfigError(f"repository={repository!r}, url={url!r}: give exactly one")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = dict(protocol=protocol, users=(users,), run_time_s=run_time_s, warmup_s=warmup_s, windows_per_request=1,
                audio=audio or AudioSourceConfig(), thresholds=thresholds or Thresholds(), out_dir=out_dir,
                locustfile=LOCUSTFILE_CLIPS)

    def run_both(target: str, metrics: str | None) -> list[PathRun]:
        results = []
        for path, user_class in PATHS.items():
            model = audio_model if path == "server-side" else window_model
            config = LoadTestConfig(url=target, model=model, user_classes=(user_class,), **base)
            # The window model's counters over the measured window (not the start-up, warm-up or stop).
            run = run_locust(config, scenario=path, url=config.url, users=users, metrics=metrics, out_dir=out_dir / "locust",
                             counted_model=window_model)
            batch = run.server.mean_batch_size if run.server is not None else math.nan
            results.append(PathRun(path=path, run=run, window_batch=batch))
            if progress is not None:
                print(f"{path} u={users}: {results[-1].clips_per_s:.1f} clips/s, p95 {run.p95_ms:g} ms, p99 {run.p99_ms:g} ms, "
                      f"{run.failures} failures, window batch {batch:.2f}", file=progress, flush=True)
            time.sleep(0.5)
        return results

    if url is not None:
        runs = run_both(url, metrics_url)
        config = LoadTestConfig(url=url, model=window_model, **base)
    else:
        repo = compare_repository(repository, out_dir / "repositories" / "paths", window_model=window_model, audio_model=audio_model)
        with LocalTriton(repo, log_path=out_dir / "tritonserver-paths.log") as server:
            target = server.grpc_url if protocol == "grpc" else server.http_url
            runs = run_both(target, server.metrics_url)
            config = LoadTestConfig(url=target, model=window_model, **base)
    cmp = PathComparison(runs=(runs[0], runs[1]), users=users, window_model=window_model, audio_model=audio_model, files={})
    cmp.files.update(_report(cmp, out_dir, config))
    return cmp
