"""The export record (``recipe.json``) that lies beside every exported model, saying how it was made.

``<export>/<variant>/recipe.json`` says how ``model.onnx`` was made: the variant
and its options/preset, library versions and opset, the source checkpoint and
the sha256 of its weights, the sha256 of the produced model, the serving
contract, the parity results and when it was made. It round-trips:
``ExportRecord.read(recipe.write(path)) == recipe``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from client.contract import ModelContract
from client.errors import ConfigError
from export.errors import ExportError

RECIPE_FILENAME = "recipe.json"
MODEL_FILENAME = "model.onnx"
RECIPE_FORMAT = 1
#: Weight files of a Hugging Face checkpoint, in the order they are looked for.
WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")


def sha256_file(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (streamed: fine for multi-GB weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_weights_sha256(checkpoint: str | Path) -> str:
    r"""sha256 of a checkpoint's weights.

    One weight file: that file's sha256 (what ``sha256sum model.safetensors``
    prints). Sharded weights: sha256 over ``name\\0sha256\\n`` of every shard, by name.

    Raises:
        ExportError: no weight file in ``checkpoint``.
    """
    checkpoint = Path(checkpoint)
    for pattern in WEIGHT_PATTERNS:
        files = sorted(checkpoint.glob(pattern))
        if len(files) == 1:
            return sha256_file(files[0])
        if files:
            h = hashlib.sha256()
            for f in files:
                h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
            return h.hexdigest()
    raise ExportError(f"{checkpoint}: no weight file ({', '.join(WEIGHT_PATTERNS)})")


def library_versions(*, opset: int) -> dict[str, str]:
    """Versions of the libraries that shaped the model (:data:`export.versions.MODEL_LIBRARIES`), and the ONNX opset."""
    from export.versions import installed_versions

    return {**installed_versions(missing="not installed"), "opset": str(opset)}


def utc_now() -> str:
    """ISO-8601 UTC timestamp, seconds precision (``2025-01-31T12:00:00Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ExportRecord:
    """How one exported model was made.

    Attributes:
        variant: ``fp32``, ``int8``...
        preset: the quantization preset name (``None`` for fp32; ``"custom"`` for an explicit config).
        options: the variant's options (exporter options; quantization config).
        versions: torch, transformers, onnx, onnxruntime, opset.
        source_checkpoint: path of the checkpoint (as given, resolved).
        source_sha256: sha256 of the checkpoint's weights (:func:`checkpoint_weights_sha256`).
        model_sha256: sha256 of the produced ``model.onnx``.
        model_bytes: size of ``model.onnx``.
        contract: the serving contract (labels, rate, window, variant).
        parity: parity reports (``ParityReport.to_json()``), keyed by comparison.
        created: ISO-8601 UTC time of the export.
        format: recipe format version.
    """

    variant: str
    preset: str | None
    options: Mapping[str, Any]
    versions: Mapping[str, str]
    source_checkpoint: str
    source_sha256: str
    model_sha256: str
    model_bytes: int
    contract: ModelContract
    parity: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=utc_now)
    format: int = RECIPE_FORMAT

    def __post_init__(self) -> None:
        for name in ("source_sha256", "model_sha256"):
            value = getattr(self, name)
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise ConfigError(f"{name}={value!r}: expected a 64-digit lowercase hex sha256")
        if self.contract.variant != self.variant:
            raise ConfigError(f"variant={self.variant!r} but contract.variant={self.contract.variant!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "format": self.format,
            "variant": self.variant,
            "preset": self.preset,
            "options": json.loads(json.dumps(dict(self.options))),
            "versions": dict(self.versions),
            "source_checkpoint": self.source_checkpoint,
            "source_sha256": self.source_sha256,
            "model_sha256": self.model_sha256,
            "model_bytes": self.model_bytes,
            "contract": self.contract.to_json(),
            "parity": json.loads(json.dumps({k: dict(v) for k, v in self.parity.items()})),
            "created": self.created,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ExportRecord":
        """Inverse of :meth:`to_json`.

        Raises:
            ConfigError: a key is missing or malformed.
        """
        try:
            return cls(
                variant=d["variant"],
                preset=d.get("preset"),
                options=dict(d["options"]),
                versions=dict(d["versions"]),
                source_checkpoint=d["source_checkpoint"],
                source_sha256=d["source_sha256"],
                model_sha256=d["model_sha256"],
                model_bytes=int(d["model_bytes"]),
                contract=ModelContract.from_json(d["contract"]),
                parity={k: dict(v) for k, v in d.get("parity", {}).items()},
                created=d["created"],
                format=int(d.get("format", RECIPE_FORMAT)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"recipe: missing or malformed field: {exc}") from None

    def write(self, path: str | Path) -> Path:
        """Write as indented JSON (atomically: temp file + rename). Returns ``path``."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".recipe-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_json(), fh, indent=2, sort_keys=False)
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def read(cls, path: str | Path) -> "ExportRecord":
        """Read a recipe file.

        Raises:
            ExportError: missing or not JSON; ConfigError: malformed fields.
        """
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{path}: no recipe file")
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ExportError(f"{path}: not JSON: {exc}") from None
        try:
            return cls.from_json(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def verify_model(self, model_path: str | Path) -> None:
        """Check that ``model_path`` is the file this recipe describes.

        Raises:
            ExportError: its sha256 differs from :attr:`model_sha256`.
        """
        actual = sha256_file(model_path)
        if actual != self.model_sha256:
            raise ExportError(f"{model_path}: sha256 {actual[:12]}… does not match its recipe ({self.model_sha256[:12]}…)")
