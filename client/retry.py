"""Which failed calls the client retries, and how long it waits between attempts.

:func:`is_retryable` says whether a failure may be retried (the server was
unreachable or went away), :func:`is_timeout` whether it was a time-out, both by
the failure's status (:func:`status_of`: gRPC and HTTP alike) and type, never by the
wording of a message the server wrote; :func:`is_refused_restricted_api` tells a refused
restricted API apart from a real ``UNAVAILABLE``; :class:`RetryPolicy` gives the
waits (exponential backoff, jitter, an optional time budget).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .errors import ConfigError, SerError


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and jitter, for transport failures only.

    A call is retried only when the server could not be reached or went away
    (``UNAVAILABLE``: gRPC's, or HTTP 503; connection refused/reset/closed): never on
    ``INVALID_ARGUMENT``, ``NOT_FOUND``, ``INTERNAL``, a refused restricted API
    (which 2.51 answers ``UNAVAILABLE`` over gRPC, told apart by its message) or a
    time-out (the time-out is the caller's budget). Retry ``r`` (1, 2, ...) waits
    ``min(max_backoff_s, initial_backoff_s * multiplier**(r-1))`` times a uniform
    factor in ``[1 - jitter, 1 + jitter]``.

    ``retry_for_s`` is a time budget on top of the attempt count: a call gives up
    only when it has made ``max_attempts`` attempts *and* ``retry_for_s`` seconds have
    passed since its first one, so a server that restarts (a crash, a rolling
    update) is waited for while a dead address still fails after the attempts.

    Attributes:
        max_attempts: attempts per call, the first included (1 = no retries).
        initial_backoff_s: wait before the first retry, seconds.
        max_backoff_s: cap on one wait, seconds.
        multiplier: growth of the wait per retry (>= 1).
        jitter: relative spread of each wait, in [0, 1).
        retry_for_s: seconds since a call's first attempt during which it keeps retrying
            after its attempts are used (0 = the attempt count alone decides).
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2
    retry_for_s: float = 0.0

    def __post_init__(self) -> None:
        if int(self.max_attempts) != self.max_attempts or self.max_attempts < 1:
            raise ConfigError(f"max_attempts={self.max_attempts}: must be an integer >= 1 (1 = no retries)")
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ConfigError(
                f"initial_backoff_s={self.initial_backoff_s}, max_backoff_s={self.max_backoff_s}: "
                "need 0 <= initial_backoff_s <= max_backoff_s"
            )
        if not self.multiplier >= 1:
            raise ConfigError(f"multiplier={self.multiplier}: must be >= 1 (backoff never shrinks)")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"jitter={self.jitter}: must be in [0, 1)")
        if not 0 <= self.retry_for_s < float("inf"):
            raise ConfigError(f"retry_for_s={self.retry_for_s}: must be a finite number of seconds >= 0 (0 = no time budget)")

    @classmethod
    def none(cls) -> "RetryPolicy":
        """One attempt, no retries."""
        return cls(max_attempts=1)

    def backoff_s(self, retry: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), jitter included."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** max(retry - 1, 0))
        return base * (rng or random).uniform(1 - self.jitter, 1 + self.jitter)

    def delay_s(self, attempt: int, elapsed_s: float, *, rng: random.Random | None = None) -> float | None:
        """Seconds to wait after failed attempt ``attempt`` (1-based), ``elapsed_s`` after the first; None: give up.

        Within the attempt count the wait is :meth:`backoff_s`; past it, within the time
        budget, the wait is cut so that the last attempt falls at the budget's end.
        """
        if attempt < self.max_attempts:
            return self.backoff_s(attempt, rng=rng)
        left = self.retry_for_s - elapsed_s
        if left <= 0:
            return None
        return min(self.backoff_s(attempt, rng=rng), left)


#: Exception type names (aiohttp, geventhttpclient, http.client) that mean the connection failed or broke.
CONNECTION_ERRORS = (
    "HTTPConnectionClosed",
    "RemoteDisconnected",
    "ServerDisconnectedError",
    "ClientConnectorError",
    "ClientOSError",
)

#: HTTP status -> the gRPC status name of the same failure, as tritonserver maps its errors to HTTP
#: (UNAVAILABLE is 503, NOT_FOUND 404...; 502 and 504 come from a proxy in front of the server), so that
#: both protocols are classified by one status and never by the wording of the message.
HTTP_STATUS = {
    "400": "INVALID_ARGUMENT",
    "401": "UNAUTHENTICATED",
    "403": "PERMISSION_DENIED",
    "404": "NOT_FOUND",
    "408": "DEADLINE_EXCEEDED",
    "409": "ALREADY_EXISTS",
    "429": "RESOURCE_EXHAUSTED",
    "499": "CANCELLED",
    "500": "INTERNAL",
    "501": "UNIMPLEMENTED",
    "502": "UNAVAILABLE",
    "503": "UNAVAILABLE",
    "504": "DEADLINE_EXCEEDED",
}


def status_of(exc: BaseException) -> str:
    """The status of a tritonclient error as a gRPC status name (``"UNAVAILABLE"``...), ``""`` if it has none.

    gRPC's ``StatusCode.UNAVAILABLE`` and HTTP's ``503`` both give ``"UNAVAILABLE"``; an HTTP
    status outside :data:`HTTP_STATUS` is returned as its number.
    """
    from tritonclient.utils import InferenceServerException

    if not isinstance(exc, InferenceServerException):
        return ""
    status = str(exc.status() or "").replace("StatusCode.", "").strip()
    return HTTP_STATUS.get(status, status)


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` says a call got no answer within its time limit.

    gRPC ``DEADLINE_EXCEEDED`` (HTTP 504/408 likewise), a socket time-out (``TimeoutError``,
    which ``socket.timeout`` and ``asyncio.TimeoutError`` are) or gevent's ``Timeout``.
    """
    if status_of(exc) == "DEADLINE_EXCEEDED":
        return True
    return isinstance(exc, TimeoutError) or type(exc).__name__ == "Timeout"


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed call may be retried: the server was unreachable or went away.

    True for ``UNAVAILABLE`` (gRPC, and HTTP 503/502: the same status on both protocols)
    and connection refused/reset/closed errors; False for time-outs (``DEADLINE_EXCEEDED``,
    socket time-outs), for every other answer the server gave (``INVALID_ARGUMENT``,
    ``NOT_FOUND``, ``INTERNAL``, HTTP 4xx/500), for a refused restricted API and for the
    bundle's own errors.
    """
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, SerError) or is_timeout(exc):
        return False
    if isinstance(exc, InferenceServerException):
        if is_refused_restricted_api(exc):
            return False
        status = status_of(exc)
        if status == "UNAVAILABLE":
            return True
        # tritonclient raises a connection failure of its own (no server answer, hence no status) with the OS's words
        text = str(exc.message() or exc).lower()
        return not status and any(s in text for s in ("connection refused", "connection reset", "connection closed"))
    return isinstance(exc, ConnectionError) or type(exc).__name__ in CONNECTION_ERRORS


#: How tritonserver words a call to an API restricted by ``--grpc-restricted-protocol`` /
#: ``--http-restricted-api`` without the key (gRPC: "This protocol is restricted, expecting
#: header ..."; HTTP 403: "This API is restricted, expecting header ...").
_RESTRICTED = re.compile(r"\bis restricted, expecting header\b", re.I)


def is_refused_restricted_api(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing a restricted API (admin key missing or wrong).

    tritonserver answers that over gRPC with ``UNAVAILABLE`` (over HTTP with 403), so the
    status alone would read as "try again"; the message tells it apart.
    """
    from tritonclient.utils import InferenceServerException

    if not isinstance(exc, InferenceServerException):
        return False
    return status_of(exc) in ("UNAVAILABLE", "PERMISSION_DENIED", "UNAUTHENTICATED", "") and bool(
        _RESTRICTED.search(str(exc.message() or exc))
    )


__all__ = ["CONNECTION_ERRORS", "HTTP_STATUS", "RetryPolicy", "is_refused_restricted_api", "is_retryable", "is_timeout", "status_of"]
