"""``ser bench``'s run: build every runner of a shape, time each batch size, collect the cells.

The timing itself is :mod:`client.timing`'s (the loop every benchmark of the bundle uses);
:func:`time_cell` and :func:`time_interleaved` only read the counts from a :class:`BenchConfig`.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

from client.timing import time_calls, time_rounds
from export.bench.config import BenchConfig, import_training_model
from export.bench.flops import count_flops
from export.bench.host import environment, measure_matmul_peak
from export.bench.onnx_cache import ensure_fp32_onnx, ensure_int8_onnx
from export.bench.results import BenchResult, Cell, speedup
from export.bench.runners import (
    Prepared,
    ort_runner,
    runner_device,
    runner_peak,
    skip_reason,
    torch_runner,
)


def time_cell(call: Callable[[], Any], config: BenchConfig) -> tuple[float, ...]:
    """Milliseconds of each timed call of one cell: ``config.warmup`` untimed calls, then ``config.timed_runs``."""
    least, most = config.timed_runs
    return time_calls(call, warmup=config.warmup, runs=most, min_runs=least, budget_s=config.budget_s)


def time_interleaved(calls: Mapping[str, Callable[[], Any]], config: BenchConfig
                     ) -> tuple[dict[str, tuple[float, ...]], dict[str, BaseException]]:
    """Warm every call up, then time them in rounds: each call once per round, in turn.

    Returns:
        ``(times, failed)``: ms of every timed call per name, and the exception of
        each call that raised (it leaves the rounds; the others go on). With
        ``config.budget_s`` the rounds stop once ``budget_s`` per call has passed
        (at least :data:`~export.bench.config.MIN_TIMED_RUNS` rounds).
    """
    least, most = config.timed_runs
    return time_rounds(calls, warmup=config.warmup, runs=most, min_runs=least, budget_s=config.budget_s)


def error_text(exc: BaseException) -> str:
    """An exception as the one-line reason of a failed cell: its type and first line, at most 300 characters."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _close(ready: list[tuple[str, dict[str, Any], Prepared]]) -> None:
    """Close and forget every prepared runner of ``ready`` (emptied in place)."""
    import gc

    for _, _, prepared in ready:
        prepared.close()
    ready.clear()
    gc.collect()


def _measure(ready: Sequence[tuple[str, dict[str, Any], Prepared]], model_config, config: BenchConfig,
             log: Callable[[str], None]) -> list[Cell]:
    """Time every prepared runner at every batch size: one :class:`Cell` each.

    With ``config.interleave`` the runners of one batch size take turns call by call
    (:func:`time_interleaved`), so a machine whose speed drifts during the run slows
    them all alike and their ratios hold; otherwise each is timed on its own.
    """
    cells: list[Cell] = []
    for b in config.batch_sizes:
        flops = count_flops(model_config, window_samples=config.window_samples, batch=b).total
        calls, failed = {}, {}
        for runner, _, prepared in ready:
            try:
                calls[runner] = prepared.make_call(b)
            except Exception as exc:  # noqa: BLE001 - one runner's failure must not end the run
                failed[runner] = exc
        if config.interleave:
            times, more_failed = time_interleaved(calls, config)
            failed.update(more_failed)
        else:
            times = {}
            for runner, call in calls.items():
                try:
                    times[runner] = time_cell(call, config)
                except Exception as exc:  # noqa: BLE001
                    failed[runner] = exc
        for runner, base, prepared in ready:
            if runner in failed:
                reason = error_text(failed[runner])
                cells.append(Cell(batch=b, status="failed", reason=reason, size_bytes=prepared.size_bytes, flops=flops, **base))
                log(f"[bench] {base['shape']} {runner} b{b}: failed ({reason})")
                continue
            cell = Cell(batch=b, status="measured", size_bytes=prepared.size_bytes, times_ms=times[runner], flops=flops, **base)
            cells.append(cell)
            log(f"[bench] {base['shape']} {runner} b{b}: median {cell.median_ms:.1f} ms, p95 {cell.p95_ms:.1f} ms "
                f"({len(cell.times_ms)} runs, {cell.gflops_per_s:.0f} GFLOP/s)")
    return cells


