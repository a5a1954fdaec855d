"""``ser bench`` (export/bench/): a smoke run on the tiny shape and the FLOP counter.

Speed is never asserted: the run only has to produce every requested cell,
measured or skipped with a reason.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT as REPO


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """One run_bench over the tiny shape, every runner, batches 1 and 2, 1 s clips."""
    from export.bench import BenchConfig, run_bench

    tmp = tmp_path_factory.mktemp("bench")
    config = BenchConfig(
        shapes=("tiny",),
        batch_sizes=(1, 2),
        clip_seconds=1.0,
        warmup=1,
        repeat=2,
        threads=2,
        workdir=tmp / "work",
        json_out=tmp / "bench.json",
        markdown_out=tmp / "bench.md",
        progress=False,
    )
    out = io.StringIO()
    result = run_bench(config, out=out)
    return config, result, out.getvalue()


def test_every_requested_cell_is_measured_or_skipped_with_a_reason(tiny_bench):
    from export.quantize import QUANTIZATION_PRESETS

    config, result, _ = tiny_bench
    expected_runners = {"ort-fp32", "torch-fp32", "torch-int8-dynamic", "torch-fp16", "ort-cuda-fp32"}
    expected_runners |= {f"ort-int8:{p}" for p in QUANTIZATION_PRESETS}
    assert set(config.runners) == expected_runners
    assert len(result.cells) == len(expected_runners) * 2
    for runner in expected_runners:
        for batch in (1, 2):
            cell = result.cell("tiny", runner, batch)
            assert cell.status in ("measured", "skipped"), f"{runner} b{batch}: {cell.status}: {cell.reason}"
            if cell.measured:
                assert len(cell.times_ms) == 2 and cell.median_ms > 0 and cell.p95_ms >= cell.median_ms
                assert cell.size_bytes > 0 and cell.flops > 0 and cell.gflops_per_s > 0
            else:
                assert cell.reason
    # ONNX Runtime CPU runners and PyTorch CPU runners run everywhere.
    for runner in ("ort-fp32", "torch-fp32", "torch-int8-dynamic", *(f"ort-int8:{p}" for p in QUANTIZATION_PRESETS)):
        assert result.cell("tiny", runner, 1).measured
    assert result.cell("tiny", "ort-fp32", 2).speedup_vs_ort_fp32 == pytest.approx(1.0)


def test_int8_files_are_smaller_than_fp32(tiny_bench):
    _, result, _ = tiny_bench
    fp32 = result.cell("tiny", "ort-fp32", 1).size_bytes
    assert result.cell("tiny", "ort-int8:dynamic-int8-matmul", 1).size_bytes < fp32


def test_the_table_names_threads_and_every_runner(tiny_bench):
    config, result, printed = tiny_bench
    assert "threads=2" in printed and "ORT intra_op=2" in printed
    assert f"W={config.window_samples}" in printed
    for runner in config.runners:
        assert runner in printed
    if result.peaks:
        assert "cpu-fp32" in result.peaks and "% peak" in printed


def test_json_and_markdown_files_hold_every_cell(tiny_bench):
    config, result, _ = tiny_bench
    data = json.loads(Path(config.json_out).read_text())
    assert data["config"]["window_samples"] == 16_000
    assert data["environment"]["threads"] == 2
    assert len(data["cells"]) == len(result.cells)
    for cell in data["cells"]:
        assert cell["status"] == "measured" or cell["reason"]
        if cell["status"] == "measured":
            assert cell["median_ms"] > 0 and cell["clips_per_s"] > 0
    assert data["shapes"]["tiny"]["gflop_per_clip"] > 0
    markdown = Path(config.markdown_out).read_text()
    assert markdown.count("| tiny |") == len(result.cells)


def test_a_second_run_reuses_the_cached_onnx_files(tiny_bench):
    from export.bench import BenchConfig, run_bench

    config, _, _ = tiny_bench
    fp32 = next(Path(config.workdir).glob("tiny-*/fp32.onnx"))
    before = fp32.stat().st_mtime_ns
    again = BenchConfig(shapes=("tiny",), runners=("ort-fp32",), batch_sizes=(1,), clip_seconds=1.0, warmup=0,
                        repeat=1, threads=2, workdir=config.workdir, measure_peak=False, progress=False)
    result = run_bench(again, out=io.StringIO())
    assert result.cell("tiny", "ort-fp32", 1).measured
    assert fp32.stat().st_mtime_ns == before


def test_runners_take_turns_call_by_call_and_sequential_runs_time_one_after_another(tiny_bench):
    from export.bench import BenchConfig, run_bench
    from export.bench.run import time_interleaved as _time_interleaved

    config, _, printed = tiny_bench
    assert "timing: interleaved" in printed
    order: list[str] = []
    rounds = BenchConfig(shapes=("tiny",), runners=("ort-fp32",), warmup=1, repeat=3, threads=1)
    times, failed = _time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds)
    assert order == ["a", "b"] + ["a", "b"] * 3 and failed == {}
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    budget = BenchConfig(shapes=("tiny",), runners=("ort-fp32",), warmup=0, budget_s=1e-6, threads=1)
    assert {len(v) for v in _time_interleaved({"a": lambda: None, "b": lambda: None}, budget)[0].values()} == {5}

    out = io.StringIO()
    sequential = BenchConfig(shapes=("tiny",), runners=("ort-fp32", "ort-int8:default"), batch_sizes=(1, 2), clip_seconds=1.0,
                             warmup=0, repeat=1, threads=2, workdir=config.workdir, measure_peak=False, interleave=False)
    result = run_bench(sequential, out=out)
    assert [(c.runner, c.batch, c.status) for c in result.cells] == [
        (r, b, "measured") for r in sequential.runners for b in (1, 2)]
    assert "timing: sequential" in out.getvalue()
    # the progress lines show the order: every batch size of a runner before the next runner
    lines = [ln.split(": median")[0] for ln in out.getvalue().splitlines() if ": median" in ln]
    assert lines == [f"[bench] tiny {r} b{b}" for r in sequential.runners for b in (1, 2)]


def test_interleaved_speedups_pair_each_round_so_drift_cancels():
    from export.bench import Cell, speedup

    def cell(times):
        return Cell(shape="tiny", runner="r", batch=1, device="cpu", status="measured", times_ms=tuple(times))

    # The machine halves its speed after two rounds: every pair still says 2x, the medians do not.
    fp32, int8 = cell([100, 100, 200, 200, 200]), cell([50, 50, 100, 100, 100])
    assert speedup(fp32, int8, paired=True) == pytest.approx(2.0)
    assert speedup(cell([100, 100, 100, 400, 400]), cell([50, 200, 200, 200, 200]), paired=True) == pytest.approx(2.0)
    assert speedup(cell([100, 100, 100, 400, 400]), cell([50, 200, 200, 200, 200]), paired=False) == pytest.approx(0.5)
    assert speedup(fp32, cell([50, 50, 100]), paired=True) == pytest.approx(200 / 50)  # unequal counts: medians


# --- FLOPs ----------------------------------------------------------------------------


def test_flop_count_matches_torch_flop_counter_on_tiny():
    """Analytic count vs FlopCounterMode (eager attention: the CPU SDPA kernel is not counted by it). Tolerance 1 %."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from export.bench.config import import_training_model
    from export.bench.flops import count_flops

    tm = import_training_model()
    model = tm.new_model("tiny", labels=[f"c{i}" for i in range(8)], seed=0)
    model.config._attn_implementation = "eager"
    classifier = tm.WaveformClassifier(model).eval()
    batch, width = 2, 16_000
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        classifier(torch.randn(batch, width), torch.full((batch, 1), width))
    counted = count_flops(model.config, window_samples=width, batch=batch)
    assert counted.total == pytest.approx(counter.get_total_flops(), rel=0.01)
    flops = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    conv = counted.parts["feature_encoder"] + counted.parts["positional_conv"]
    assert conv == pytest.approx(flops["aten.convolution"], rel=0.01)


