"""Which versions of the libraries are installed: the one collector for recipes and benchmark reports."""

from __future__ import annotations

import platform
from typing import Sequence

#: The distributions that shape an exported model (recorded in every recipe).
MODEL_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime")


def installed_versions(dists: Sequence[str] = MODEL_LIBRARIES, *, missing: str | None = None,
                       python: bool = False) -> dict[str, str]:
    """Installed version of each distribution, by its package-index name.

    Args:
        dists: distribution names, e.g. ``("torch", "onnxruntime-gpu")``.
        missing: the value recorded for a distribution that is not installed; ``None`` leaves it out.
        python: also record the interpreter's version under ``"python"`` (first).

    Returns:
        ``{name: version}`` in the order asked for.
    """
    import importlib.metadata as md

    out = {"python": platform.python_version()} if python else {}
    for dist in dists:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            if missing is not None:
                out[dist] = missing
    return out
