"""The backend's sources: read from a local folder, or fetched from GitHub into one, then unpacked.

A local source folder holds the archives named in :mod:`deploy.native_backend.pins`
(``triton-<repo>-r24.10.tar.gz`` for ``onnxruntime_backend``, ``backend``, ``core`` and ``common``, and
one ``onnxruntime-c-api-headers-*.tar.gz``), or the same repositories already unpacked as folders named
after them (``onnxruntime_backend/``...) and an ``onnxruntime-c-api/`` folder of headers. Machines
without access to GitHub (CI) point the build at such a folder; everyone else lets the build fetch the
pinned commits.
"""

from __future__ import annotations

import re
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.native_backend.errors import BackendBuildError
from deploy.native_backend.pins import (
    HEADER_ARCHIVE_GLOB,
    HEADER_URL,
    ONNXRUNTIME_VERSION,
    ORT_HEADERS,
    triton_archives,
)

#: Seconds a download may stall before the build gives up on it.
DOWNLOAD_TIMEOUT_S = 60.0
#: The folder of C API headers inside the unpacked tree.
HEADERS_FOLDER = "onnxruntime-c-api"


@dataclass(frozen=True)
class UnpackedSources:
    """Unpacked source trees, ready for CMake.

    Attributes:
        repos: ``{"onnxruntime_backend" | "backend" | "core" | "common": folder with its CMakeLists.txt}``.
        headers: folder holding the ONNX Runtime C API headers.
        api_version: ``ORT_API_VERSION`` of those headers.
    """

    repos: dict[str, Path]
    headers: Path
    api_version: int


def _say(message: str) -> None:
    print(f"[onnxruntime backend] {message}", flush=True)


def fetch_sources(into: Path) -> Path:
    """Download the pinned archives and headers from GitHub into ``into`` (a local source folder). Returns ``into``.

    Raises:
        BackendBuildError: a download failed (the message names the URL and suggests a local folder).
    """
    into.mkdir(parents=True, exist_ok=True)
    wanted = [(a.url, into / a.file) for a in triton_archives()]
    header_dir = into / HEADERS_FOLDER
    wanted += [(HEADER_URL.format(version=ONNXRUNTIME_VERSION, name=name), header_dir / name) for name in ORT_HEADERS]
    for url, target in wanted:
        if target.is_file() and target.stat().st_size > 0:
            continue
        _say(f"fetching {url}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise BackendBuildError(
                f"{url}: cannot download ({exc}); on a machine without GitHub access give a local source folder "
                "(TRITON_BACKEND_SOURCES=DIR for make, --sources DIR for python -m deploy.native_backend)"
            ) from None
        partial.replace(target)
    return into


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` so that its single top-level folder becomes ``dest``."""
    staging = dest.with_name(dest.name + ".unpack")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            if sys.version_info >= (3, 12) or hasattr(tarfile, "data_filter"):
                tar.extractall(staging, filter="data")
            else:  # pragma: no cover - Pythons without extraction filters
                tar.extractall(staging)  # noqa: S202 - pinned archives of public repositories
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BackendBuildError(f"{archive}: not a readable .tar.gz ({exc})") from None
    entries = list(staging.iterdir())
    top = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
    shutil.rmtree(dest, ignore_errors=True)
    top.rename(dest)
    shutil.rmtree(staging, ignore_errors=True)


def header_api_version(header: Path) -> int:
    """``ORT_API_VERSION`` defined in ``onnxruntime_c_api.h``."""
    match = re.search(r"^#define\s+ORT_API_VERSION\s+(\d+)", header.read_text(errors="replace"), re.M)
    if match is None:
        raise BackendBuildError(f"{header}: no '#define ORT_API_VERSION' line: not an ONNX Runtime C API header")
    return int(match.group(1))


def unpack_sources(source_dir: Path, work: Path) -> UnpackedSources:
    """Unpack every source found in ``source_dir`` into ``work``.

    Raises:
        BackendBuildError: a repository or the headers are missing from ``source_dir`` (all missing pieces named).
    """
    source_dir = Path(source_dir).expanduser().resolve()
    if not source_dir.is_dir():
        raise BackendBuildError(f"{source_dir}: the backend source folder does not exist")
    work.mkdir(parents=True, exist_ok=True)
    repos: dict[str, Path] = {}
    missing: list[str] = []
    for archive in triton_archives():
        as_folder = source_dir / archive.folder
        if (as_folder / "CMakeLists.txt").is_file():
            repos[archive.folder] = as_folder
        elif (source_dir / archive.file).is_file():
            _unpack(source_dir / archive.file, work / archive.folder)
            repos[archive.folder] = work / archive.folder
        else:
            missing.append(f"{archive.file} (or a folder {archive.folder}/)")
    headers = source_dir / HEADERS_FOLDER
    if not all((headers / name).is_file() for name in ORT_HEADERS):
        found = sorted(source_dir.glob(HEADER_ARCHIVE_GLOB))
        if found:
            _unpack(found[-1], work / HEADERS_FOLDER)
            headers = work / HEADERS_FOLDER
        else:
            missing.append(f"{HEADER_ARCHIVE_GLOB} (or a folder {HEADERS_FOLDER}/ with {', '.join(ORT_HEADERS)})")
    if missing:
        raise BackendBuildError(f"{source_dir}: missing backend sources: {'; '.join(missing)}")
    absent = [name for name in ORT_HEADERS if not (headers / name).is_file()]
    if absent:
        raise BackendBuildError(f"{headers}: the header archive lacks {absent}")
    return UnpackedSources(repos=repos, headers=headers, api_version=header_api_version(headers / ORT_HEADERS[0]))