def test_flop_count_of_xlsr_large_at_two_and_a_half_seconds():
    from export.bench.config import shape_config
    from export.bench.flops import count_flops

    flops = count_flops({**shape_config("xlsr-large"), "num_labels": 8}, window_samples=40_000)
    assert flops.frames == 124
    # Hand count: encoder 12.26 G, positional conv 2.10 G, 24 x (8TH^2 + 4T^2H + 4THI) = 76.33 G, rest 0.2 G.
    assert flops.total / 1e9 == pytest.approx(90.96, abs=0.01)
    assert flops.parts["feed_forward"] == 24 * 4 * 124 * 1024 * 4096
    assert count_flops(shape_config("xlsr-large"), window_samples=40_000, batch=8).total == pytest.approx(8 * flops.total, rel=1e-3)


# --- timing and imports -------------------------------------------------------------------


def test_a_time_budget_still_times_at_least_five_calls():
    from export.bench.config import MIN_TIMED_RUNS, BenchConfig
    from export.bench.run import time_cell as _time_call

    calls = []
    config = BenchConfig(shapes=("tiny",), runners=("ort-fp32",), warmup=1, budget_s=1e-6, threads=1)
    times = _time_call(lambda: calls.append(1), config)
    assert len(times) == MIN_TIMED_RUNS and len(calls) == MIN_TIMED_RUNS + 1
    capped = BenchConfig(shapes=("tiny",), runners=("ort-fp32",), warmup=0, budget_s=60.0, repeat=7, threads=1)
    assert len(_time_call(lambda: None, capped)) == 7


@pytest.mark.slow
def test_the_bench_runs_where_soundfile_and_soxr_are_not_installed(tmp_path):
    """The GPU box has torch/transformers/onnxruntime but neither soundfile nor soxr (nor cffi).

    Emulated with ``python -S`` and a copy of site-packages (symlinks) without them.
    """
    import site

    packages = tmp_path / "site-packages"
    packages.mkdir()
    for source in map(Path, site.getsitepackages()):
        for entry in source.iterdir():
            name = entry.name.lower()
            if name.startswith(("soundfile", "_soundfile", "soxr", "cffi", "_cffi")) or entry.suffix == ".pth":
                continue
            if not (packages / entry.name).exists():
                (packages / entry.name).symlink_to(entry)
    args = ["--shape", "tiny", "--runners", "torch-fp32", "--batch-sizes", "1", "--seconds", "0.5", "--warmup", "0",
            "--repeat", "1", "--threads", "1", "--no-peak", "--quiet", "--workdir", str(tmp_path / "work")]
    proc = subprocess.run([sys.executable, "-S", "-m", "ser", "bench", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": f"{REPO}:{packages}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch-fp32" in proc.stdout and "n=1" in proc.stdout, proc.stdout[-2000:]
    probe = subprocess.run([sys.executable, "-S", "-c", "import soundfile"], cwd=REPO, capture_output=True, text=True,
                           env={"PYTHONPATH": f"{REPO}:{packages}", "PATH": "/usr/bin:/bin"})
    assert probe.returncode != 0 and "soundfile" in probe.stderr  # the emulation really hides it
