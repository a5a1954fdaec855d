"""Build ``libtriton_onnxruntime.so`` with CMake and lay out the folder the server loads it from.

:func:`build_backend` is the whole job: check the tools and libraries, get and unpack the sources
(:mod:`deploy.native_backend.sources`), configure and build the backend target only (about 20 s on two
cores), then write ``<backends>/onnxruntime/`` with the library, links to ``libonnxruntime.so.1`` (the
pinned wheel's) and ``libtritonserver.so`` (the ``nvidia-pytriton`` wheel's, whose file name carries a
hash), and a stamp of the pins. :func:`is_current` says whether an existing build matches the pins.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploy.native_backend.errors import BackendBuildError
from deploy.native_backend.locate import (
    BACKEND_NAME,
    LIBRARY_NAME,
    STAMP_NAME,
    backends_dir,
    read_stamp,
)
from deploy.native_backend.pins import (
    BUILD_FILES,
    BUILD_TOOLS,
    CMAKE_OPTIONS,
    ONNXRUNTIME_VERSION,
    SERVER_VERSION,
    TRITON_RELEASE,
    pin_record,
)
from deploy.native_backend.sources import UnpackedSources, fetch_sources, unpack_sources

#: The nvidia-pytriton release that ships tritonserver ``SERVER_VERSION``.
PYTRITON_VERSION = "0.7.0"
#: The CMake target of the backend library alone (the project's other targets build tests and tools).
CMAKE_TARGET = "triton-onnxruntime-backend"


@dataclass(frozen=True)
class Libraries:
    """The prebuilt libraries the backend links and loads.

    Attributes:
        onnxruntime: the wheel's ``libonnxruntime.so.<version>``.
        onnxruntime_api: the highest C API version that library serves (its minor version).
        tritonserver: the ``nvidia-pytriton`` wheel's ``libtritonserver-<hash>.so``.
    """

    onnxruntime: Path
    onnxruntime_api: int
    tritonserver: Path


def _say(message: str) -> None:
    print(f"[onnxruntime backend] {message}", flush=True)


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_tools() -> None:
    """Raise one :class:`BackendBuildError` naming every missing build tool and the Debian package that has it."""
    missing = {pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None}
    missing |= {pkg for path, pkg in BUILD_FILES.items() if not Path(path).is_file()}
    if missing:
        raise BackendBuildError(
            f"building the ONNX Runtime backend needs {', '.join(sorted(missing))}: "
            f"apt-get install {' '.join(sorted(missing))}"
        )


def find_libraries() -> Libraries:
    """The pinned ONNX Runtime and tritonserver libraries in this environment.

    Raises:
        BackendBuildError: a wheel is missing, or its version is not the pinned one.
    """
    ort_version = _installed_version("onnxruntime")
    if ort_version is None:
        raise BackendBuildError(f"the onnxruntime wheel is not installed: pip install onnxruntime=={ONNXRUNTIME_VERSION}")
    if ort_version != ONNXRUNTIME_VERSION:
        raise BackendBuildError(
            f"onnxruntime {ort_version} is installed, but the backend is pinned to {ONNXRUNTIME_VERSION} "
            "(deploy/native_backend/pins.py and requirements/constraints.txt must agree)"
        )
    ort_spec = importlib.util.find_spec("onnxruntime")
    assert ort_spec is not None and ort_spec.submodule_search_locations
    capi = Path(list(ort_spec.submodule_search_locations)[0]) / "capi"
    ort_lib = capi / f"libonnxruntime.so.{ort_version}"
    if not ort_lib.is_file():
        raise BackendBuildError(f"{ort_lib}: the onnxruntime wheel has no C library there (a GPU or other build?)")
    pytriton_version = _installed_version("nvidia-pytriton")
    if pytriton_version != PYTRITON_VERSION:
        raise BackendBuildError(
            f"nvidia-pytriton {pytriton_version or 'is not installed'}: the backend is built from {TRITON_RELEASE} "
            f"for tritonserver {SERVER_VERSION}, which nvidia-pytriton=={PYTRITON_VERSION} ships"
        )
    spec = importlib.util.find_spec("pytriton")
    assert spec is not None and spec.submodule_search_locations
    libs = Path(list(spec.submodule_search_locations)[0]).parent / "nvidia_pytriton.libs"
    found = sorted(libs.glob("libtritonserver*.so*"))
    if not found:
        raise BackendBuildError(f"{libs}: no libtritonserver*.so in the nvidia-pytriton wheel")
    # Resolved: the same environment reached through a linked folder is the same build.
    return Libraries(onnxruntime=ort_lib.resolve(), onnxruntime_api=int(ort_version.split(".")[1]),
                     tritonserver=found[0].resolve())


def expected_stamp(libs: Libraries) -> dict[str, object]:
    """The record a build for these pins and libraries writes (compared by :func:`is_current`)."""
    return {**pin_record(), "onnxruntime_library": str(libs.onnxruntime), "tritonserver_library": str(libs.tritonserver)}


def is_current(out: Path | None = None) -> bool:
    """Whether ``<out>/onnxruntime`` was built for today's pins and libraries (False when anything is missing)."""
    folder = (out or backends_dir()) / BACKEND_NAME
    try:
        libs = find_libraries()
    except BackendBuildError:
        return False
    return (folder / LIBRARY_NAME).is_file() and read_stamp(folder) == expected_stamp(libs)


