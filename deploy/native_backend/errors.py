"""The one error the backend build raises."""

from __future__ import annotations

from client.errors import SerError


class BackendBuildError(SerError):
    """The ONNX Runtime backend cannot be built or found: a missing source, tool or library, or a version mismatch.

    The message names the missing piece and what to do about it.
    """
