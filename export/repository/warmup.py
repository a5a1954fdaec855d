"""The warmup input files of a native model.

``warmup/num_samples_<W>`` (one int64, little-endian), named by its config's ``model_warmup``.
"""

from __future__ import annotations

from pathlib import Path

from export.errors import ModelConfigError
from export.repository.names import WARMUP_DIR


def warmup_file_name(window_samples: int) -> str:
    """Name of the warmup file holding ``num_samples`` = W (one int64, little-endian)."""
    return f"num_samples_{window_samples}"


def write_warmup_files(message, model_dir: str | Path) -> list[Path]:
    """Write the ``warmup/`` files a config's ``model_warmup`` names (``num_samples`` = W, int64 LE)."""
    import numpy as np

    written = []
    for warm in message.model_warmup:
        for name, spec in warm.inputs.items():
            if not spec.input_data_file:
                continue
            prefix = "num_samples_"
            if not spec.input_data_file.startswith(prefix):
                raise ModelConfigError(f"model_warmup[{warm.name}].inputs[{name}]: unknown warmup file {spec.input_data_file!r}")
            path = Path(model_dir) / WARMUP_DIR / spec.input_data_file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(np.asarray([int(spec.input_data_file[len(prefix):])], dtype="<i8").tobytes())
            written.append(path)
    return written
