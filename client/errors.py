"""The bundle's one exception hierarchy.

Every error a user can cause (bad audio, a bad path, a wrong model name, a dead
server, a broken config) is a :class:`SerError` subclass whose message names the
offending input and the reason. The CLI prints ``error: <message>`` on one line
and exits with :attr:`SerError.exit_code`; it never shows a traceback for these.

This module holds the root and every error a calling service can meet (audio,
configuration, serving); it lives in ``client/`` because the client is the foundation
every other part imports, and it depends on nothing. The errors only training or export
raise subclass the same root in their own parts: ``training/errors.py`` (corpora,
checkpoints) and ``export/errors.py`` (export, quantization, parity, repositories).
"""

from __future__ import annotations

from pathlib import Path


class SerError(Exception):
    """Base class of every error the bundle raises on purpose."""

    exit_code: int = 2


# --- audio -----------------------------------------------------------------


class AudioError(SerError, ValueError):
    """Audio that cannot become model input. ``source`` names the file or array."""

    reason: str = "invalid audio"

    def __init__(self, source: str | Path, detail: str = "") -> None:
        self.source = str(source)
        self.detail = detail
        msg = f"{self.source}: {self.reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class AudioDecodeError(AudioError):
    """The file is missing, truncated, not audio, or in a format no decoder reads."""

    reason = "cannot decode audio"


class EmptyAudioError(AudioError):
    """The audio holds zero samples."""

    reason = "audio is empty (0 samples)"


class NonFiniteAudioError(AudioError):
    """The audio holds NaN or Inf samples."""

    reason = "audio contains NaN or Inf samples"


class SilentAudioError(AudioError):
    """The audio is digital silence (peak below the silence threshold)."""

    reason = "audio is silent"


class AudioTooShortError(AudioError):
    """The audio is shorter than the configured minimum duration (too little to classify)."""

    reason = "audio is shorter than the allowed minimum"


class AudioTooLongError(AudioError):
    """The audio is longer than the configured maximum duration."""

    reason = "audio is longer than the allowed maximum"


class AudioTooLargeError(AudioError):
    """The encoded audio, or what it decodes to, is larger than the configured maximum."""

    reason = "audio is larger than the allowed maximum"


class AudioFormatError(AudioError):
    """The audio decodes, but its sample rate or channel count is outside what is accepted."""

    reason = "unsupported audio format"


class NoSpeechError(AudioError):
    """The audio model's voice-activity gate found too little speech in every window of the clip."""

    reason = "no speech in the audio"


# --- configuration -------------------------------------------------------------


class ConfigError(SerError, ValueError):
    """A configuration value or combination is invalid; the message says which."""


class OutputLockedError(SerError):
    """Another run is writing the same output file (its lock file is held); the message names the output."""


# --- serving and calling -------------------------------------------------------


class ServerError(SerError):
    """The Triton server could not be started, reached or used."""


class ServerStartError(ServerError):
    """The local tritonserver failed to start or become ready."""


class ServerUnavailableError(ServerError):
    """Nothing answers at the given address (connection refused or reset, UNAVAILABLE / HTTP 503).

    Retried per the client's :class:`~client.retry.RetryPolicy`; raised once the retries are spent.
    A server that accepts connections but does not answer ``open()``'s liveness check in
    time is unavailable too.
    """


class RequestTimeoutError(ServerError):
    """One request got no answer within the client's time limit (gRPC DEADLINE_EXCEEDED, an HTTP socket time-out).

    A failure of that request only (a long clip on a slow model, a busy server): it is not
    retried (the limit is the caller's budget), and directory mode records it as that file's
    error row and goes on with the other files.
    """


class AccessDeniedError(ServerError):
    """The server refused a restricted API (repository, shared memory, trace, logging) without its admin key."""


class ModelNotFoundError(ServerError):
    """The server answers but has no ready model of that name."""


class ContractError(ServerError):
    """The served model does not carry the bundle's contract (parameters, tensors)."""


class InferenceError(ServerError):
    """The server refused or failed one inference request."""


class StreamError(InferenceError):
    """The streaming model refused or failed a chunk of one live call; the message names the call."""


class CallLostError(StreamError):
    """The server no longer holds the call: the stream closed, the server restarted, or the call idled past its timeout."""


class CallTimeoutError(RequestTimeoutError, TimeoutError):
    """A live call's result (after END) or next update did not come in time; the message names the call.

    Also a :class:`TimeoutError`, so code that waits on a call can catch either.
    """


class CallLimitError(StreamError):
    """A limit of the streaming model: too many concurrent calls, or a call longer than allowed."""
