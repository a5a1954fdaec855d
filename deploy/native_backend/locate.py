"""Where a built ONNX Runtime backend lives, and finding it at serve time.

The build writes ``<backends>/onnxruntime/`` (the folder layout ``--backend-directory`` expects):
``libtriton_onnxruntime.so``, links to the ONNX Runtime and ``libtritonserver`` libraries it loads, and
``BUILD_INFO.json`` (the pins it was built from). ``<backends>`` is ``build/triton-backends`` in the
checkout, or ``$SER_TRITON_BACKENDS`` when set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from client.errors import ServerStartError

#: Environment variable that moves the built backends out of the checkout.
BACKENDS_ENV = "SER_TRITON_BACKENDS"
#: The backend's folder name under the backends folder (Triton looks for ``<dir>/<backend>/libtriton_<backend>.so``).
BACKEND_NAME = "onnxruntime"
LIBRARY_NAME = "libtriton_onnxruntime.so"
STAMP_NAME = "BUILD_INFO.json"
#: Libraries the backend loads from its own folder (its RUNPATH is ``$ORIGIN``).
BESIDE_LIBRARIES = ("libonnxruntime.so.1", "libtritonserver.so")


def backends_dir() -> Path:
    """The folder that holds built backends (``$SER_TRITON_BACKENDS`` or ``<checkout>/build/triton-backends``)."""
    configured = os.environ.get(BACKENDS_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "build" / "triton-backends"


def read_stamp(folder: Path) -> dict | None:
    """The build record of a backend folder, or None when it has none or it is unreadable."""
    try:
        return json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def find_onnxruntime_backend(root: Path | None = None) -> Path | None:
    """The built ``<backends>/onnxruntime`` folder, or None when it is not built or a library it needs is gone.

    Args:
        root: the backends folder (default :func:`backends_dir`).
    """
    folder = (root or backends_dir()) / BACKEND_NAME
    if not (folder / LIBRARY_NAME).is_file() or read_stamp(folder) is None:
        return None
    if not all((folder / name).exists() for name in BESIDE_LIBRARIES):  # exists() follows the links
        return None
    return folder


def require_onnxruntime_backend(repository: Path, models: list[str]) -> Path:
    """The built backend folder for serving ``models`` of ``repository``.

    Raises:
        ServerStartError: it is not built (the message names the models and how to build it).
    """
    folder = find_onnxruntime_backend()
    if folder is None:
        raise ServerStartError(
            f"{repository}: models {models} run on Triton's ONNX Runtime backend, which is not built in "
            f"{backends_dir()}: run `make venv` (it builds it) or `python -m deploy.native_backend`"
        )
    return folder
