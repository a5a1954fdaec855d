"""Helpers shared by several test files (test modules never import each other)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
