"""The plain-Locust command of docs/load-testing.md, run as written against the real server.

Only what cannot run here is replaced: the host (the session server's gRPC port), the duration
(30 s -> 3 s), the output folder, and the manifest the demo writes (one written here for the session's
synthetic corpus, at the same path under a temporary root). A wrong option, model name or path in
the page fails this test; docs/load-testing.md is the page a user copies the command from.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE = REPO_ROOT / "docs" / "load-testing.md"

pytestmark = pytest.mark.slow


def _docs_locust_command() -> list[str]:
    text = PAGE.read_text().replace("\\\n", " ")
    (line,) = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("locust -f loadtest/locustfile.py --headless")]
    return shlex.split(line)


def _replace(words: list[str], option: str, value: str) -> list[str]:
    i = words.index(option)
    return [*words[: i + 1], value, *words[i + 2:]]


@pytest.fixture(scope="module")
def demo_like_root(synth_corpus_dir, tmp_path_factory) -> Path:
    """A folder holding the manifest at the path the docs name (the demo writes it there)."""
    from training.corpus import read_corpus
    from training.folds import actor_split, write_manifest

    words = _docs_locust_command()
    manifest = words[words.index("--manifest") + 1]
    root = tmp_path_factory.mktemp("demo-like")
    split = actor_split(read_corpus(synth_corpus_dir), test_actors=1)
    write_manifest(split, root / manifest, root=synth_corpus_dir)
    return root


def _run(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *words], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})


def test_the_plain_locust_command_of_the_docs_runs_against_the_server(triton_server, demo_like_root):
    words = _docs_locust_command()
    assert words[:3] == ["locust", "-f", "loadtest/locustfile.py"]
    words = _replace(words, "--host", triton_server.grpc_url)
    words = _replace(words, "-t", "3s")
    words[words.index("-f") + 1] = str(REPO_ROOT / words[words.index("-f") + 1])
    proc = _run(words, demo_like_root)  # relative paths (--manifest, --csv out/...) resolve under the demo-like root
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "GATE FAILED" not in proc.stderr
    final = demo_like_root / words[words.index("--final-stats") + 1]
    from loadtest.locust_run import aggregated_row

    row = aggregated_row(final)
    assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0


def test_a_manifest_that_is_not_there_is_one_error_line_not_a_traceback_per_user(triton_server, tmp_path):
    words = _replace(_replace(_docs_locust_command(), "--host", triton_server.grpc_url), "-t", "3s")
    words[words.index("-f") + 1] = str(REPO_ROOT / words[words.index("-f") + 1])
    words = _replace(words, "--manifest", "no/such/split.json")
    proc = _run(words, tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "no/such/split.json" in line]
    assert len(errors) == 1 and "error: " in errors[0], proc.stderr[-3000:]
