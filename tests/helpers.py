"""Helpers shared by several test files (test modules never import each other)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

#: The repository root (the folder holding ``pyproject.toml``).
REPO_ROOT = Path(__file__).resolve().parents[1]

#: RAVDESS's eight emotions in code order (01 neutral ... 08 surprised): the labels of the tiny test checkpoint.
RAVDESS8 = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def ser(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the ``ser`` command line as a user runs it: a subprocess from the repository root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ser", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Assert the command failed with ``error: ...`` lines only (no traceback), naming every fragment."""
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and all(ln.startswith("error: ") for ln in lines), proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def server_url(server, protocol: str) -> str:
    """The address of a running ``LocalTriton`` for ``protocol`` (``grpc`` or ``http``)."""
    return server.grpc_url if protocol == "grpc" else server.http_url


def files_named(root: Path, names: list[str]) -> Path:
    """Create ``root/<name>`` for each name (folders too), each holding 4 bytes that are not audio.

    For tests of readers that go by file names; decoding, if any, happens later. Returns ``root``.
    """
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"RIFF")
    return root



def node_example_modules() -> Path:
    """``node_modules`` of client/examples/node (its pinned packages), installed once under .cache/; skips without node/npm."""
    import shutil

    import pytest

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed (make system-tools installs Debian's nodejs and npm as root)")
    cache = REPO_ROOT / ".cache" / "node-example"
    package = (REPO_ROOT / "client" / "examples" / "node" / "package.json").read_text()
    if not (cache / "node_modules" / "@grpc" / "proto-loader").is_dir() or (cache / "package.json").read_text() != package:
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        (cache / "package.json").write_text(package)
        out = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"],
                             cwd=cache, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            pytest.skip(f"npm install of the example's packages failed (no registry?): {out.stderr.strip()[-300:]}")
    return cache / "node_modules"


def quiet_and_loud_windows(window_samples: int, *, quiet: int, loud: int, seed: int = 0):
    """``(quiet windows, loud windows)``, each ``(waveform [b, W] float32, num_samples [b, 1] int64)``.

    Quiet: a -40 dBFS gliding tone, a full window or cut short (zeros after ``num_samples``).
    Loud: other content near full scale (noise bursts, a -1 dBFS square wave, clicks): what a batch
    of other callers can hold. A batch-invariant model answers a quiet window the same alone and among them.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(window_samples) / 16_000.0
    qx = np.zeros((quiet, window_samples), np.float32)
    qn = np.zeros((quiet, 1), np.int64)
    for i in range(quiet):
        length = window_samples if i % 2 == 0 else max(400, window_samples // (2 + i % 3))
        f0 = rng.uniform(100, 300) * (1 + 0.2 * t)
        qx[i, :length] = (0.01 * np.sin(2 * np.pi * np.cumsum(f0) / 16_000.0))[:length]
        qn[i, 0] = length
    lx = np.zeros((loud, window_samples), np.float32)
    for i in range(loud):
        kind = i % 3
        if kind == 0:
            lx[i] = np.clip(0.7 * rng.standard_normal(window_samples), -1, 1)
        elif kind == 1:
            lx[i] = 0.9 * np.sign(np.sin(2 * np.pi * rng.uniform(60, 500) * t))
        else:
            lx[i, rng.integers(0, window_samples, 40)] = 1.0
    return (qx, qn), (lx, np.full((loud, 1), window_samples, np.int64))


def settled(read: Callable[[], T], *, quiet_s: float = 0.3, timeout_s: float = 5.0) -> T:
    """``read()`` once two reads ``quiet_s`` apart agree (at most ``timeout_s``).

    Triton's statistics: the python backend counts a request just *after* responding, so a read
    right after the last answer can miss it.
    """
    deadline = time.perf_counter() + timeout_s
    last = read()
    while time.perf_counter() < deadline:
        time.sleep(quiet_s)
        now = read()
        if now == last:
            break
        last = now
    return last
