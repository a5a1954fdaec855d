"""Classify audio through a Triton server: the bundle's client.

:class:`SerClient` configures itself from the server: on open it checks
the server is live and the model ready, reads the model config and rebuilds the
:class:`~client.contract.ModelContract` from its ``ser.*`` parameters (labels,
sample rate, window, hop). Audio then goes through the one audio contract
(:mod:`client.audio`): decode -> mono -> resample -> fixed windows; the windows
of one clip travel as one batched request (split at the model's
``max_batch_size``), and the per-window probabilities are combined weighted by
valid samples.

Every failure is a typed :class:`~client.errors.SerError` with a one-line message:

* nothing answers at the address (connection refused, UNAVAILABLE, time-out):
  :class:`~client.errors.ServerUnavailableError`;
* the model is unknown or not ready (NOT_FOUND / 404): :class:`~client.errors.ModelNotFoundError`
  listing the models that are ready;
* a restricted API (repository, shared memory, trace, logging) called without the admin key:
  :class:`~client.errors.AccessDeniedError`, never retried (2.51 answers it UNAVAILABLE over gRPC);
* the model does not carry the bundle's contract: :class:`~client.errors.ContractError`;
* the server refuses or fails a request (INVALID_ARGUMENT / 400, INTERNAL / 500):
  :class:`~client.errors.InferenceError`;
* bad audio: :class:`~client.errors.AudioError` subclasses naming the file.

This module imports neither torch nor transformers (a calling service installs
the client alone); ``tests/integration/test_client_server.py`` checks that in a subprocess.
"""

from __future__ import annotations

import random
import re
import ssl as _ssl
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from client.audio import AudioConfig, AudioSource, Windows, aggregate, load_audio, make_windows
from client.audio_service import AUDIO_MODEL
from client.contract import (
    INPUT_NUM_SAMPLES,
    INPUT_WAVEFORM,
    OUTPUT_LOGITS,
    OUTPUT_PROBABILITIES,
    ModelContract,
)
from client.errors import (
    AccessDeniedError,
    ConfigError,
    ContractError,
    InferenceError,
    ModelNotFoundError,
    SerError,
    ServerUnavailableError,
)
from client.server_side import ServerSideMixin

PROTOCOLS = ("grpc", "http")
DEFAULT_GRPC_URL = "127.0.0.1:8001"
DEFAULT_HTTP_URL = "127.0.0.1:8000"
DEFAULT_MODEL = "ser_int8"


@dataclass(frozen=True)
class Prediction:
    """The classification of one clip.

    Attributes:
        source: the file path or name the audio came from.
        label: the most probable class.
        confidence: its aggregated probability, in [0, 1].
        probabilities: ``{label: probability}`` over all C classes (sums to 1),
            the valid-sample-weighted mean of the window probabilities.
        window_probabilities: ``[k, C]`` float32, one row per window sent.
        latency_s: wall time of the whole call (decode, windows, requests), seconds.
        window_offsets: ``[k]`` int64, start of each window in the 16 kHz clip (samples);
            None when the windows were sent directly.
        window_num_samples: ``[k]`` int64, valid samples of each window (the aggregation weights).
        top_k: with ``top_k=k``: the k most probable ``(label, probability)`` of the clip, best first.
        window_top_k: with ``top_k=k``: per window, Triton's classification extension's
            ``(label, logit score)`` pairs, best first (``class_count`` on ``logits``).
        preprocess_s: seconds spent decoding, resampling and windowing.
        infer_s: seconds spent in requests (including retries).
        values: a model with a regression head (``contract.regression``): ``{name: value}``,
            the valid-sample-weighted mean of the window values (``window_probabilities``
            then holds the window values); ``label`` is ``""``, ``confidence`` nan and
            ``probabilities`` empty.
    """

    source: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    window_probabilities: np.ndarray
    latency_s: float
    window_offsets: np.ndarray | None = None
    window_num_samples: np.ndarray | None = None
    top_k: tuple[tuple[str, float], ...] = ()
    window_top_k: tuple[tuple[tuple[str, float], ...], ...] = ()
    preprocess_s: float = 0.0
    infer_s: float = 0.0
    values: dict[str, float] = field(default_factory=dict)

    @property
    def num_windows(self) -> int:
        """k, the number of windows the clip was cut into."""
        return int(self.window_probabilities.shape[0])


@dataclass(frozen=True)
class ClassifyResult:
    """One entry of :meth:`SerClient.classify_many`: a prediction or the error it met.

    Attributes:
        index: position of the source in the input sequence.
        source: the file path or name.
        prediction: the result, or None on error.
        error: the typed error, or None on success.
    """

    index: int
    source: str
    prediction: Prediction | None = None
    error: SerError | None = None

    @property
    def ok(self) -> bool:
        """Whether the clip was classified."""
        return self.error is None


@dataclass(frozen=True)
class ModelStats:
    """Cumulative server-side statistics of one model (Triton statistics extension).

    Attributes:
        model: model name.
        inference_count: inferences performed (a batch of n counts n).
        execution_count: model executions (``execute()`` calls); fewer than
            ``inference_count`` means the dynamic batcher merged requests.
        success_count: successful requests.
        failure_count: failed requests.
        queue_ns: total time requests waited in the queue, nanoseconds.
        compute_infer_ns: total model compute time, nanoseconds.
    """

    model: str
    inference_count: int
    execution_count: int
    success_count: int
    failure_count: int
    queue_ns: int
    compute_infer_ns: int

    @property
    def mean_batch_size(self) -> float:
        """inference_count / execution_count (0 before any execution)."""
        return self.inference_count / self.execution_count if self.execution_count else 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and jitter, for transport failures only.

    A call is retried only when the server could not be reached or went away
    (gRPC ``UNAVAILABLE``, connection refused/reset/closed): never on
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


