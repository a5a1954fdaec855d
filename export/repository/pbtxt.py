"""``config.pbtxt`` on disk: a ``ModelConfig`` message read and written as protobuf text format."""

from __future__ import annotations

from pathlib import Path

from export.errors import ModelConfigError
from export.repository.names import CONFIG_FILENAME


def read_model_config(model_dir: str | Path):
    """Parse ``<model_dir>/config.pbtxt`` into a ``model_config_pb2.ModelConfig`` (field names and enums only).

    Raises:
        ModelConfigError: the file is missing or does not parse; names the file.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    path = Path(model_dir) / CONFIG_FILENAME
    if not path.is_file():
        raise ModelConfigError(f"{path}: no {CONFIG_FILENAME} (not a model of a Triton repository)")
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelConfigError(f"{path}: not a valid Triton ModelConfig: {exc}") from None


def write_config(message, path: str | Path) -> Path:
    """Write a ModelConfig message as protobuf text format."""
    from google.protobuf import text_format

    Path(path).write_text(text_format.MessageToString(message))
    return Path(path)

