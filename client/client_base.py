"""What the sync and async clients share: options, contract checks, requests and results.

:class:`ClientBase` checks the constructor's options, rebuilds and checks the
served model's contract from its config (on open), builds one batched request
and reads its answer, cuts a clip into windows and aggregates the window
probabilities into a :class:`~client.results.Prediction`. The connection and the
calls themselves (blocking or asyncio) live in :mod:`client.sync_client` and
:mod:`client.async_client`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .audio import AudioConfig, AudioSource, Windows, aggregate, load_audio, make_windows
from .audio_service import AUDIO_MODEL
from .client_options import (
    DEFAULT_GRPC_URL,
    DEFAULT_HTTP_URL,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_S,
    PROTOCOLS,
    TransportOptions,
)
from .contract import (
    INPUT_NUM_SAMPLES,
    INPUT_WAVEFORM,
    OUTPUT_LOGITS,
    OUTPUT_PROBABILITIES,
    ModelContract,
    string_parameters,
)
from .endpoints import BalanceOptions, EndpointPool
from .error_mapping import one_line, translate_error
from .errors import (
    ConfigError,
    ContractError,
    InferenceError,
    RequestTimeoutError,
    SerError,
    ServerUnavailableError,
)
from .results import ClassifyResult, Prediction, parse_classification
from .retry import RetryPolicy, is_retryable, status_of
from .server_side import ServerSideMixin


class ClientBase(ServerSideMixin):
    """What the sync and async clients share: options, contract checks, requests, results."""

    def __init__(
        self,
        url: str | None = None,
        *,
        model: str | None = None,
        protocol: str = "grpc",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        audio: AudioConfig | None = None,
        model_version: str = "",
        retry: RetryPolicy | None = None,
        transport: TransportOptions | None = None,
        on_attempt: Callable[[str, int], None] | None = None,
        server_side: bool = False,
        balance: BalanceOptions | None = None,
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
        if balance is not None and not isinstance(balance, BalanceOptions):
            raise ConfigError(f"balance={balance!r}: expected a BalanceOptions")
        if url is None:
            url = DEFAULT_GRPC_URL if protocol == "grpc" else DEFAULT_HTTP_URL
        self._pool = EndpointPool(url, protocol=protocol, options=balance or BalanceOptions())
        self.url = self._pool.spec
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

    def _time_limit_s(self) -> float:
        """The limit, seconds, within which one call must be answered (named by a time-out's message)."""
        if self.protocol == "grpc":
            return self.transport.request_timeout_s or self.timeout_s
        return self.transport.network_timeout_s or self.timeout_s

    @property
    def endpoints(self) -> list[str]:
        """The ``host:port`` endpoints the calls go to (one, a list, or a DNS name's addresses once resolved)."""
        return self._pool.addresses()

    def _translate(self, exc: BaseException, what: str, address: str | None = None) -> SerError:
        where = self.url if address is None or address == self.url else f"{address} (of {self.url})"
        return translate_error(exc, url=where, model=self.model, protocol=self.protocol, what=what,
                               timeout_s=self._time_limit_s())

    def _after_failure(self, exc: BaseException, what: str, address: str, attempt: int, started: float) -> float:
        """Seconds to wait before the next attempt of a call whose attempt on ``address`` raised ``exc``.

        A transport failure sets ``address`` aside; the next attempt then goes at once to another
        endpoint that is up, or waits the retry policy's backoff when none is. With several
        endpoints, ``NOT_FOUND`` (a replica that is shutting down unloads its models first) also
        moves the call to another endpoint that is up; with none up it is the call's failure.

        Raises:
            SerError: ``exc`` translated, when the call gives up.
        """
        moved = self._pool.balanced and status_of(exc) == "NOT_FOUND"
        delay = self._retry_delay(exc, attempt, started)
        if moved and delay is None:
            delay = self.retry.delay_s(attempt, time.monotonic() - started)
        if delay is None:
            raise self._translate(exc, what, address) from None
        self._pool.failed(address)
        if self._pool.up():
            return 0.0
        if moved:
            raise self._translate(exc, what, address) from None
        return delay

    def _unanswered(self, exc: RequestTimeoutError) -> ServerUnavailableError:
        """A time-out while opening: a server that accepts but does not answer its health checks is unavailable."""
        return ServerUnavailableError(f"{self.url}: Triton server unavailable over {self.protocol} ({exc})")

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
        self.contract = ModelContract.from_parameters(string_parameters(config), model=self.model)
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
        return ClassifyResult(index, name, error=InferenceError(f"{name}: {type(exc).__name__}: {one_line(exc)}"))


__all__ = ["ClientBase"]