@dataclass(frozen=True)
class TransportOptions:
    """How the client talks to the server: TLS, extra headers, time limits.

    One description for both protocols: gRPC gets ``ssl``/``root_certificates``/
    ``private_key``/``certificate_chain`` as tritonclient takes them (file paths);
    HTTP gets ``ssl`` and ``ssl_options`` ``{ca_certs, keyfile, certfile}`` from
    the same files, and ``insecure`` (no certificate check) if asked.

    Attributes:
        headers: extra request headers sent with every call (auth tokens, routing).
        ssl: use TLS (gRPC ``ssl=True``, HTTPS).
        root_certificates: PEM file of the CA(s) to trust; None uses the system's.
        private_key: PEM client key (mutual TLS; needs ``certificate_chain``).
        certificate_chain: PEM client certificate chain (mutual TLS; needs ``private_key``).
        insecure: HTTP only: do not verify the server's certificate.
        connection_timeout_s: HTTP: time limit to connect; None = the client's ``timeout_s``.
        network_timeout_s: HTTP: time limit of one socket read/write; None = ``timeout_s``.
        request_timeout_s: gRPC: time limit of one call (``client_timeout``); None = ``timeout_s``.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    ssl: bool = False
    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None
    insecure: bool = False
    connection_timeout_s: float | None = None
    network_timeout_s: float | None = None
    request_timeout_s: float | None = None

    def __post_init__(self) -> None:
        headers = dict(self.headers)
        for key, value in headers.items():
            if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key):
                raise ConfigError(f"header name {key!r}: must be a non-empty token (letters, digits, -_.)")
            if not isinstance(value, str) or "\n" in value or "\r" in value:
                raise ConfigError(f"header {key!r}={value!r}: value must be a single-line string")
        object.__setattr__(self, "headers", headers)
        files = {"root_certificates": self.root_certificates, "private_key": self.private_key,
                 "certificate_chain": self.certificate_chain}
        for name, path in files.items():
            if path is None:
                continue
            object.__setattr__(self, name, Path(path))
            if not self.ssl:
                raise ConfigError(f"{name}={str(path)!r} with ssl=False: TLS files need ssl=True")
            if not Path(path).is_file():
                raise ConfigError(f"{name}={str(path)!r}: no such file")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ConfigError(
                "private_key and certificate_chain go together (mutual TLS): "
                f"got private_key={self.private_key}, certificate_chain={self.certificate_chain}"
            )
        if self.insecure and not self.ssl:
            raise ConfigError("insecure=True with ssl=False: insecure only skips the certificate check of TLS")
        for name in ("connection_timeout_s", "network_timeout_s", "request_timeout_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name}={value}: must be positive (seconds) or None")

    def grpc_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``tritonclient.grpc[.aio].InferenceServerClient``."""
        kw: dict[str, Any] = {"ssl": self.ssl}
        for name in ("root_certificates", "private_key", "certificate_chain"):
            if getattr(self, name) is not None:
                kw[name] = str(getattr(self, name))
        return kw

    def http_client_kwargs(self, *, timeout_s: float) -> dict[str, Any]:
        """Keyword arguments of ``tritonclient.http.InferenceServerClient`` (``timeout_s``: the default limit)."""
        kw: dict[str, Any] = {
            "connection_timeout": self.connection_timeout_s or timeout_s,
            "network_timeout": self.network_timeout_s or timeout_s,
        }
        if self.ssl:
            kw["ssl"] = True
            kw["insecure"] = self.insecure
            options = {"ca_certs": self.root_certificates, "keyfile": self.private_key, "certfile": self.certificate_chain}
            kw["ssl_options"] = {k: str(v) for k, v in options.items() if v is not None}
        return kw

    def ssl_context(self) -> _ssl.SSLContext | None:
        """An :class:`ssl.SSLContext` from the same files (``tritonclient.http.aio``), or None without TLS."""
        if not self.ssl:
            return None
        ctx = _ssl.create_default_context(cafile=str(self.root_certificates) if self.root_certificates else None)
        if self.certificate_chain is not None:
            ctx.load_cert_chain(str(self.certificate_chain), str(self.private_key))
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = _ssl.CERT_NONE
        return ctx


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")