def run_bench(config: BenchConfig, *, out: TextIO = sys.stdout) -> BenchResult:
    """Measure every (shape, runner, batch) cell of ``config`` and print the table to ``out``.

    Args:
        config: what to measure.
        out: where progress lines and the final table go.

    Returns:
        The :class:`BenchResult` (also written to ``config.json_out`` /
        ``config.markdown_out`` when set).
    """
    import gc

    import torch

    tm = import_training_model()
    torch.set_num_threads(config.threads)
    log = (lambda msg: print(msg, file=out, flush=True)) if config.progress else (lambda msg: None)
    labels = tuple(f"class_{i}" for i in range(config.num_labels))
    skips = {r: skip_reason(r, config) for r in config.runners}
    env = environment(config)

    peaks: dict[str, float] = {}
    if config.measure_peak:
        needed = {runner_peak(r, config) for r in config.runners if not skips[r]}
        for key in ("cpu-fp32", "cuda-fp32", "cuda-fp16"):
            if key in needed:
                device, dtype = key.split("-")
                peaks[key] = measure_matmul_peak(device=device, dtype={"fp32": "float32", "fp16": "float16"}[dtype])
                log(f"[bench] matmul peak {key}: {peaks[key]:.0f} GFLOP/s")

    shapes_info: dict[str, dict[str, Any]] = {}
    cells: list[Cell] = []
    for shape in config.shapes:
        model = tm.new_model(shape, labels=labels, seed=config.seed)
        classifier = tm.WaveformClassifier(model).eval()
        per_clip = count_flops(model.config, window_samples=config.window_samples)
        shapes_info[shape] = {
            "window_samples": config.window_samples,
            "frames": per_clip.frames,
            "gflop_per_clip": per_clip.total / 1e9,
            "flops_per_clip": dict(per_clip.parts),
        }
        fp32_path: Path | None = None
        fp32_error = ""
        ready: list[tuple[str, dict[str, Any], Prepared]] = []
        for runner in config.runners:
            device = runner_device(runner, config)
            base = dict(shape=shape, runner=runner, device=device, peak=runner_peak(runner, config))
            if skips[runner]:
                cells += [Cell(batch=b, status="skipped", reason=skips[runner], **base) for b in config.batch_sizes]
                log(f"[bench] {shape} {runner}: skipped ({skips[runner]})")
                continue
            try:
                if runner.startswith("ort-"):
                    if fp32_path is None and not fp32_error:
                        try:
                            fp32_path = ensure_fp32_onnx(classifier, config, shape, out=out if config.progress else None)
                        except Exception as exc:  # noqa: BLE001 - recorded in the cells
                            fp32_error = f"fp32 export failed: {error_text(exc)}"
                    if fp32_error:
                        raise RuntimeError(fp32_error)
                    if runner.startswith("ort-int8:"):
                        path = ensure_int8_onnx(fp32_path, runner.partition(":")[2], out=out if config.progress else None)
                    else:
                        path = fp32_path
                    prepared = ort_runner(path, config, cuda=runner == "ort-cuda-fp32")
                else:
                    prepared = torch_runner(classifier, runner, config)
            except Exception as exc:  # noqa: BLE001 - one runner's failure must not end the run
                reason = error_text(exc)
                cells += [Cell(batch=b, status="failed", reason=reason, **base) for b in config.batch_sizes]
                log(f"[bench] {shape} {runner}: failed ({reason})")
                continue
            ready.append((runner, base, prepared))
            if not config.interleave:  # time it now and free it before the next runner is built
                try:
                    cells += _measure(ready, model.config, config, log)
                finally:
                    _close(ready)
        if ready:  # interleaved: every runner of the shape is held until now
            try:
                cells += _measure(ready, model.config, config, log)
            finally:
                _close(ready)
        del model, classifier
        gc.collect()
    order = {(s, r, b): i for i, (s, r, b) in enumerate(
        (s, r, b) for s in config.shapes for r in config.runners for b in config.batch_sizes)}
    cells.sort(key=lambda c: order[(c.shape, c.runner, c.batch)])

    reference = {(c.shape, c.batch): c for c in cells if c.runner == "ort-fp32" and c.measured}
    cells = [
        replace(c, speedup_vs_ort_fp32=speedup(reference[(c.shape, c.batch)], c, paired=config.interleave))
        if c.measured and (c.shape, c.batch) in reference else c
        for c in cells
    ]
    result = BenchResult(config=config, environment=env, peaks=peaks, shapes=shapes_info, cells=tuple(cells))
    print(result.table(), file=out, flush=True)
    if config.json_out is not None:
        log(f"[bench] wrote {result.write_json(config.json_out)}")
    if config.markdown_out is not None:
        log(f"[bench] wrote {result.write_markdown(config.markdown_out)}")
    return result

