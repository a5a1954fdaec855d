"""Which typed :class:`~client.errors.SerError` each tritonclient or transport failure becomes.

:func:`translate_error` maps what tritonclient raised to the bundle's hierarchy
(AccessDeniedError, ServerUnavailableError, ModelNotFoundError, InferenceError)
with a one-line message (:func:`one_line`) naming the address, model and operation.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import (
    AccessDeniedError,
    InferenceError,
    ModelNotFoundError,
    SerError,
    ServerUnavailableError,
)
from .retry import CONNECTION_ERRORS, is_refused_restricted_api


def one_line(text: Any, limit: int = 500) -> str:
    """``text`` on one line: whitespace runs collapsed, Triton's ``[request id: ...]`` dropped, cut at ``limit`` characters."""
    text = " ".join(_REQUEST_ID.sub("", str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REQUEST_ID = re.compile(r"\[request id: [^\]]*\]\s*")


def translate_error(exc: BaseException, *, url: str, model: str, protocol: str, what: str) -> SerError:
    """Map a tritonclient / transport exception to the bundle's typed errors.

    Args:
        exc: what tritonclient raised.
        url: the server address (named in the message).
        model: the model name (named in the message).
        protocol: ``grpc`` or ``http``.
        what: the operation, e.g. ``"infer"``, ``"model config"``.

    Returns:
        AccessDeniedError (a restricted API refused without the admin key),
        ServerUnavailableError (UNAVAILABLE, DEADLINE_EXCEEDED, connection
        errors), ModelNotFoundError (NOT_FOUND, 404, unknown model) or
        InferenceError (INVALID_ARGUMENT, 400, INTERNAL, 500, anything else).
    """
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, SerError):
        return exc
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "").replace("StatusCode.", "")
        message = one_line(exc.message() or exc)
        if is_refused_restricted_api(exc):
            return AccessDeniedError(f"{url}: {what} refused over {protocol}: {message} (a restricted API: send the admin key)")
        if status in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED") or "connection refused" in message.lower():
            reason = "no answer in time" if status == "DEADLINE_EXCEEDED" else message
            return ServerUnavailableError(f"{url}: Triton server unavailable over {protocol} during {what} ({reason})")
        if status in ("NOT_FOUND", "404") or "unknown model" in message.lower():
            return ModelNotFoundError(f"model {model!r} not found at {url} ({message})")
        code = f"{status}: " if status else ""
        return InferenceError(f"model {model!r} at {url}: {what} failed ({code}{message})")
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)) or type(exc).__name__ in (
        "Timeout",
        *CONNECTION_ERRORS,
    ):
        return ServerUnavailableError(
            f"{url}: Triton server unavailable over {protocol} during {what} ({type(exc).__name__}: {one_line(exc)})"
        )
    return InferenceError(f"model {model!r} at {url}: {what} failed ({type(exc).__name__}: {one_line(exc)})")


__all__ = ["one_line", "translate_error"]
