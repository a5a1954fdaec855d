"""Classify audio through a Triton server: the bundle's client.

:class:`SerClient` configures itself from the server (STYLE 7): on open it checks
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
* the model does not carry the bundle's contract: :class:`~client.errors.ContractError`;
* the server refuses or fails a request (INVALID_ARGUMENT / 400, INTERNAL / 500):
  :class:`~client.errors.InferenceError`;
* bad audio: :class:`~client.errors.AudioError` subclasses naming the file.

This module imports neither torch nor transformers (a calling service installs
the client alone); ``tests/test_client_server.py`` checks that in a subprocess.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from client.audio import AudioConfig, AudioSource, aggregate, load_audio, make_windows
from client.contract import (
    INPUT_NUM_SAMPLES,
    INPUT_WAVEFORM,
    OUTPUT_LOGITS,
    OUTPUT_PROBABILITIES,
    ModelContract,
)
from client.errors import (
    ConfigError,
    ContractError,
    InferenceError,
    ModelNotFoundError,
    SerError,
    ServerUnavailableError,
)

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
    """

    source: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    window_probabilities: np.ndarray
    latency_s: float

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
        if status in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED") or "connection refused" in message.lower():
            reason = "no answer in time" if status == "DEADLINE_EXCEEDED" else message
            return ServerUnavailableError(f"{url}: Triton server unavailable over {protocol} during {what} ({reason})")
        if status in ("NOT_FOUND", "404") or "unknown model" in message.lower():
            return ModelNotFoundError(f"model {model!r} not found at {url} ({message})")
        code = f"{status}: " if status else ""
        return InferenceError(f"model {model!r} at {url}: {what} failed ({code}{message})")
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)) or type(exc).__name__ in (
        "HTTPConnectionClosed",
        "Timeout",
        "RemoteDisconnected",
    ):
        return ServerUnavailableError(
            f"{url}: Triton server unavailable over {protocol} during {what} ({type(exc).__name__}: {_one_line(exc)})"
        )
    return InferenceError(f"model {model!r} at {url}: {what} failed ({type(exc).__name__}: {_one_line(exc)})")


