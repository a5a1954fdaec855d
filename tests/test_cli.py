"""The ``ser`` command line, run as a user runs it (a subprocess), against the real local server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local_triton import free_ports

REPO_ROOT = Path(__file__).resolve().parents[1]


def ser(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ser", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and all(ln.startswith("error: ") for ln in lines), proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def test_help_lists_every_command_and_imports_no_torch():
    proc = ser("--help")
    assert proc.returncode == 0
    for command in ("corpus", "train", "export", "repository", "serve", "predict", "demo"):
        assert command in proc.stdout
    code = "import sys; from ser.cli import build_parser; build_parser(); sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_predict_prints_label_and_probabilities_as_json(triton_server, serving_clips, protocol):
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    proc = ser("predict", str(serving_clips["short"]), str(serving_clips["long"]), "--url", url, "--protocol", protocol, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(serving_clips["short"]), str(serving_clips["long"])]
    for r in rows:
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    assert rows[1]["windows"] > 1  # the 2.3 s clip was windowed


def test_predict_reports_an_unreadable_and_an_empty_file_in_one_line_each_and_exits_non_zero(triton_server, serving_clips):
    proc = ser("predict", str(serving_clips["garbage"]), str(serving_clips["empty"]), str(serving_clips["short"]),
               "--url", triton_server.grpc_url)
    assert_one_line_error(proc, "garbage.wav: cannot decode audio", "empty.wav: cannot decode audio (file is 0 bytes)")
    assert str(serving_clips["short"]) in proc.stdout  # the good file was still classified


def test_predict_with_a_wrong_model_name_is_one_line_and_non_zero(triton_server, serving_clips):
    proc = ser("predict", str(serving_clips["short"]), "--url", triton_server.grpc_url, "--model", "no_such_model")
    assert_one_line_error(proc, "no_such_model")


def test_predict_against_a_dead_address_is_one_line_and_non_zero(serving_clips):
    port = free_ports(1)[0]
    proc = ser("predict", str(serving_clips["short"]), "--url", f"127.0.0.1:{port}", "--timeout-s", "3")
    assert_one_line_error(proc, f"127.0.0.1:{port}")


def test_export_of_a_missing_checkpoint_is_one_line_and_non_zero(tmp_path):
    proc = ser("export", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "nothing")
    assert not (tmp_path / "out" / "fp32").exists()


def test_export_then_repository_from_the_command_line(tiny_checkpoint, tmp_path):
    proc = ser("export", str(tiny_checkpoint), "--out", str(tmp_path / "exp"), "--repository", str(tmp_path / "repo"))
    assert proc.returncode == 0, proc.stderr
    for variant in ("fp32", "int8"):
        assert (tmp_path / "exp" / variant / "model.onnx").is_file()
        assert (tmp_path / "exp" / variant / "recipe.json").is_file()
        assert (tmp_path / "repo" / f"ser_{variant}" / "config.pbtxt").is_file()


def test_serve_refuses_a_folder_that_is_not_a_repository(tmp_path):
    proc = ser("serve", "--repository", str(tmp_path))
    assert_one_line_error(proc, "not a Triton model repository")
