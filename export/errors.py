"""The errors of export: ONNX export, quantization, parity checks, repository writing and reading.

They belong to the bundle's one hierarchy (:class:`client.errors.SerError`), so the CLI prints
them on one line and exits with their ``exit_code``; they live here because only export and
what runs on top of it raise them, and a calling service never meets them.
"""

from __future__ import annotations

from client.errors import SerError


class ExportError(SerError):
    """ONNX export, quantization or repository writing failed."""


class ParityError(ExportError):
    """An exported model disagrees with its source beyond tolerance.

    Attributes:
        mismatches: one human-readable line per failed comparison.
    """

    def __init__(self, what: str, mismatches: list[str]) -> None:
        self.mismatches = list(mismatches)
        lines = "; ".join(self.mismatches[:8])
        more = f" (+{len(self.mismatches) - 8} more)" if len(self.mismatches) > 8 else ""
        super().__init__(f"{what}: {len(self.mismatches)} mismatch(es): {lines}{more}")


class ModelConfigError(ExportError):
    """A Triton model config is invalid or does not match its ONNX graph."""


class BatchDependenceError(ParityError):
    """A model's answer for a window changes with the other windows of its batch (beyond tolerance).

    Served batches are formed by Triton's dynamic batcher from different callers, so such a model
    gives a caller an answer that depends on who else was calling.
    """
