"""The sources of Triton's ONNX Runtime backend and why they match what the bundle runs.

* The bundled server is ``tritonserver`` 2.51 (the ``nvidia-pytriton`` 0.7.0 wheel); Triton tags each
  server release on a branch named after its container release: 2.51 is ``r24.10``. The backend, and the
  ``backend``/``core``/``common`` repositories it compiles in, are taken at that branch's commits, so the
  backend speaks the server's TRITONBACKEND API (1.19).
* ONNX Runtime is not built: the backend links the C library of the pinned ``onnxruntime`` wheel
  (``onnxruntime/capi/libonnxruntime.so.<version>``). The C API header it compiles against must not ask
  for a newer API than that library serves (the library answers every API version up to its own minor).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The tritonserver release the wheel ships, and the release branch it was built from.
SERVER_VERSION = "2.51"
TRITON_RELEASE = "r24.10"

#: The commits of ``TRITON_RELEASE`` in each repository (pinned: a branch can move).
TRITON_COMMITS = {
    "onnxruntime_backend": "17e5cb23a6fbeb37282eb7079dd0b580cd79530d",
    "backend": "ac03a5d97403dec841ad46d0439e93db12c9268f",
    "core": "bfec7c61dc0939433f64f14e89b1973073eac8ba",
    "common": "578491fc3944f77d16a6a38e3d7691c485c47ba0",
}

#: The ONNX Runtime wheel the backend links (requirements/constraints.txt pins the same).
ONNXRUNTIME_VERSION = "1.32.0"

#: The ONNX Runtime C API headers the backend compiles against.
ORT_HEADERS = ("onnxruntime_c_api.h", "onnxruntime_ep_c_api.h", "onnxruntime_error_code.h")

#: Debian packages the build needs (``apt-get install``), by the tool or file that shows each is there.
BUILD_TOOLS = {"cmake": "cmake", "g++": "g++", "make": "make"}
BUILD_FILES = {
    "/usr/include/rapidjson/document.h": "rapidjson-dev",
    "/usr/src/googletest/CMakeLists.txt": "googletest",
}


@dataclass(frozen=True)
class SourceArchive:
    """One source archive of the build.

    Attributes:
        file: its name in a local source folder (``triton-<repo>-r24.10.tar.gz``...).
        url: where it is fetched from when no local folder is given.
        folder: the folder it unpacks into (its top-level folder is renamed to this).
    """

    file: str
    url: str
    folder: str


def triton_archives() -> tuple[SourceArchive, ...]:
    """The four Triton repositories at their pinned commits."""
    return tuple(
        SourceArchive(
            file=f"triton-{repo}-{TRITON_RELEASE}.tar.gz",
            url=f"https://github.com/triton-inference-server/{repo}/archive/{commit}.tar.gz",
            folder=repo,
        )
        for repo, commit in TRITON_COMMITS.items()
    )


#: A local folder's archive of the C API headers (any ``onnxruntime-c-api-headers-*.tar.gz``).
HEADER_ARCHIVE_GLOB = "onnxruntime-c-api-headers-*.tar.gz"
#: The headers' home on GitHub, at the wheel's release tag.
HEADER_URL = "https://raw.githubusercontent.com/microsoft/onnxruntime/v{version}/include/onnxruntime/core/session/{name}"


def pin_record() -> dict[str, object]:
    """Everything that, when changed, must rebuild the backend (written into the build stamp)."""
    return {
        "server_version": SERVER_VERSION,
        "triton_release": TRITON_RELEASE,
        "triton_commits": dict(TRITON_COMMITS),
        "onnxruntime_version": ONNXRUNTIME_VERSION,
        "cmake_options": list(CMAKE_OPTIONS),
    }


#: CMake options of the CPU build (GPU providers need CUDA; the NGC container has its own GPU build).
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DTRITON_ENABLE_GPU=OFF",
    "-DTRITON_ENABLE_ONNXRUNTIME_TENSORRT=OFF",
    "-DTRITON_ENABLE_ONNXRUNTIME_OPENVINO=OFF",
    f"-DTRITON_BACKEND_REPO_TAG={TRITON_RELEASE}",
    f"-DTRITON_CORE_REPO_TAG={TRITON_RELEASE}",
    f"-DTRITON_COMMON_REPO_TAG={TRITON_RELEASE}",
    "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
)