class SerClient:
    """A speech-emotion client for one model on one Triton server: a context manager.

    Args:
        url: ``host:port`` of the server's gRPC or HTTP endpoint; None gives
            ``127.0.0.1:8001`` for gRPC, ``127.0.0.1:8000`` for HTTP.
        model: model name in the repository (``ser_int8``, ``ser_fp32``, ...).
        protocol: ``grpc`` or ``http``.
        timeout_s: per-call time limit (connection and request), seconds.
        audio: refusal thresholds (max duration, silence); its ``sample_rate`` is
            replaced by the served model's (read from the contract).
        model_version: a version string; ``""`` lets the server pick.

    Attributes:
        contract: the served model's :class:`ModelContract` (after open).
        max_batch_size: the model's ``max_batch_size`` (after open).
        config: the model config as a JSON-like dict (after open).

    Example:
        >>> with SerClient("127.0.0.1:8001", model="ser_int8") as client:  # doctest: +SKIP
        ...     print(client.classify("clip.wav").label)
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        protocol: str = "grpc",
        timeout_s: float = 30.0,
        audio: AudioConfig | None = None,
        model_version: str = "",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol={protocol!r}: expected one of {PROTOCOLS}")
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s={timeout_s}: must be positive (seconds)")
        if not model:
            raise ConfigError("model='': a model name is required")
        if url is None:
            url = DEFAULT_GRPC_URL if protocol == "grpc" else DEFAULT_HTTP_URL
        self.url = normalize_url(url, protocol=protocol)
        self.model = model
        self.protocol = protocol
        self.timeout_s = float(timeout_s)
        self.model_version = model_version
        self._audio_in = audio or AudioConfig()
        self.audio: AudioConfig = self._audio_in
        self.contract: ModelContract | None = None
        self.max_batch_size: int = 0
        self.config: dict[str, Any] = {}
        self._client = None
        self._owner = threading.get_ident()
        self._local = threading.local()
        self._extra_clients: list[tuple[threading.Thread, Any]] = []
        self._extra_lock = threading.Lock()

    # --- connection ---------------------------------------------------------

    def _new_transport(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            return grpcclient.InferenceServerClient(self.url)
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(
            self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
        )

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
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - translated into the typed hierarchy
            raise translate_error(exc, url=self.url, model=self.model, protocol=self.protocol, what=what) from None

    def _kw(self) -> dict[str, Any]:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def open(self) -> "SerClient":
        """Connect, check liveness and readiness, read and check the model's contract.

        Raises:
            ServerUnavailableError: nothing answers at ``url``.
            ModelNotFoundError: the model is not ready; the message lists the ready ones.
            ContractError: the config lacks the ``ser.*`` parameters or the tensors
                ``waveform``/``num_samples`` -> ``logits``/``probabilities``.
        """
        if self._client is not None:
            return self
        try:
            self._client = self._call("connect", self._new_transport)
            self._owner = threading.get_ident()
            live = self._call("liveness check", self._client.is_server_live, **self._kw())
            if not live:
                raise ServerUnavailableError(f"{self.url}: Triton server answers over {self.protocol} but is not live")
            ready = self._call(
                "readiness check", self._client.is_model_ready, self.model, self.model_version, **self._kw()
            )
            if not ready:
                raise ModelNotFoundError(self._not_ready_message())
            self.config = self._read_config()
            self.contract = ModelContract.from_parameters(_string_parameters(self.config), model=self.model)
            self._check_tensors()
            self.audio = replace(self._audio_in, sample_rate=self.contract.sample_rate)
        except BaseException:
            self.close()
            raise
        return self

    def _not_ready_message(self) -> str:
        try:
            index = self.repository_index()
        except SerError:
            index = {}
        ready = sorted(name for name, state in index.items() if state == "READY")
        state = index.get(self.model)
        where = f"is {state}" if state else "is not in the repository"
        return f"model {self.model!r} {where} at {self.url}; ready models: {ready}"

    def _read_config(self) -> dict[str, Any]:
        if self.protocol == "grpc":
            raw = self._call(
                "model config", self._client.get_model_config, self.model, self.model_version, as_json=True, **self._kw()
            )
            return dict(raw.get("config", raw))
        return dict(self._call("model config", self._client.get_model_config, self.model, self.model_version))

    def _check_tensors(self) -> None:
        assert self.contract is not None
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

    def __repr__(self) -> str:
        return f"SerClient({self.url!r}, model={self.model!r}, protocol={self.protocol!r})"

    # --- server information ---------------------------------------------------

    def repository_index(self) -> dict[str, str]:
        """``{model name: state}`` of the server's repository (``READY``, ``UNAVAILABLE``...)."""
        client = self._client or self._new_transport()
        try:
            if self.protocol == "grpc":
                raw = self._call("repository index", client.get_model_repository_index, as_json=True, **self._kw())
                models = raw.get("models", [])
            else:
                models = self._call("repository index", client.get_model_repository_index)
            return {m["name"]: m.get("state", "") for m in models}
        finally:
            if client is not self._client:
                client.close()

    def statistics(self) -> ModelStats:
        """Cumulative inference statistics of the model (all versions summed)."""
        client = self._transport()
        if self.protocol == "grpc":
            raw = self._call("statistics", client.get_inference_statistics, self.model, as_json=True, **self._kw())
        else:
            raw = self._call("statistics", client.get_inference_statistics, self.model)
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
            ServerUnavailableError: the server went away.
        """
        self._transport()  # raises if not open
        x = np.ascontiguousarray(waveforms, dtype=np.float32)
        n = np.ascontiguousarray(np.asarray(num_samples, dtype=np.int64).reshape(-1, 1))
        if x.ndim != 2 or x.shape[0] == 0 or n.shape[0] != x.shape[0]:
            raise InferenceError(
                f"model {self.model!r}: waveforms {tuple(x.shape)} and num_samples {tuple(np.shape(num_samples))}: "
                "expected [k, W] and [k] or [k, 1] with k >= 1"
            )
        logits, probs = [], []
        for start in range(0, x.shape[0], self.max_batch_size):
            lg, pr = self._infer_batch(x[start : start + self.max_batch_size], n[start : start + self.max_batch_size])
            logits.append(lg)
            probs.append(pr)
        return np.concatenate(logits), np.concatenate(probs)

    def _infer_batch(self, x: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        client = self._transport()
        if self.protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc
        wav = tc.InferInput(INPUT_WAVEFORM, list(x.shape), "FP32")
        ns = tc.InferInput(INPUT_NUM_SAMPLES, list(n.shape), "INT64")
        wav.set_data_from_numpy(x)
        ns.set_data_from_numpy(n)
        outputs = [tc.InferRequestedOutput(OUTPUT_LOGITS), tc.InferRequestedOutput(OUTPUT_PROBABILITIES)]
        result = self._call(
            "infer", client.infer, self.model, [wav, ns], model_version=self.model_version, outputs=outputs, **self._kw()
        )
        logits, probs = result.as_numpy(OUTPUT_LOGITS), result.as_numpy(OUTPUT_PROBABILITIES)
        if logits is None or probs is None or probs.shape[0] != x.shape[0]:
            raise ContractError(
                f"model {self.model!r} at {self.url}: response lacks {OUTPUT_LOGITS!r}/{OUTPUT_PROBABILITIES!r} "
                f"of batch {x.shape[0]}"
            )
        return logits.astype(np.float32, copy=False), probs.astype(np.float32, copy=False)

    def classify(self, source: AudioSource, *, sample_rate: int | None = None, name: str | None = None) -> Prediction:
        """Classify one clip.

        Args:
            source: file path, encoded file bytes, or a numpy array ``[n]`` /
                ``[n, channels]`` (float in [-1, 1] or integer PCM).
            sample_rate: the array's rate in Hz (arrays only).
            name: how results and errors refer to the source (default: the path).

        Returns:
            :class:`Prediction`.

        Raises:
            AudioError: the audio is unreadable, empty, non-finite, silent or too long.
            InferenceError, ServerUnavailableError: the request failed.
        """
        self._transport()  # raises if not open
        assert self.contract is not None
        t0 = time.perf_counter()
        label = name or (str(source) if isinstance(source, (str, Path)) else None)
        y = load_audio(source, sample_rate=sample_rate, config=self.audio, name=label)
        windows = make_windows(y, window_samples=self.contract.window_samples, hop_samples=self.contract.hop_samples)
        _, probs = self.infer_windows(windows.waveforms, windows.num_samples)
        p = aggregate(probs, windows.num_samples)
        best = int(np.argmax(p))
        labels = self.contract.labels
        return Prediction(
            source=label or ("<bytes>" if isinstance(source, bytes) else "<array>"),
            label=labels[best],
            confidence=float(p[best]),
            probabilities={lab: float(v) for lab, v in zip(labels, p, strict=True)},
            window_probabilities=probs,
            latency_s=time.perf_counter() - t0,
        )

    def classify_many(
        self,
        sources: Iterable[AudioSource],
        *,
        concurrency: int = 8,
        sample_rate: int | None = None,
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

        Returns:
            An iterator of :class:`ClassifyResult`, one per source, in input order.

        Raises:
            ConfigError: ``concurrency < 1`` or the client is not open (raised at once).
        """
        if concurrency < 1:
            raise ConfigError(f"concurrency={concurrency}: must be >= 1")
        self._transport()  # raises now, not at the first next(), if not open
        return self._classify_many(iter(enumerate(sources)), concurrency=concurrency, sample_rate=sample_rate)

    def _classify_many(
        self, it: Iterator[tuple[int, AudioSource]], *, concurrency: int, sample_rate: int | None
    ) -> Iterator[ClassifyResult]:
        pending: deque[Future] = deque()
        try:
            with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ser-client") as pool:

                def submit_next() -> bool:
                    try:
                        i, src = next(it)
                    except StopIteration:
                        return False
                    pending.append(pool.submit(self._classify_result, i, src, sample_rate))
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

    def _classify_result(self, index: int, source: AudioSource, sample_rate: int | None) -> ClassifyResult:
        name = str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__} #{index}>"
        try:
            return ClassifyResult(index, name, prediction=self.classify(source, sample_rate=sample_rate, name=name))
        except SerError as exc:
            return ClassifyResult(index, name, error=exc)
        except Exception as exc:  # noqa: BLE001 - reported per file, never kills the batch
            return ClassifyResult(index, name, error=InferenceError(f"{name}: {type(exc).__name__}: {_one_line(exc)}"))


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
    "ClassifyResult",
    "ModelStats",
    "Prediction",
    "SerClient",
    "normalize_url",
    "translate_error",
]
