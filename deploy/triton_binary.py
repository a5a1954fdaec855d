"""Where the ``tritonserver`` of the ``nvidia-pytriton`` wheel lives, and what it needs to run.

The wheel ships a real ``tritonserver`` (2.51) with the python backend; nothing from
pytriton's Python API is used, only its files. This module finds them without importing
pytriton (:func:`find_installation`), lays out the backend directory the server is
pointed at (:func:`make_backend_directory`) and builds the server's environment
(:func:`server_env`). :class:`deploy.local_triton.LocalTriton` uses all three.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from client.errors import ServerStartError

#: Name of the backend stub executable (one per Python version in the wheel).
STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class TritonInstallation:
    """Files of the tritonserver shipped in the ``nvidia-pytriton`` wheel.

    Attributes:
        server: the ``tritonserver`` executable.
        python_backend: ``libtriton_python.so``.
        backend_utils: ``triton_python_backend_utils.py``.
        stub: ``triton_python_backend_stub`` built for the running Python version.
        cache_dir: the response-cache implementations (``--cache-directory``).
    """

    server: Path
    python_backend: Path
    backend_utils: Path
    stub: Path
    cache_dir: Path


def find_installation() -> TritonInstallation:
    """Locate the tritonserver binary and python backend without importing pytriton.

    Raises:
        ServerStartError: nvidia-pytriton is not installed, or lacks a stub for
            this Python version.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(
            "tritonserver not found: install nvidia-pytriton==0.7.0 (pip install -e '.[full]') "
            "or run the NGC container (deploy/gpu/run-triton.sh)"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    inst = TritonInstallation(
        server=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python" / "libtriton_python.so",
        backend_utils=root / "backends" / "python" / "triton_python_backend_utils.py",
        stub=root / "python_backend_stubs" / version / STUB_NAME,
        cache_dir=root / "caches",
    )
    missing = [str(p) for p in (inst.server, inst.python_backend, inst.backend_utils, inst.stub) if not p.exists()]
    if missing:
        raise ServerStartError(f"tritonserver installation at {root} is incomplete for Python {version}: missing {missing}")
    return inst


def make_backend_directory(inst: TritonInstallation, root: Path, *, onnxruntime: Path | None = None) -> Path:
    """Write ``<root>/backends/python/`` of symlinks to the backend, its utilities and the stub.

    The server looks for the stub of the running Python version only in the python
    backend's own folder, hence the layout. With ``onnxruntime`` (a built backend folder,
    :func:`deploy.native_backend.locate.find_onnxruntime_backend`), ``<root>/backends/onnxruntime``
    links to it. Returns ``<root>/backends`` (``--backend-directory``).
    """
    backend = root / "backends" / "python"
    backend.mkdir(parents=True)
    for src in (inst.python_backend, inst.backend_utils, inst.stub):
        (backend / src.name).symlink_to(src)
    if onnxruntime is not None:
        (root / "backends" / "onnxruntime").symlink_to(onnxruntime, target_is_directory=True)
    return root / "backends"


#: A config line that puts a model on Triton's ONNX Runtime backend.
_NATIVE_LINE = re.compile(r'^\s*(platform:\s*"onnxruntime_onnx"|backend:\s*"onnxruntime")\s*$', re.M)


def native_models(repository: Path) -> list[str]:
    """Models of ``repository`` that run on Triton's ONNX Runtime backend (``platform: "onnxruntime_onnx"``)."""
    found = []
    for config in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            text = config.read_text(errors="replace")
        except OSError:
            continue
        if _NATIVE_LINE.search(text):
            found.append(config.parent.name)
    return found


def server_env() -> dict[str, str]:
    """Environment for tritonserver: venv ``bin`` first on PATH, libpython's dir on LD_LIBRARY_PATH.

    The stub's embedded interpreter finds the virtual environment from ``python3`` on
    ``PATH``, and the stub links libpython from the interpreter's ``LIBDIR``.
    """
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != bindir]])
    libdirs = [d for d in (sysconfig.get_config_var("LIBDIR"),) if d and Path(d).is_dir()]
    old = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys([*libdirs, *old]))
    env.pop("PYTHONPATH", None)  # ignored by the isolated stub interpreter anyway
    return env
