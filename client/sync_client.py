"""The blocking client: :class:`SerClient`, its connection, calls with retries, and batch classification.

HTTP clients of tritonclient are not thread-safe, so every thread that calls an HTTP
``SerClient`` gets a client (one keep-alive connection) of its own; the clients of threads
that have ended are closed whenever a thread opens one, and by ``classify_many`` when its
workers finish, so the connections stay bounded by the threads alive. gRPC clients are shared.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import numpy as np

from .audio import AudioSource
from .client_base import ClientBase
from .errors import (
    ConfigError,
    ModelNotFoundError,
    RequestTimeoutError,
    SerError,
    ServerUnavailableError,
)
from .results import ClassifyResult, ModelStats, Prediction, model_stats


class SerClient(ClientBase):
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
        transport: TLS, extra headers and time limits (:class:`~client.client_options.TransportOptions`).
        on_attempt: called as ``on_attempt(what, attempt)`` before every attempt of
            every call (``what``: ``"infer"``, ``"liveness check"``...; attempt 1, 2...).
        server_side: send each clip itself (encoded bytes, or an array's samples and rate) to
            the server-side audio model (``model`` default ``ser``), which decodes and windows it
            with the same code (:mod:`client.server_side`); the answer is the same Prediction.

    Attributes:
        contract: the served model's :class:`~client.contract.ModelContract` (after open).
        max_batch_size: the model's ``max_batch_size`` (after open).
        config: the model config as a JSON-like dict (after open).

    Example:
        >>> with SerClient("127.0.0.1:8001", model="ser_int8") as client:  # doctest: +SKIP
        ...     print(client.classify("clip.wav").label)
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self._clients: dict[str, Any] | None = None  # endpoint -> transport (gRPC: all threads; HTTP: the opening thread)
        self._owner = threading.get_ident()
        self._local = threading.local()
        self._extra_clients: list[tuple[threading.Thread, str, Any]] = []
        self._extra_lock = threading.Lock()

    # --- connection ---------------------------------------------------------

    def _new_transport(self, address: str):
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            return grpcclient.InferenceServerClient(address, **self.transport.grpc_client_kwargs(address))
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(address, **self.transport.http_client_kwargs(timeout_s=self.timeout_s))

    def _require_open(self) -> dict[str, Any]:
        if self._clients is None:
            raise ConfigError(f"SerClient({self.url!r}, model={self.model!r}) is not open: use it as a context manager")
        return self._clients

    def _transport(self, address: str):
        """The tritonclient of ``address`` for this thread (gRPC clients are shared; HTTP ones are not thread-safe)."""
        shared = self._require_open()
        if self.protocol == "grpc" or threading.get_ident() == self._owner:
            with self._extra_lock:  # one transport per endpoint, however many threads ask at once
                client = shared.get(address)
                if client is None:
                    client = shared[address] = self._new_transport(address)
            return client
        clients = getattr(self._local, "clients", None)
        if clients is None:
            self._close_clients_of_finished_threads()  # a thread that ended cannot close its own
            clients = self._local.clients = {}
        client = clients.get(address)
        if client is None:
            client = clients[address] = self._new_transport(address)
            with self._extra_lock:
                self._extra_clients.append((threading.current_thread(), address, client))
        return client

    def _close_clients_of_finished_threads(self) -> None:
        with self._extra_lock:
            done = [c for t, _, c in self._extra_clients if not t.is_alive()]
            self._extra_clients = [e for e in self._extra_clients if e[0].is_alive()]
        _close_all(done)

    def _drop_removed_endpoints(self) -> None:
        """Close the transports of endpoints a DNS resolution dropped."""
        removed = set(self._pool.take_removed())
        if not removed or self._clients is None:
            return
        gone = [self._clients.pop(a) for a in list(self._clients) if a in removed]
        with self._extra_lock:
            gone += [c for _, a, c in self._extra_clients if a in removed]
            self._extra_clients = [e for e in self._extra_clients if e[1] not in removed]
        _close_all(gone)

    def _endpoint(self) -> str:
        """The endpoint for the next attempt: in turn over those up; one set aside is probed before it is used again."""
        while True:
            address, probe = self._pool.pick()
            self._drop_removed_endpoints()
            if not probe:
                return address
            try:
                ready = self._transport(address).is_model_ready(self.model, self.model_version, **self._kw())
            except Exception:  # noqa: BLE001 - a probe that fails leaves the endpoint set aside
                ready = False
            if ready:
                self._pool.recovered(address)
                return address
            self._pool.failed(address)

    def _call(self, what: str, method: str, *args, **kwargs):
        """The transport's ``method(*args, **kwargs)`` on the endpoint whose turn it is, errors translated.

        Retried per :attr:`retry` on transport failures, at once on another endpoint when one is up.
        """
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            self._attempt(what, attempt)
            address = self._endpoint()
            try:
                result = getattr(self._transport(address), method)(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - translated into the typed hierarchy
                delay = self._after_failure(exc, what, address, attempt, started)
            else:
                if not self._pool.is_up(address):
                    self._pool.recovered(address)  # every endpoint was set aside, and this one answered
                return result
            time.sleep(delay)

    def open(self) -> "SerClient":
        """Connect, check liveness and readiness, read and check the model's contract.

        Connection failures are retried per :attr:`retry` (a server still starting is waited for).

        Raises:
            ServerUnavailableError: nothing answers at ``url`` (refused, UNAVAILABLE, or no answer
                to the health checks within the time limit).
            ModelNotFoundError: the model is not ready; the message lists the ready ones.
            ContractError: the config lacks the ``ser.*`` parameters or the tensors
                ``waveform``/``num_samples`` -> ``logits``/``probabilities``.
        """
        if self._clients is not None:
            return self
        try:
            self._pool.refresh(force=True)
            self._clients = {}
            self._owner = threading.get_ident()
            try:
                for address in self._pool.addresses():
                    self._transport(address)
            except Exception as exc:  # noqa: BLE001 - bad TLS files and the like
                raise self._translate(exc, "connect") from None
            live = self._call("liveness check", "is_server_live", **self._kw())
            if not live:
                raise ServerUnavailableError(f"{self.url}: Triton server answers over {self.protocol} but is not live")
            ready = self._call("readiness check", "is_model_ready", self.model, self.model_version, **self._kw())
            if not ready:
                raise ModelNotFoundError(self._not_ready_message())
            self._accept_config(self._read_config())
        except RequestTimeoutError as exc:
            self.close()
            raise self._unanswered(exc) from None
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
        raw = self._call("model config", "get_model_config", self.model, self.model_version, **extra, **self._kw())
        return self._config_from_raw(raw)

    def close(self) -> None:
        """Close the connections; safe to call twice.

        Open HTTP keep-alive connections would otherwise hold a stopping server
        for its whole exit timeout.
        """
        clients = [*(self._clients or {}).values(), *(c for _, _, c in self._extra_clients)]
        self._clients = None
        self._extra_clients = []
        self._local = threading.local()
        _close_all(clients)

    def __enter__(self) -> "SerClient":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- server information ---------------------------------------------------

    def repository_index(self) -> dict[str, str]:
        """``{model name: state}`` of the server's repository (``READY``, ``UNAVAILABLE``...), from one endpoint."""
        opened_here = self._clients is None
        if opened_here:
            self._pool.refresh(force=True)
            self._clients = {}
        try:
            if self.protocol == "grpc":
                raw = self._call("repository index", "get_model_repository_index", as_json=True, **self._kw())
                models = raw.get("models", [])
            else:
                models = self._call("repository index", "get_model_repository_index", **self._kw())
            return {m["name"]: m.get("state", "") for m in models}
        finally:
            if opened_here:
                self.close()

    def versions(self) -> list[str]:
        """The versions of the model the server has ready, as the model's metadata lists them (one endpoint's)."""
        self._require_open()
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        raw = self._call("model metadata", "get_model_metadata", self.model, self.model_version, **extra, **self._kw())
        return [str(v) for v in raw.get("versions", [])]

    def statistics(self) -> ModelStats:
        """Cumulative inference statistics of the model (all versions summed), of the endpoint whose turn it is.

        With several endpoints, each keeps its own: open a client on each (:attr:`endpoints`) to read them all.
        """
        self._require_open()
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        raw = self._call("statistics", "get_inference_statistics", self.model, **extra, **self._kw())
        return model_stats(self.model, raw)

    def stream(self, *, model: str | None = None):
        """A live-call session on this server's gRPC endpoint (:class:`client.stream.StreamSession`).

        Use it as a context manager; it carries any number of calls over one gRPC stream to the
        streaming model (default ``ser-stream``), with this client's TLS and headers.
        """
        from .stream import StreamSession
        from .stream_service import STREAM_MODEL

        if self.protocol != "grpc":
            raise ConfigError(f"SerClient({self.url!r}, protocol={self.protocol!r}): live calls need gRPC (a bidirectional stream)")
        return StreamSession(self.url, model=model or STREAM_MODEL, transport=self.transport, timeout_s=self.timeout_s)

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
        self._require_open()
        return self._infer_all(*self._check_windows(waveforms, num_samples), top_k=0)

    def _infer_all(self, x: np.ndarray, n: np.ndarray, *, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        first, probs = [], []
        for start in range(0, x.shape[0], self.max_batch_size):
            a, b = self._infer_batch(x[start : start + self.max_batch_size], n[start : start + self.max_batch_size], top_k)
            first.append(a)
            probs.append(b)
        return np.concatenate(first), np.concatenate(probs)

    def _infer_batch(self, x: np.ndarray, n: np.ndarray, top_k: int = 0) -> tuple[np.ndarray, np.ndarray]:
        inputs, outputs, _ = self._request(x, n, top_k)
        result = self._call(
            "infer", "infer", self.model, inputs, model_version=self.model_version, outputs=outputs, **self._kw()
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
        self._require_open()
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
        self._require_open()  # raises now, not at the first next(), if not open
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


def _close_all(clients: Iterable[Any]) -> None:
    for client in clients:
        try:
            client.close()
        except Exception:  # noqa: BLE001, S110 - closing is best effort
            pass


__all__ = ["SerClient"]
