"""The errors of training: corpora that cannot be read, checkpoints that cannot be loaded.

They belong to the bundle's one hierarchy (:class:`client.errors.SerError`), so the CLI prints
them on one line and exits with their ``exit_code``; they live here because only training and
what runs on top of it raise them, and a calling service never meets them.
"""

from __future__ import annotations

from client.errors import SerError


class CorpusError(SerError):
    """A corpus directory is missing, empty or not in the expected layout."""


class UnusableClipsError(CorpusError):
    """A strict run met corpus files it cannot use.

    Undecodable, silent, far out of the corpus's duration range, or misnamed; a run
    that is not strict skips and records them instead.

    Attributes:
        skipped: one line per file, ``path (reason: detail)``.
    """

    def __init__(self, what: str, skipped: list[str]) -> None:
        self.skipped = list(skipped)
        lines = "; ".join(self.skipped[:5])
        more = f" (+{len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
        super().__init__(f"{what}: {len(self.skipped)} unusable file(s): {lines}{more}")


class CheckpointError(SerError):
    """A checkpoint cannot be found or loaded."""
