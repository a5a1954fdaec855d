"""The in-process baseline: ONNX Runtime in this process on the served ``model.onnx``.

:func:`measure_ort` gives the denominator of the served/in-process ratio (:class:`OrtBaseline`,
windows per second at a fixed batch). A load test measures it in two halves, before the load
and after it, and :func:`combine_baselines` adds them up; :data:`DRIFT_WARNING` is how far the
halves may differ before the report calls the ratio uncertain.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from client.errors import ConfigError
from loadtest.payload import WindowPool

#: Baseline drift (before vs after the load) above which the report calls the served/ORT ratio uncertain.
DRIFT_WARNING = 0.10


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


def measure_ort(model_dir: str | Path, pool: WindowPool, *, batch: int = 8, seconds: float = 3.0) -> OrtBaseline:
    """Throughput of ONNX Runtime in this process on the served ``model.onnx``, at a fixed batch.

    Same session options and intra-op threads as the served python-backend model
    (:func:`client.onnx_session.open_session`; the config's ``intra_op_thread_count``
    or its default), same windows as the load test; timed by :func:`client.timing.time_calls`,
    one ``session.run`` at a time, until ``seconds`` have passed.

    Args:
        model_dir: ``<repository>/<model>`` (reads ``1/model.onnx`` and ``config.pbtxt``).
        pool: the load test's windows ``[N, W]``.
        batch: windows per run.
        seconds: minimum measuring time (after 2 warm-up runs).

    Returns:
        :class:`OrtBaseline`.
    """
    from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM
    from client.onnx_session import default_intra_op_threads, open_session
    from client.timing import time_calls
    from export.repository import read_model_config
    from export.repository.names import THREADS_PARAMETER

    model_dir = Path(model_dir)
    onnx_path = model_dir / "1" / "model.onnx"
    if not onnx_path.is_file():
        raise ConfigError(f"{model_dir}: no 1/model.onnx for the in-process baseline")
    message = read_model_config(model_dir)
    text = message.parameters[THREADS_PARAMETER].string_value if THREADS_PARAMETER in message.parameters else ""
    threads = int(text) if text.strip().isdigit() else default_intra_op_threads()
    session = open_session(onnx_path, intra_op_threads=threads)
    feeds = [{INPUT_WAVEFORM: w, INPUT_NUM_SAMPLES: n} for w, n in pool.requests(windows_per_request=batch, count=8)]
    for feed in feeds[:2]:  # warm-up, untimed
        session.run(None, feed)
    turn = itertools.cycle(feeds)  # the timed runs start from the first request again
    t0 = time.perf_counter()  # throughput over the wall time, as a server's windows/s is
    runs = len(time_calls(lambda: session.run(None, next(turn)), runs=sys.maxsize, min_runs=3, budget_s=seconds))
    elapsed = time.perf_counter() - t0
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
