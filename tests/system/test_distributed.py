"""Two training processes (torchrun, gloo on the CPU): the command of docs/training.md, run for real.

``torchrun --standalone --nproc_per_node 2 -m ser.cli train --recipe test ...`` on the
session's synthetic corpus, 6 steps with validation every 3 (early stopping armed, so
the broadcast of process 0's validation F1 runs). A ``sitecustomize`` put on the
children's PYTHONPATH installs an audit hook in every process whose ``RANK`` is not 0
and records each file it opens for writing under ``--out``: there must be none.
Measured on 2 shared CPU cores: ~40 s.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_WATCH_WRITES = '''\
"""Test-only: record files that a process of RANK != 0 opens for writing under SER_TEST_OUT."""
import os
import sys

_out, _rank = os.environ.get("SER_TEST_OUT"), os.environ.get("RANK")
if _out and _rank not in (None, "0"):
    _fd = os.open(os.path.join(os.environ["SER_TEST_WRITES"], f"rank{_rank}.txt"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path, mode, flags = args
        if isinstance(mode, str):
            writes = any(c in mode for c in "wax+")
        else:
            writes = bool((flags or 0) & _writing)
        path = os.path.abspath(os.fsdecode(path))
        if writes and (path == _out or path.startswith(_out + os.sep)):
            os.write(_fd, (path + "\\n").encode())

    sys.addaudithook(_hook)
'''


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes_trains_once_and_only_process_zero_writes(synth_corpus_dir, tmp_path):
    out, writes, site = tmp_path / "out", tmp_path / "writes", tmp_path / "site"
    writes.mkdir()
    site.mkdir()
    (site / "sitecustomize.py").write_text(_WATCH_WRITES)
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "ser.cli", "train", "--recipe", "test",
               "--corpus", str(synth_corpus_dir), "--out", str(out), "--max-steps", "6", "--val-actors", "1",
               "--eval-steps", "3", "--early-stopping-patience", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SER_TEST_OUT": str(out.resolve()), "SER_TEST_WRITES": str(writes),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    try:
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in {exc.timeout} s:\n{exc.stdout}\n{exc.stderr}")
    assert run.returncode == 0, f"{' '.join(command)}\nstdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-6000:]}"
    # DDP is not asked to look for unused parameters the tiny model never has (it would warn, once per process).
    assert "find_unused_parameters" not in run.stderr, run.stderr[-3000:]

    # The hook ran in process 1 (it created its record) and saw no write under --out.
    assert (writes / "rank1.txt").is_file(), "the write watcher was not active in process 1"
    assert (writes / "rank1.txt").read_text() == "", "process 1 wrote files"
    assert "process 1 of a distributed run, 6 steps" in run.stdout

    # Process 0 wrote the checkpoint, the split and one metrics log.
    assert (out / "model.safetensors").is_file() and (out / "predictions.json").is_file()
    assert not (out / "trainer").exists()
    info = json.loads((out / "ser_checkpoint.json").read_text())
    result = info["extra"]["result"]
    assert result["world_size"] == 2 and result["steps"] == 6
    assert result["best_step"] in (3, 6)
    lines = (out / "metrics.csv").read_text().splitlines()
    assert sum(line.startswith("step,") for line in lines) == 1 and lines[0].startswith("step,")
    rows = _rows(out / "metrics.csv")
    loss_steps = [int(r["step"]) for r in rows if r["loss"]]
    val_steps = [int(r["step"]) for r in rows if r["val_weighted_f1"]]
    assert loss_steps == [1, 2, 3, 4, 5, 6] and val_steps == [3, 6]

    # Two processes each took a batch of 16 a step: an epoch of the train clips is twice as few steps.
    doc = json.loads((out / "split.json").read_text())
    train_clips = sum(c["partition"] == "train" for c in doc["clips"])
    steps_per_epoch = train_clips // (16 * 2)
    last = [r for r in rows if r["loss"]][-1]
    assert float(last["epoch"]) == pytest.approx(6 / steps_per_epoch, abs=1e-6)
