"""The ``ser`` command line, run as a user runs it (a subprocess), against the real local server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local_triton import free_ports
from tests.helpers import REPO_ROOT, assert_one_line_error, ser


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


def test_export_with_report_writes_a_report_whose_numbers_match_the_files_it_names(trained_checkpoint, tmp_path):
    import numpy as np

    from export.recipe import ExportRecord, sha256_file
    from training.folds import read_manifest
    from training.model import CheckpointInfo

    checkpoint, corpus, manifest = trained_checkpoint
    out = tmp_path / "exp"
    proc = ser("export", str(checkpoint), "--out", str(out), "--variants", "fp32,int8", "--report",
               "--manifest", str(manifest), "--report-threads", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report_dir = out / "report"
    assert f"wrote {report_dir}/report.{{json,md}}" in proc.stdout
    expected = {"report.json", "report.md"} | {f"confusion_{v}{suffix}" for v in ("fp32", "int8")
                                                for suffix in (".json", "_counts.png", "_normalized.png")}
    assert {p.name for p in report_dir.iterdir()} == expected

    data = json.loads((report_dir / "report.json").read_text())
    clips = len(read_manifest(manifest, root=corpus).test)
    assert clips >= 16
    assert (data["format"], data["export_dir"], data["data"], data["partition"]) == (1, str(out), str(manifest), "test")
    assert data["labelled"] is True and data["clips"] == clips and data["threads"] == 1
    assert data["labels"] == list(CheckpointInfo.load(checkpoint).labels)
    assert [line["variant"] for line in data["variants"]] == ["fp32", "int8"]
    markdown = (report_dir / "report.md").read_text()
    fp32_bytes = (out / "fp32" / "model.onnx").stat().st_size
    for line in data["variants"]:
        v = line["variant"]
        model = out / v / "model.onnx"
        assert line["model_path"] == str(model) and model.is_file()
        assert line["size_bytes"] == model.stat().st_size
        assert line["size_vs_fp32"] == pytest.approx(line["size_bytes"] / fp32_bytes)
        assert line["model_sha256"] == sha256_file(model) == ExportRecord.read(out / v / "recipe.json").model_sha256
        assert line["preset"] == ExportRecord.read(out / v / "recipe.json").preset
        assert 0.0 <= line["accuracy"] <= 1.0 and 0.0 <= line["weighted_f1"] <= 1.0
        assert 0.0 <= line["label_agreement"] <= 1.0 and line["max_abs_prob_diff"] >= 0.0
        assert set(line["latency_ms"]) == {"1", "8"}
        assert all(lat["runs"] == 10 and 0 < lat["median"] <= lat["p95"] for lat in line["latency_ms"].values())
        assert line["confusion"] == {"json": f"confusion_{v}.json", "counts": f"confusion_{v}_counts.png",
                                     "normalized": f"confusion_{v}_normalized.png"}
        counts = np.array(json.loads((report_dir / line["confusion"]["json"]).read_text())["counts"])
        assert counts.sum() == clips and np.trace(counts) == round(line["accuracy"] * clips)
        for png in ("counts", "normalized"):
            assert (report_dir / line["confusion"][png]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert line["model_sha256"] in markdown and f"{line['label_agreement']:.3f}" in markdown
        assert f"{100 * line['accuracy']:.1f}%" in markdown
    fp32, int8 = data["variants"]
    assert fp32["label_agreement"] == 1.0 and fp32["max_abs_prob_diff"] == 0.0 and fp32["size_vs_fp32"] == 1.0
    assert fp32["preset"] is None and int8["preset"] is not None and int8["size_vs_fp32"] < 1.0


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """``{relative path: (inode, bytes)}`` of every file under ``folder``, and the inode of every folder."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, b"" if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(("option", "name", "reason"), [
    ("--manifest", "no-such-split.json", "no such split manifest"),
    ("--audio-dir", "no-such-folder", "no such audio folder"),
    ("--audio-dir", "notes-only", "no audio files"),  # a folder holding a .txt file and no audio
])
def test_export_report_with_a_bad_data_source_is_one_line_and_keeps_the_previous_export(
        option, name, reason, tiny_checkpoint, exported_tiny, tmp_path):
    import shutil

    out = tmp_path / "exp"
    shutil.copytree(exported_tiny, out)
    (out / "report").mkdir()
    (out / "report" / "report.json").write_text('{"format": 1}\n')
    before = _snapshot(out)
    source = tmp_path / name
    if name == "notes-only":
        source.mkdir()
        (source / "readme.txt").write_text("not audio\n")
    proc = ser("export", str(tiny_checkpoint), "--out", str(out), "--report", option, str(source))
    assert_one_line_error(proc, f"{source}: {reason}")
    assert "exported" not in proc.stdout  # refused before exporting, not after
    assert _snapshot(out) == before  # the previous export and report are untouched (same files, same inodes)