def _run(cmd: list[str], *, cwd: Path, log: Path, step: str) -> None:
    _say(step)
    with open(log, "ab") as out:
        out.write(("\n$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        rc = subprocess.call(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BackendBuildError(f"{step} failed (rc={rc}); the last lines of {log}:\n{tail}")


def _cmake(src: UnpackedSources, libs: Libraries, work: Path, log: Path, jobs: int) -> Path:
    """Configure and build; returns the built library."""
    lib_dir = work / "onnxruntime-lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libonnxruntime.so", "libonnxruntime.so.1"):
        (lib_dir / name).unlink(missing_ok=True)
        (lib_dir / name).symlink_to(libs.onnxruntime)
    build = work / "cmake-build"
    build.mkdir(parents=True, exist_ok=True)
    configure = [
        "cmake", str(src.repos["onnxruntime_backend"]),
        *CMAKE_OPTIONS,
        f"-DTRITON_ONNXRUNTIME_INCLUDE_PATHS={src.headers}",
        f"-DTRITON_ONNXRUNTIME_LIB_PATHS={lib_dir}",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-COMMON={src.repos['common']}",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-CORE={src.repos['core']}",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-BACKEND={src.repos['backend']}",
        # common always adds its unit tests, which want googletest: Debian's source copy, never a download.
        "-DFETCHCONTENT_SOURCE_DIR_GOOGLETEST=/usr/src/googletest",
    ]
    _run(configure, cwd=build, log=log, step="configuring with CMake")
    _run(["cmake", "--build", ".", "--target", CMAKE_TARGET, "-j", str(jobs)], cwd=build, log=log,
         step=f"compiling {LIBRARY_NAME} ({jobs} jobs, about 20 s on two cores)")
    built = build / LIBRARY_NAME
    if not built.is_file():
        raise BackendBuildError(f"CMake finished but {built} is missing; see {log}")
    return built


def install(built: Path, libs: Libraries, out: Path) -> Path:
    """Write ``<out>/onnxruntime/``: the library, links to the libraries it loads, the stamp. Returns that folder."""
    folder = out / BACKEND_NAME
    staging = out / (BACKEND_NAME + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy2(built, staging / LIBRARY_NAME)
    (staging / "libonnxruntime.so.1").symlink_to(libs.onnxruntime)
    # The wheel renames libtritonserver.so; the backend's NEEDED entry is the plain name.
    (staging / "libtritonserver.so").symlink_to(libs.tritonserver)
    (staging / STAMP_NAME).write_text(json.dumps(expected_stamp(libs), indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def build_backend(*, sources: Path | None = None, out: Path | None = None, force: bool = False, jobs: int | None = None) -> Path:
    """Build the ONNX Runtime backend for the pinned server and wheel, unless a current build exists.

    Args:
        sources: a local source folder (see :mod:`deploy.native_backend.sources`); None fetches from GitHub.
        out: the backends folder (default :func:`deploy.native_backend.locate.backends_dir`).
        force: rebuild even when the stamp matches.
        jobs: parallel compile jobs (default: the CPUs this process may use).

    Returns:
        The ``<out>/onnxruntime`` folder, ready for ``--backend-directory=<out>``.

    Raises:
        BackendBuildError: a tool, source or library is missing, a version does not match, or the build failed.
    """
    out = (out or backends_dir()).expanduser().resolve()
    libs = find_libraries()
    folder = out / BACKEND_NAME
    if not force and is_current(out):
        _say(f"up to date: {folder}")
        return folder
    check_tools()
    if sources is not None and not Path(sources).expanduser().is_dir():
        raise BackendBuildError(f"{sources}: the backend source folder does not exist")
    out.mkdir(parents=True, exist_ok=True)
    jobs = jobs or max(1, len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory(prefix="ort-backend-", dir=out) as tmp:
        work = Path(tmp)
        log = out / "build.log"
        if sources is None:
            source_dir = fetch_sources(out / "downloads")
        else:
            source_dir = Path(sources).expanduser()
            _say(f"sources from {source_dir}")
        src = unpack_sources(source_dir, work / "src")
        if src.api_version > libs.onnxruntime_api:
            raise BackendBuildError(
                f"{src.headers}: ONNX Runtime C API headers of API {src.api_version}, but {libs.onnxruntime.name} "
                f"serves API versions up to {libs.onnxruntime_api}: use headers of onnxruntime {ONNXRUNTIME_VERSION} or older"
            )
        _say(f"{TRITON_RELEASE} (tritonserver {SERVER_VERSION}) against {libs.onnxruntime.name}, C API {src.api_version}")
        log.write_text("")  # only once the sources are there: a refused build leaves no empty log behind
        built = _cmake(src, libs, work, log, jobs)
        folder = install(built, libs, out)
    _say(f"built {folder / LIBRARY_NAME}")
    return folder
