"""Which typed :class:`~client.errors.SerError` each tritonclient or transport failure becomes.

:func:`translate_error` maps what tritonclient raised to the bundle's hierarchy
(AccessDeniedError, RequestTimeoutError, ServerUnavailableError, ModelNotFoundError,
InferenceError)
with a one-line message (:func:`one_line`) naming the address, model and operation.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import (
    AccessDeniedError,
    InferenceError,
    ModelNotFoundError,
    RequestTimeoutError,
    SerError,
    ServerUnavailableError,
)
from .retry import CONNECTION_ERRORS, is_refused_restricted_api, is_retryable, is_timeout, status_of


def one_line(text: Any, limit: int = 500) -> str:
    """``text`` on one line: whitespace runs collapsed, Triton's ``[request id: ...]`` dropped, cut at ``limit`` characters."""
    text = " ".join(_REQUEST_ID.sub("", str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REQUEST_ID = re.compile(r"\[request id: [^\]]*\]\s*")


def translate_error(
    exc: BaseException, *, url: str, model: str, protocol: str, what: str, timeout_s: float | None = None
) -> SerError:
    """Map a tritonclient / transport exception to the bundle's typed errors.

    Classified by the failure's status, the same on both protocols (:func:`client.retry.status_of`:
    gRPC ``UNAVAILABLE`` and HTTP 503 alike) and by its type, not by the server's wording.

    Args:
        exc: what tritonclient raised.
        url: the server address (named in the message).
        model: the model name (named in the message).
        protocol: ``grpc`` or ``http``.
        what: the operation, e.g. ``"infer"``, ``"model config"``.
        timeout_s: the call's time limit, seconds (named in a time-out's message).

    Returns:
        AccessDeniedError (a restricted API refused without the admin key),
        RequestTimeoutError (DEADLINE_EXCEEDED, HTTP 504, a socket time-out),
        ServerUnavailableError (UNAVAILABLE, HTTP 503/502, CANCELLED, connection errors),
        ModelNotFoundError (NOT_FOUND, 404, unknown model) or InferenceError
        (INVALID_ARGUMENT, 400, INTERNAL, 500, anything else).
    """
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, SerError):
        return exc
    if is_timeout(exc):
        limit = f"within {timeout_s:g} s" if timeout_s else "in time"
        return RequestTimeoutError(f"model {model!r} at {url}: no answer to {what} over {protocol} {limit}")
    if isinstance(exc, InferenceServerException):
        status = status_of(exc)
        message = one_line(exc.message() or exc)
        if is_refused_restricted_api(exc):
            return AccessDeniedError(f"{url}: {what} refused over {protocol}: {message} (a restricted API: send the admin key)")
        if status in ("UNAVAILABLE", "CANCELLED") or (not status and is_retryable(exc)):
            return ServerUnavailableError(f"{url}: Triton server unavailable over {protocol} during {what} ({message})")
        if status == "NOT_FOUND" or "unknown model" in message.lower():
            return ModelNotFoundError(f"model {model!r} not found at {url} ({message})")
        code = str(exc.status()).replace("StatusCode.", "") + ": " if status else ""  # as the server sent it (400, INTERNAL...)
        return InferenceError(f"model {model!r} at {url}: {what} failed ({code}{message})")
    if isinstance(exc, (OSError, ConnectionError)) or type(exc).__name__ in CONNECTION_ERRORS:
        return ServerUnavailableError(
            f"{url}: Triton server unavailable over {protocol} during {what} ({type(exc).__name__}: {one_line(exc)})"
        )
    return InferenceError(f"model {model!r} at {url}: {what} failed ({type(exc).__name__}: {one_line(exc)})")


__all__ = ["one_line", "translate_error"]