#: Exception type names (aiohttp, geventhttpclient, http.client) that mean the connection failed or broke.
_CONNECTION_ERRORS = (
    "HTTPConnectionClosed",
    "RemoteDisconnected",
    "ServerDisconnectedError",
    "ClientConnectorError",
    "ClientOSError",
)


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed call may be retried: the server was unreachable or went away.

    True for gRPC ``UNAVAILABLE`` and connection refused/reset/closed errors;
    False for time-outs (``DEADLINE_EXCEEDED``, socket time-outs), for every
    answer the server gave (``INVALID_ARGUMENT``, ``NOT_FOUND``, ``INTERNAL``,
    HTTP 4xx/5xx) and for the bundle's own errors.
    """
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, SerError):
        return False
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "").replace("StatusCode.", "")
        if is_refused_restricted_api(exc):
            return False
        if status == "UNAVAILABLE":
            return True
        text = str(exc.message() or exc).lower()
        return not status and any(s in text for s in ("connection refused", "connection reset", "connection closed"))
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "Timeout":
        return False
    return isinstance(exc, ConnectionError) or type(exc).__name__ in _CONNECTION_ERRORS


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
    status = str(exc.status() or "").replace("StatusCode.", "")
    return status in ("UNAVAILABLE", "PERMISSION_DENIED", "UNAUTHENTICATED", "403", "") and bool(
        _RESTRICTED.search(str(exc.message() or exc))
    )


def normalize_url(url: str, *, protocol: str) -> str:
    """``host:port`` from ``host:port``, ``grpc://host:port`` or ``http://host:port[/]``.

    Raises:
        ConfigError: an unsupported scheme (``https``) or no port.
    """
    text = url.strip().rstrip("/")
    for scheme in ("grpc://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    if "://" in text:
        raise ConfigError(f"url={url!r}: only host:port, grpc:// and http:// are supported")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"url={url!r}: expected HOST:PORT (e.g. {DEFAULT_GRPC_URL if protocol == 'grpc' else DEFAULT_HTTP_URL})")
    return text


def _one_line(text: Any, limit: int = 500) -> str:
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
        message = _one_line(exc.message() or exc)
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
        *_CONNECTION_ERRORS,
    ):
        return ServerUnavailableError(
            f"{url}: Triton server unavailable over {protocol} during {what} ({type(exc).__name__}: {_one_line(exc)})"
        )
    return InferenceError(f"model {model!r} at {url}: {what} failed ({type(exc).__name__}: {_one_line(exc)})")


class _ClientBase(ServerSideMixin):
    """What the sync and async clients share: options, contract checks, requests, results."""

    def __init__(
        self,
        url: str | None = None,
        *,
        model: str | None = None,
        protocol: str = "grpc",
        timeout_s: float = 30.0,
        audio: AudioConfig | None = None,
        model_version: str = "",
        retry: RetryPolicy | None = None,
        transport: TransportOptions | None = None,
        on_attempt: Callable[[str, int], None] | None = None,
        server_side: bool = False,
    ) -> None:
        if model is None:
            model = AUDIO_MODEL if server_side else DEFAULT_MODEL
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol={protocol!r}: expected one of {PROTOCOLS}")
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s={timeout_s}: must be positive (seconds)")
        if not model:
            raise ConfigError("model='': a model name is required")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError(f"retry={retry!r}: expected a RetryPolicy")
        if transport is not None and not isinstance(transport, TransportOptions):
            raise ConfigError(f"transport={transport!r}: expected a TransportOptions")
        if url is None:
            url = DEFAULT_GRPC_URL if protocol == "grpc" else DEFAULT_HTTP_URL
        self.url = normalize_url(url, protocol=protocol)
        self.model = model
        self.protocol = protocol
        self.timeout_s = float(timeout_s)
        self.model_version = model_version
        self.retry = retry or RetryPolicy()
        self.transport = transport or TransportOptions()
        self.on_attempt = on_attempt
        self.server_side = bool(server_side)
        self.audio_limits = None
        self._audio_in = audio or AudioConfig()
        self.audio: AudioConfig = self._audio_in
        self.contract: ModelContract | None = None
        self.max_batch_size: int = 0
        self.config: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, model={self.model!r}, protocol={self.protocol!r})"

    def _kw(self) -> dict[str, Any]:
        """Per-call keyword arguments: headers, and gRPC's per-call time limit."""
        kw: dict[str, Any] = {"headers": dict(self.transport.headers)} if self.transport.headers else {}
        if self.protocol == "grpc":
            kw["client_timeout"] = self.transport.request_timeout_s or self.timeout_s
        return kw

    def _translate(self, exc: BaseException, what: str) -> SerError:
        return translate_error(exc, url=self.url, model=self.model, protocol=self.protocol, what=what)

    def _attempt(self, what: str, attempt: int) -> None:
        if self.on_attempt is not None:
            self.on_attempt(what, attempt)

    def _retry_delay(self, exc: BaseException, attempt: int, started: float) -> float | None:
        """Seconds to wait before retrying after ``exc``, or None to give up.

        ``attempt`` is the failed attempt's number (1-based), ``started`` the call's first
        attempt (``time.monotonic()``).
        """
        if not is_retryable(exc):
            return None
        return self.retry.delay_s(attempt, time.monotonic() - started)

    def _accept_config(self, config: dict[str, Any]) -> None:
        """Rebuild the contract from the model config and check its tensors (on open)."""
        self.config = config
        self.contract = ModelContract.from_parameters(_string_parameters(config), model=self.model)
        self._check_tensors()
        self.audio = replace(self._audio_in, sample_rate=self.contract.sample_rate)

    def _check_tensors(self) -> None:
        assert self.contract is not None
        if self.server_side:
            return self._check_audio_model()
        inputs = {t.get("name"): t for t in self.config.get("input", [])}
        outputs = {t.get("name"): t for t in self.config.get("output", [])}
        missing = [n for n in (INPUT_WAVEFORM, INPUT_NUM_SAMPLES) if n not in inputs]
        missing += [n for n in (OUTPUT_LOGITS, OUTPUT_PROBABILITIES) if n not in outputs]
        if missing:
            raise ContractError(
                f"model {self.model!r} at {self.url} lacks tensors {missing} "
                f"(has inputs {sorted(inputs)}, outputs {sorted(outputs)})"
            )
        self.max_batch_size = int(self.config.get("max_batch_size", 0) or 0)
        if self.max_batch_size <= 0:
            raise ContractError(f"model {self.model!r} at {self.url} has max_batch_size={self.max_batch_size}: the bundle needs batching (> 0)")
        dims = [int(d) for d in inputs[INPUT_WAVEFORM].get("dims", [])]
        if dims and dims != [-1] and dims != [self.contract.window_samples]:
            raise ContractError(
                f"model {self.model!r}: input {INPUT_WAVEFORM!r} dims {dims} disagree with "
                f"ser.window_samples={self.contract.window_samples}"
            )
        cdims = [int(d) for d in outputs[OUTPUT_PROBABILITIES].get("dims", [])]
        if cdims and cdims != [-1] and cdims != [self.contract.num_labels]:
            raise ContractError(
                f"model {self.model!r}: output {OUTPUT_PROBABILITIES!r} dims {cdims} disagree with "
                f"{self.contract.num_labels} labels in ser.labels"
            )

    def _config_from_raw(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return dict(raw.get("config", raw)) if self.protocol == "grpc" else dict(raw)

    def _check_top_k(self, top_k: int | None) -> int:
        if top_k is None:
            return 0
        assert self.contract is not None
        if self.contract.regression:
            raise ConfigError(f"top_k={top_k}: model {self.model!r} has a regression head (named values, no classes)")
        if int(top_k) != top_k or not 1 <= top_k <= self.contract.num_labels:
            raise ConfigError(f"top_k={top_k}: must be an integer in [1, {self.contract.num_labels}] (the model's classes)")
        return int(top_k)

    def _check_windows(self, waveforms: np.ndarray, num_samples: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.server_side:
            raise ConfigError(f"model {self.model!r}: a server_side client sends clips, not windows (use classify)")
        x = np.ascontiguousarray(waveforms, dtype=np.float32)
        n = np.ascontiguousarray(np.asarray(num_samples, dtype=np.int64).reshape(-1, 1))
        if x.ndim != 2 or x.shape[0] == 0 or n.shape[0] != x.shape[0]:
            raise InferenceError(
                f"model {self.model!r}: waveforms {tuple(x.shape)} and num_samples {tuple(np.shape(num_samples))}: "
                "expected [k, W] and [k] or [k, 1] with k >= 1"
            )
        return x, n

    def _request(self, x: np.ndarray, n: np.ndarray, top_k: int) -> tuple[list, list, Any]:
        """``(inputs, outputs, tritonclient module)`` of one batched request."""
        if self.protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc
        wav = tc.InferInput(INPUT_WAVEFORM, list(x.shape), "FP32")
        ns = tc.InferInput(INPUT_NUM_SAMPLES, list(n.shape), "INT64")
        wav.set_data_from_numpy(x)
        ns.set_data_from_numpy(n)
        outputs = [tc.InferRequestedOutput(OUTPUT_LOGITS, class_count=top_k), tc.InferRequestedOutput(OUTPUT_PROBABILITIES)]
        return [wav, ns], outputs, tc

    def _response(self, result: Any, batch: int, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(logits [b, C] float32 or classes [b, k] object, probabilities [b, C] float32)``."""
        logits, probs = result.as_numpy(OUTPUT_LOGITS), result.as_numpy(OUTPUT_PROBABILITIES)
        if logits is None or probs is None or probs.shape[0] != batch:
            raise ContractError(
                f"model {self.model!r} at {self.url}: response lacks {OUTPUT_LOGITS!r}/{OUTPUT_PROBABILITIES!r} "
                f"of batch {batch}"
            )
        if top_k:
            return logits.reshape(batch, -1), probs.astype(np.float32, copy=False)
        return logits.astype(np.float32, copy=False), probs.astype(np.float32, copy=False)

    def _prepare(self, source: AudioSource, sample_rate: int | None, name: str | None) -> tuple[str | None, Windows]:
        assert self.contract is not None
        label = name or (str(source) if isinstance(source, (str, Path)) else None)
        y = load_audio(source, sample_rate=sample_rate, config=self.audio, name=label)
        windows = make_windows(y, window_samples=self.contract.window_samples, hop_samples=self.contract.hop_samples)
        return label, windows

    def _prediction(
        self, source: AudioSource, label: str | None, windows: Windows, probs: np.ndarray, classes: np.ndarray | None,
        *, top_k: int, t0: float, t_pre: float,
    ) -> Prediction:
        assert self.contract is not None
        p = aggregate(probs, windows.num_samples)
        labels = self.contract.labels
        now = time.perf_counter()
        if self.contract.regression:  # the same valid-sample weights, over values
            return Prediction(
                source=label or ("<bytes>" if isinstance(source, bytes) else "<array>"), label="", confidence=float("nan"),
                probabilities={}, window_probabilities=probs, latency_s=now - t0, window_offsets=windows.offsets,
                window_num_samples=windows.num_samples, preprocess_s=t_pre - t0, infer_s=now - t_pre,
                values={lab: float(v) for lab, v in zip(labels, p, strict=True)},
            )
        best = int(np.argmax(p))
        order = np.argsort(-p, kind="stable")[:top_k] if top_k else []
        return Prediction(
            source=label or ("<bytes>" if isinstance(source, bytes) else "<array>"),
            label=labels[best],
            confidence=float(p[best]),
            probabilities={lab: float(v) for lab, v in zip(labels, p, strict=True)},
            window_probabilities=probs,
            latency_s=now - t0,
            window_offsets=windows.offsets,
            window_num_samples=windows.num_samples,
            top_k=tuple((labels[int(i)], float(p[int(i)])) for i in order),
            window_top_k=tuple(parse_classification(row, model=self.model) for row in classes) if classes is not None else (),
            preprocess_s=t_pre - t0,
            infer_s=now - t_pre,
        )

    @staticmethod
    def _source_name(index: int, source: AudioSource) -> str:
        return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__} #{index}>"

    @staticmethod
    def _failed(index: int, name: str, exc: BaseException) -> ClassifyResult:
        if isinstance(exc, SerError):
            return ClassifyResult(index, name, error=exc)
        return ClassifyResult(index, name, error=InferenceError(f"{name}: {type(exc).__name__}: {_one_line(exc)}"))


def parse_classification(row: Iterable[Any], *, model: str = "model") -> tuple[tuple[str, float], ...]:
    """Parse one window's classification-extension strings ``b"score:index:label"`` into ``(label, score)``.

    Raises:
        ContractError: an entry is not ``score:index:label`` (the label may contain ``:``).
    """
    out = []
    for entry in row:
        text = entry.decode("utf-8") if isinstance(entry, bytes) else str(entry)
        score, _, rest = text.partition(":")
        _, _, label = rest.partition(":")
        try:
            out.append((label, float(score)))
        except ValueError:
            raise ContractError(f"model {model!r}: classification entry {text!r} is not 'score:index:label'") from None
        if not label:
            raise ContractError(f"model {model!r}: classification entry {text!r} has no label (label_filename unset?)")
    return tuple(out)


class SerClient(_ClientBase):
    """A speech-emotion client for one model on one Triton server: a context manager.

    Args:
        url: ``host:port`` of the server's gRPC or HTTP endpoint; None gives
            ``127.0.0.1:8001`` for gRPC, ``127.0.0.1:8000`` for HTTP.
        model: model name in the repository (``ser_int8``, ``ser_fp32``, ...); None: ``ser_int8``,
            or ``ser`` with ``server_side``.
        protocol: ``grpc`` or ``http``.
        timeout_s: per-call time limit (connection and request), seconds; the
            ``transport`` time limits override it where set.
        audio: refusal thresholds (max duration, silence); its ``sample_rate`` is
            replaced by the served model's (read from the contract).
        model_version: a version string; ``""`` lets the server pick.
        retry: retries on UNAVAILABLE/connection errors (default ``RetryPolicy()``:
            3 attempts, 0.1 s then 0.2 s backoff, ±20 % jitter, no time budget);
            ``RetryPolicy.none()`` turns them off.
        transport: TLS, extra headers and time limits (:class:`TransportOptions`).
        on_attempt: called as ``on_attempt(what, attempt)`` before every attempt of
            every call (``what``: ``"infer"``, ``"liveness check"``...; attempt 1, 2...).
        server_side: send each clip itself (encoded bytes, or an array's samples and rate) to
            the server-side audio model (``model`` default ``ser``), which decodes and windows it
            with the same code (:mod:`client.server_side`); the answer is the same Prediction.

    Attributes:
        contract: the served model's :class:`ModelContract` (after open).
        max_batch_size: the model's ``max_batch_size`` (after open).
        config: the model config as a JSON-like dict (after open).

    Example:
        >>> with SerClient("127.0.0.1:8001", model="ser_int8") as client:  # doctest: +SKIP
        ...     print(client.classify("clip.wav").label)
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self._client = None
        self._owner = threading.get_ident()
        self._local = threading.local()
        self._extra_clients: list[tuple[threading.Thread, Any]] = []
        self._extra_lock = threading.Lock()

    # --- connection ---------------------------------------------------------

    def _new_transport(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            return grpcclient.InferenceServerClient(self.url, **self.transport.grpc_client_kwargs())
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.url, **self.transport.http_client_kwargs(timeout_s=self.timeout_s))

    def _transport(self):
        """The tritonclient for this thread (gRPC clients are shared; HTTP ones are not thread-safe)."""
        if self._client is None:
            raise ConfigError(f"SerClient({self.url!r}, model={self.model!r}) is not open: use it as a context manager")
        if self.protocol == "grpc" or threading.get_ident() == self._owner:
            return self._client
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_transport()
            self._local.client = client
            with self._extra_lock:
                self._extra_clients.append((threading.current_thread(), client))
        return client

    def _close_clients_of_finished_threads(self) -> None:
        with self._extra_lock:
            done = [(t, c) for t, c in self._extra_clients if not t.is_alive()]
            self._extra_clients = [(t, c) for t, c in self._extra_clients if t.is_alive()]
        for _, client in done:
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass

    def _call(self, what: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, retried per :attr:`retry` on transport failures, errors translated."""
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            self._attempt(what, attempt)
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - translated into the typed hierarchy
                delay = self._retry_delay(exc, attempt, started)
                if delay is None:
                    raise self._translate(exc, what) from None
            time.sleep(delay)

    def open(self) -> "SerClient":
        """Connect, check liveness and readiness, read and check the model's contract.

        Connection failures are retried per :attr:`retry` (a server still starting is waited for).

        Raises:
            ServerUnavailableError: nothing answers at ``url``.
            ModelNotFoundError: the model is not ready; the message lists the ready ones.
            ContractError: the config lacks the ``ser.*`` parameters or the tensors
                ``waveform``/``num_samples`` -> ``logits``/``probabilities``.
        """
        if self._client is not None:
            return self
        try:
            try:
                self._client = self._new_transport()
            except Exception as exc:  # noqa: BLE001 - bad TLS files and the like
                raise self._translate(exc, "connect") from None
            self._owner = threading.get_ident()
            live = self._call("liveness check", self._client.is_server_live, **self._kw())
            if not live:
                raise ServerUnavailableError(f"{self.url}: Triton server answers over {self.protocol} but is not live")
            ready = self._call(
                "readiness check", self._client.is_model_ready, self.model, self.model_version, **self._kw()
            )
            if not ready:
                raise ModelNotFoundError(self._not_ready_message())
            self._accept_config(self._read_config())
        except BaseException:
            self.close()
            raise
        return self

    def _not_ready_message(self) -> str:
        try:
            index = self.repository_index()
        except SerError:  # e.g. a production server restricting the repository API to an admin key
            return f"model {self.model!r} is not ready at {self.url} (the repository index is not readable here)"
        ready = sorted(name for name, state in index.items() if state == "READY")
        state = index.get(self.model)
        where = f"is {state}" if state else "is not in the repository"
        return f"model {self.model!r} {where} at {self.url}; ready models: {ready}"

    def _read_config(self) -> dict[str, Any]:
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        raw = self._call("model config", self._client.get_model_config, self.model, self.model_version, **extra, **self._kw())
        return self._config_from_raw(raw)

    def close(self) -> None:
        """Close the connections; safe to call twice.

        Open HTTP keep-alive connections would otherwise hold a stopping server
        for its whole exit timeout.
        """
        clients = [self._client, *(c for _, c in self._extra_clients)]
        self._client = None
        self._extra_clients = []
        self._local = threading.local()
        for c in clients:
            if c is not None:
                try:
                    c.close()
                except Exception:  # noqa: BLE001, S110 - closing is best effort
                    pass

    def __enter__(self) -> "SerClient":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- server information ---------------------------------------------------

    def repository_index(self) -> dict[str, str]:
        """``{model name: state}`` of the server's repository (``READY``, ``UNAVAILABLE``...)."""
        client = self._client or self._new_transport()
        try:
            if self.protocol == "grpc":
                raw = self._call("repository index", client.get_model_repository_index, as_json=True, **self._kw())
                models = raw.get("models", [])
            else:
                models = self._call("repository index", client.get_model_repository_index, **self._kw())
            return {m["name"]: m.get("state", "") for m in models}
        finally:
            if client is not self._client:
                client.close()

    def statistics(self) -> ModelStats:
        """Cumulative inference statistics of the model (all versions summed)."""
        client = self._transport()
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        raw = self._call("statistics", client.get_inference_statistics, self.model, **extra, **self._kw())
        return _model_stats(self.model, raw)

    # --- inference -------------------------------------------------------------

    def infer_windows(self, waveforms: np.ndarray, num_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Send fixed windows as batched requests.

        Args:
            waveforms: ``[k, W]`` float32 at the model's rate (W = ``contract.window_samples``),
                zero-padded past ``num_samples``.
            num_samples: ``[k]`` or ``[k, 1]`` int64, valid samples per window (1..W).

        Returns:
            ``(logits [k, C] float32, probabilities [k, C] float32)``; requests of
            more than ``max_batch_size`` windows are split and the results joined.

        Raises:
            InferenceError: the server refused (shape, dtype...) or failed the request.
            ServerUnavailableError: the server went away (after the retries).
        """
        self._transport()  # raises if not open
        return self._infer_all(*self._check_windows(waveforms, num_samples), top_k=0)

    def _infer_all(self, x: np.ndarray, n: np.ndarray, *, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        first, probs = [], []
        for start in range(0, x.shape[0], self.max_batch_size):
            a, b = self._infer_batch(x[start : start + self.max_batch_size], n[start : start + self.max_batch_size], top_k)
            first.append(a)
            probs.append(b)
        return np.concatenate(first), np.concatenate(probs)

    def _infer_batch(self, x: np.ndarray, n: np.ndarray, top_k: int = 0) -> tuple[np.ndarray, np.ndarray]:
        client = self._transport()
        inputs, outputs, _ = self._request(x, n, top_k)
        result = self._call(
            "infer", client.infer, self.model, inputs, model_version=self.model_version, outputs=outputs, **self._kw()
        )
        return self._response(result, x.shape[0], top_k)

    def classify(
        self,
        source: AudioSource,
        *,
        sample_rate: int | None = None,
        name: str | None = None,
        top_k: int | None = None,
    ) -> Prediction:
        """Classify one clip.

        Args:
            source: file path, encoded file bytes, or a numpy array ``[n]`` /
                ``[n, channels]`` (float in [-1, 1] or integer PCM).
            sample_rate: the array's rate in Hz (arrays only).
            name: how results and errors refer to the source (default: the path).
            top_k: also ask Triton's classification extension for the k best classes of
                each window (``Prediction.window_top_k``) and fill ``Prediction.top_k``.

        Returns:
            :class:`Prediction`.

        Raises:
            AudioError: the audio is unreadable, empty, non-finite, silent or too long.
            InferenceError, ServerUnavailableError: the request failed.
            ConfigError: ``top_k`` outside ``[1, C]``.
        """
        self._transport()  # raises if not open
        k = self._check_top_k(top_k)
        if self.server_side:
            return self._classify_server_side(source, sample_rate=sample_rate, name=name, top_k=k)
        t0 = time.perf_counter()
        label, windows = self._prepare(source, sample_rate, name)
        t_pre = time.perf_counter()
        first, probs = self._infer_all(*self._check_windows(windows.waveforms, windows.num_samples), top_k=k)
        return self._prediction(source, label, windows, probs, first if k else None, top_k=k, t0=t0, t_pre=t_pre)

    def classify_many(
        self,
        sources: Iterable[AudioSource],
        *,
        concurrency: int = 8,
        sample_rate: int | None = None,
        top_k: int | None = None,
    ) -> Iterator[ClassifyResult]:
        """Classify many clips with up to ``concurrency`` requests in flight.

        Concurrent requests of equal shape are merged by the server's dynamic
        batcher. Results come back in input order; a clip that fails (bad
        audio, refused request) yields a :class:`ClassifyResult` with ``error``
        set instead of raising, so one bad file does not stop the rest.

        Args:
            sources: paths, encoded bytes or arrays (arrays need ``sample_rate``).
            concurrency: worker threads, each with one request in flight (>= 1).
            sample_rate: the arrays' rate in Hz.
            top_k: as in :meth:`classify`.

        Returns:
            An iterator of :class:`ClassifyResult`, one per source, in input order.

        Raises:
            ConfigError: ``concurrency < 1``, a bad ``top_k`` or the client is not open (raised at once).
        """
        if concurrency < 1:
            raise ConfigError(f"concurrency={concurrency}: must be >= 1")
        self._transport()  # raises now, not at the first next(), if not open
        self._check_top_k(top_k)
        return self._classify_many(iter(enumerate(sources)), concurrency=concurrency, sample_rate=sample_rate, top_k=top_k)

    def _classify_many(
        self, it: Iterator[tuple[int, AudioSource]], *, concurrency: int, sample_rate: int | None, top_k: int | None
    ) -> Iterator[ClassifyResult]:
        pending: deque[Future] = deque()
        try:
            with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ser-client") as pool:

                def submit_next() -> bool:
                    try:
                        i, src = next(it)
                    except StopIteration:
                        return False
                    pending.append(pool.submit(self._classify_result, i, src, sample_rate, top_k))
                    return True

                try:
                    for _ in range(2 * concurrency):
                        if not submit_next():
                            break
                    while pending:
                        result = pending.popleft().result()
                        submit_next()
                        yield result
                finally:
                    for fut in pending:
                        fut.cancel()
        finally:
            self._close_clients_of_finished_threads()  # the HTTP clients of the pool's threads

    def _classify_result(self, index: int, source: AudioSource, sample_rate: int | None, top_k: int | None = None) -> ClassifyResult:
        name = self._source_name(index, source)
        try:
            return ClassifyResult(index, name, prediction=self.classify(source, sample_rate=sample_rate, name=name, top_k=top_k))
        except Exception as exc:  # noqa: BLE001 - reported per file, never kills the batch
            return self._failed(index, name, exc)


class AsyncSerClient(_ClientBase):
    """The asyncio twin of :class:`SerClient` (``tritonclient.grpc.aio`` / ``tritonclient.http.aio``).

    Same arguments, contract checks, retries and results; ``open``, ``close``,
    ``classify``, ``classify_many``, ``infer_windows`` and ``statistics`` are
    coroutines, and it is an async context manager. Decoding and resampling run
    in worker threads (``asyncio.to_thread``) so they do not block the event loop.

    Example:
        >>> async with AsyncSerClient("127.0.0.1:8001") as client:  # doctest: +SKIP
        ...     results = await client.classify_many(paths, concurrency=16)
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self._client = None

    def _new_transport(self):
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as grpcaio

            return grpcaio.InferenceServerClient(self.url, **self.transport.grpc_client_kwargs())
        import tritonclient.http.aio as httpaio

        return httpaio.InferenceServerClient(
            self.url,
            conn_timeout=self.transport.connection_timeout_s or self.timeout_s,
            ssl=self.transport.ssl,
            ssl_context=self.transport.ssl_context(),
        )

    def _require_open(self):
        if self._client is None:
            raise ConfigError(f"AsyncSerClient({self.url!r}, model={self.model!r}) is not open: use `async with`")
        return self._client

    async def _call(self, what: str, fn, *args, **kwargs):
        import asyncio

        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            self._attempt(what, attempt)
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - translated into the typed hierarchy
                delay = self._retry_delay(exc, attempt, started)
                if delay is None:
                    raise self._translate(exc, what) from None
            await asyncio.sleep(delay)

    async def open(self) -> "AsyncSerClient":
        """As :meth:`SerClient.open`."""
        if self._client is not None:
            return self
        try:
            try:
                self._client = self._new_transport()
            except Exception as exc:  # noqa: BLE001
                raise self._translate(exc, "connect") from None
            if not await self._call("liveness check", self._client.is_server_live, **self._kw()):
                raise ServerUnavailableError(f"{self.url}: Triton server answers over {self.protocol} but is not live")
            if not await self._call("readiness check", self._client.is_model_ready, self.model, self.model_version, **self._kw()):
                raise ModelNotFoundError(f"model {self.model!r} is not ready at {self.url}")
            extra = {"as_json": True} if self.protocol == "grpc" else {}
            raw = await self._call("model config", self._client.get_model_config, self.model, self.model_version, **extra, **self._kw())
            self._accept_config(self._config_from_raw(raw))
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass

    async def __aenter__(self) -> "AsyncSerClient":
        return await self.open()

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def statistics(self) -> ModelStats:
        """As :meth:`SerClient.statistics`."""
        client = self._require_open()
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        raw = await self._call("statistics", client.get_inference_statistics, self.model, **extra, **self._kw())
        return _model_stats(self.model, raw)

    async def infer_windows(self, waveforms: np.ndarray, num_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`SerClient.infer_windows`; the batches of one call are sent concurrently."""
        self._require_open()
        return await self._infer_all(*self._check_windows(waveforms, num_samples), top_k=0)

    async def _infer_all(self, x: np.ndarray, n: np.ndarray, *, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        import asyncio

        step = self.max_batch_size
        parts = await asyncio.gather(*(self._infer_batch(x[s : s + step], n[s : s + step], top_k) for s in range(0, x.shape[0], step)))
        return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])

    async def _infer_batch(self, x: np.ndarray, n: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        client = self._require_open()
        inputs, outputs, _ = self._request(x, n, top_k)
        result = await self._call(
            "infer", client.infer, self.model, inputs, model_version=self.model_version, outputs=outputs, **self._kw()
        )
        return self._response(result, x.shape[0], top_k)

    async def classify(
        self,
        source: AudioSource,
        *,
        sample_rate: int | None = None,
        name: str | None = None,
        top_k: int | None = None,
    ) -> Prediction:
        """As :meth:`SerClient.classify`."""
        import asyncio

        self._require_open()
        k = self._check_top_k(top_k)
        if self.server_side:
            return await self._aclassify_server_side(source, sample_rate=sample_rate, name=name, top_k=k)
        t0 = time.perf_counter()
        label, windows = await asyncio.to_thread(self._prepare, source, sample_rate, name)
        t_pre = time.perf_counter()
        first, probs = await self._infer_all(*self._check_windows(windows.waveforms, windows.num_samples), top_k=k)
        return self._prediction(source, label, windows, probs, first if k else None, top_k=k, t0=t0, t_pre=t_pre)

    async def classify_many(
        self,
        sources: Iterable[AudioSource],
        *,
        concurrency: int = 8,
        sample_rate: int | None = None,
        top_k: int | None = None,
    ) -> list[ClassifyResult]:
        """Classify many clips with up to ``concurrency`` clips in flight (a semaphore over ``asyncio.gather``).

        Returns:
            One :class:`ClassifyResult` per source, in input order; failures are
            reported in the result, not raised.
        """
        import asyncio

        if concurrency < 1:
            raise ConfigError(f"concurrency={concurrency}: must be >= 1")
        self._require_open()
        self._check_top_k(top_k)
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, source: AudioSource) -> ClassifyResult:
            name = self._source_name(index, source)
            async with gate:
                try:
                    pred = await self.classify(source, sample_rate=sample_rate, name=name, top_k=top_k)
                except Exception as exc:  # noqa: BLE001 - reported per file
                    return self._failed(index, name, exc)
            return ClassifyResult(index, name, prediction=pred)

        return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(sources))))


def _string_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """``{key: string_value}`` of a model config's ``parameters`` (gRPC or HTTP JSON form)."""
    out = {}
    for key, value in (config.get("parameters") or {}).items():
        if isinstance(value, Mapping):
            out[key] = str(value.get("string_value", value.get("stringValue", "")))
        else:
            out[key] = str(value)
    return out


def _model_stats(model: str, raw: Mapping[str, Any]) -> ModelStats:
    """Sum the statistics JSON (gRPC strings or HTTP ints) over the model's versions."""
    totals = dict(inference=0, execution=0, success=0, fail=0, queue=0, infer=0)
    for entry in raw.get("model_stats", []):
        if entry.get("name") != model:
            continue
        stats = entry.get("inference_stats", {})
        totals["inference"] += int(entry.get("inference_count", 0))
        totals["execution"] += int(entry.get("execution_count", 0))
        totals["success"] += int(stats.get("success", {}).get("count", 0))
        totals["fail"] += int(stats.get("fail", {}).get("count", 0))
        totals["queue"] += int(stats.get("queue", {}).get("ns", 0))
        totals["infer"] += int(stats.get("compute_infer", {}).get("ns", 0))
    return ModelStats(
        model=model,
        inference_count=totals["inference"],
        execution_count=totals["execution"],
        success_count=totals["success"],
        failure_count=totals["fail"],
        queue_ns=totals["queue"],
        compute_infer_ns=totals["infer"],
    )


__all__ = [
    "AsyncSerClient",
    "ClassifyResult",
    "ModelStats",
    "Prediction",
    "RetryPolicy",
    "SerClient",
    "TransportOptions",
    "is_refused_restricted_api",
    "is_retryable",
    "normalize_url",
    "parse_classification",
    "translate_error",
]
