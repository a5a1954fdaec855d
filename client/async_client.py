"""The asyncio client: :class:`AsyncSerClient`, the twin of :class:`~client.sync_client.SerClient`."""

from __future__ import annotations

import time
from typing import Any, Iterable

import numpy as np

from .audio import AudioSource
from .client_base import ClientBase
from .errors import ConfigError, ModelNotFoundError, RequestTimeoutError, ServerUnavailableError
from .results import ClassifyResult, ModelStats, Prediction, model_stats


class AsyncSerClient(ClientBase):
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
        self._clients: dict[str, Any] | None = None  # endpoint -> transport

    def _new_transport(self, address: str):
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as grpcaio

            return grpcaio.InferenceServerClient(address, **self.transport.grpc_client_kwargs(address))
        import tritonclient.http.aio as httpaio

        return httpaio.InferenceServerClient(
            address, conn_timeout=self._time_limit_s(), ssl=self.transport.ssl, ssl_context=self.transport.ssl_context()
        )

    def _time_limit_s(self) -> float:
        """gRPC: as the sync client's. HTTP: the connection limit plus the network limit.

        ``tritonclient.http.aio`` takes one limit, ``conn_timeout``, which is aiohttp's ``total``:
        the whole call, connecting and answering together. The sum lets every call through that
        the sync client (a limit to connect, then one to answer) lets through.
        """
        if self.protocol == "grpc":
            return super()._time_limit_s()
        return (self.transport.connection_timeout_s or self.timeout_s) + (self.transport.network_timeout_s or self.timeout_s)

    def _require_open(self) -> dict[str, Any]:
        if self._clients is None:
            raise ConfigError(f"AsyncSerClient({self.url!r}, model={self.model!r}) is not open: use `async with`")
        return self._clients

    def _transport(self, address: str):
        clients = self._require_open()
        if address not in clients:
            clients[address] = self._new_transport(address)
        return clients[address]

    async def _endpoint(self) -> str:
        """As :meth:`SerClient._endpoint`."""
        while True:
            address, probe = self._pool.pick()
            for gone in self._pool.take_removed():
                client = (self._clients or {}).pop(gone, None)
                if client is not None:
                    await _close(client)
            if not probe:
                return address
            try:
                ready = await self._transport(address).is_model_ready(self.model, self.model_version, **self._kw())
            except Exception:  # noqa: BLE001 - a probe that fails leaves the endpoint set aside
                ready = False
            if ready:
                self._pool.recovered(address)
                return address
            self._pool.failed(address)

    async def _call(self, what: str, method: str, *args, **kwargs):
        import asyncio

        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            self._attempt(what, attempt)
            address = await self._endpoint()
            try:
                result = await getattr(self._transport(address), method)(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - translated into the typed hierarchy
                delay = self._after_failure(exc, what, address, attempt, started)
            else:
                if not self._pool.is_up(address):
                    self._pool.recovered(address)
                return result
            await asyncio.sleep(delay)

    async def open(self) -> "AsyncSerClient":
        """As :meth:`SerClient.open`."""
        if self._clients is not None:
            return self
        try:
            self._pool.refresh(force=True)
            self._clients = {}
            try:
                for address in self._pool.addresses():
                    self._transport(address)
            except Exception as exc:  # noqa: BLE001
                raise self._translate(exc, "connect") from None
            if not await self._call("liveness check", "is_server_live", **self._kw()):
                raise ServerUnavailableError(f"{self.url}: Triton server answers over {self.protocol} but is not live")
            if not await self._call("readiness check", "is_model_ready", self.model, self.model_version, **self._kw()):
                raise ModelNotFoundError(f"model {self.model!r} is not ready at {self.url}")
            extra = {"as_json": True} if self.protocol == "grpc" else {}
            raw = await self._call("model config", "get_model_config", self.model, self.model_version, **extra, **self._kw())
            self._accept_config(self._config_from_raw(raw))
        except RequestTimeoutError as exc:
            await self.close()
            raise self._unanswered(exc) from None
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close the connections; safe to call twice."""
        clients, self._clients = self._clients, None
        for client in (clients or {}).values():
            await _close(client)

    async def __aenter__(self) -> "AsyncSerClient":
        return await self.open()

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def statistics(self) -> ModelStats:
        """As :meth:`SerClient.statistics`."""
        self._require_open()
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        raw = await self._call("statistics", "get_inference_statistics", self.model, **extra, **self._kw())
        return model_stats(self.model, raw)

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
        inputs, outputs, _ = self._request(x, n, top_k)
        result = await self._call(
            "infer", "infer", self.model, inputs, model_version=self.model_version, outputs=outputs, **self._kw()
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


async def _close(client: Any) -> None:
    try:
        await client.close()
    except Exception:  # noqa: BLE001, S110 - closing is best effort
        pass


__all__ = ["AsyncSerClient"]
