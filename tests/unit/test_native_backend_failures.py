"""The ONNX Runtime backend build and the node's CPU count: every missing piece is one clear error.

The build itself (CMake over the pinned sources) runs in ``make venv``; these tests check what it
refuses and finds, without compiling.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from client.errors import ServerStartError
from deploy.native_backend import build, locate, sources
from deploy.native_backend.errors import BackendBuildError
from deploy.native_backend.pins import ORT_HEADERS, triton_archives
from deploy.node import cgroup_cpu_limit, usable_cpus


def _archive(path: Path, top: str, files: dict[str, str]) -> None:
    staging = path.parent / (path.name + ".d") / top
    for name, text in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(staging, arcname=top)
    shutil.rmtree(staging.parent)


def _source_folder(root: Path, *, api: int = 29, skip: str | None = None) -> Path:
    root.mkdir()
    for archive in triton_archives():
        if archive.folder != skip:
            _archive(root / archive.file, f"{archive.folder}-abc123", {"CMakeLists.txt": "project(x)\n"})
    headers = {name: "" for name in ORT_HEADERS}
    headers[ORT_HEADERS[0]] = f"#pragma once\n#define ORT_API_VERSION {api}\n"
    _archive(root / "onnxruntime-c-api-headers-test.tar.gz", "onnxruntime-c-api", headers)
    return root


def test_a_local_source_folder_unpacks_every_repository_and_reads_the_header_api(tmp_path):
    src = sources.unpack_sources(_source_folder(tmp_path / "src", api=29), tmp_path / "work")
    assert sorted(src.repos) == ["backend", "common", "core", "onnxruntime_backend"]
    assert all((folder / "CMakeLists.txt").is_file() for folder in src.repos.values())
    assert src.api_version == 29 and (src.headers / "onnxruntime_c_api.h").is_file()


def test_a_missing_archive_is_named_with_the_folder(tmp_path):
    with pytest.raises(BackendBuildError, match=r"missing backend sources: triton-core-r24\.10\.tar\.gz"):
        sources.unpack_sources(_source_folder(tmp_path / "src", skip="core"), tmp_path / "work")


def test_a_source_folder_that_does_not_exist_is_one_error(tmp_path):
    with pytest.raises(BackendBuildError, match="does not exist"):
        sources.unpack_sources(tmp_path / "nope", tmp_path / "work")


def test_a_header_without_an_api_version_is_refused(tmp_path):
    header = tmp_path / "onnxruntime_c_api.h"
    header.write_text("// nothing here\n")
    with pytest.raises(BackendBuildError, match="ORT_API_VERSION"):
        sources.header_api_version(header)


def test_headers_newer_than_the_wheels_library_are_refused_before_compiling(tmp_path, monkeypatch):
    libs = build.find_libraries()
    monkeypatch.setattr(build, "check_tools", lambda: None)
    folder = _source_folder(tmp_path / "src", api=libs.onnxruntime_api + 1)
    with pytest.raises(BackendBuildError, match=rf"API {libs.onnxruntime_api + 1}.*up to {libs.onnxruntime_api}"):
        build.build_backend(sources=folder, out=tmp_path / "out", force=True)
    assert not (tmp_path / "out" / "onnxruntime").exists()


def test_the_wheel_versions_are_the_pinned_ones_and_a_mismatch_is_named(monkeypatch):
    libs = build.find_libraries()
    assert libs.onnxruntime.is_file() and libs.tritonserver.is_file()
    monkeypatch.setattr(build, "ONNXRUNTIME_VERSION", "0.0.1")
    with pytest.raises(BackendBuildError, match=r"onnxruntime .* is installed, but the backend is pinned to 0\.0\.1"):
        build.find_libraries()


def test_missing_build_tools_name_their_debian_packages(monkeypatch):
    monkeypatch.setattr(build.shutil, "which", lambda tool: None)
    with pytest.raises(BackendBuildError, match=r"apt-get install .*cmake.*g\+\+"):
        build.check_tools()


def test_an_unreachable_github_names_the_url_and_the_local_folder_option(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "triton_archives", lambda: triton_archives()[:1])
    import urllib.request

    def refuse(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(BackendBuildError, match=r"github\.com/triton-inference-server/onnxruntime_backend.*TRITON_BACKEND_SOURCES"):
        sources.fetch_sources(tmp_path / "dl")
    assert not list((tmp_path / "dl").glob("*.part"))


def test_the_built_backend_is_current_and_an_empty_folder_is_not(tmp_path):
    assert locate.find_onnxruntime_backend() is not None, "make venv builds the backend; the suite runs after it"
    assert build.is_current()
    assert locate.find_onnxruntime_backend(tmp_path) is None and not build.is_current(tmp_path)


def test_a_native_repository_without_the_backend_is_refused_before_launch(native_repository, tmp_path, monkeypatch):
    from deploy.local_triton import LocalTriton

    monkeypatch.setenv(locate.BACKENDS_ENV, str(tmp_path))
    with pytest.raises(ServerStartError, match=r"ser_fp32.*ONNX Runtime backend.*make venv"):
        LocalTriton(native_repository)


def test_a_portable_repository_needs_no_onnxruntime_backend(portable_repository, tmp_path, monkeypatch):
    from deploy.local_triton import LocalTriton

    monkeypatch.setenv(locate.BACKENDS_ENV, str(tmp_path))
    assert LocalTriton(portable_repository).native_models == []


@pytest.mark.parametrize(("v2", "expected"), [("max 100000", None), ("150000 100000", 1.5), ("200000 100000", 2.0)])
def test_the_cgroup_quota_is_read_in_cpus(tmp_path, v2, expected):
    (tmp_path / "cpu.max").write_text(v2 + "\n")
    assert cgroup_cpu_limit(v2=tmp_path / "cpu.max", v1_quota=tmp_path / "q", v1_period=tmp_path / "p") == expected


def test_a_v1_cgroup_quota_is_read_too_and_no_file_means_no_limit(tmp_path):
    (tmp_path / "q").write_text("50000\n")
    (tmp_path / "p").write_text("100000\n")
    assert cgroup_cpu_limit(v2=tmp_path / "none", v1_quota=tmp_path / "q", v1_period=tmp_path / "p") == 0.5
    assert cgroup_cpu_limit(v2=tmp_path / "none", v1_quota=tmp_path / "none", v1_period=tmp_path / "none") is None


def test_usable_cpus_is_capped_by_the_quota_rounded_up(monkeypatch):
    import deploy.node as node

    monkeypatch.setattr(node.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(node, "cgroup_cpu_limit", lambda: 1.5)
    assert usable_cpus() == 2
    monkeypatch.setattr(node, "cgroup_cpu_limit", lambda: None)
    assert usable_cpus() == 4


def test_the_thread_flags_share_one_pool_and_refuse_zero():
    from client.errors import ConfigError
    from deploy.flags import onnxruntime_thread_args

    assert onnxruntime_thread_args(3) == [
        "--backend-config=onnxruntime,enable-global-threadpool=1",
        "--backend-config=onnxruntime,intra_op_thread_count=3",
        "--backend-config=onnxruntime,inter_op_thread_count=1",
    ]
    with pytest.raises(ConfigError, match="threads=0"):
        onnxruntime_thread_args(0)


def test_a_missing_source_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "check_tools", lambda: None)
    with pytest.raises(BackendBuildError, match="does not exist"):
        build.build_backend(sources=tmp_path / "nope", out=tmp_path / "out", force=True)
    assert not (tmp_path / "out").exists()


def test_ser_serve_names_how_to_write_a_missing_repository(tmp_path):
    from tests.helpers import ser

    proc = ser("serve", "--runtime", "native", "--repository", str(tmp_path / "none"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "make demo" in proc.stderr, proc.stderr
