"""Live calls over one gRPC stream: send audio while the caller speaks, read emotion updates as they come.

One :class:`StreamSession` is one bidirectional gRPC stream to the streaming model
``ser-stream`` (:mod:`client.stream_service` states its protocol); it carries any
number of :class:`LiveCall` s at once, each a Triton sequence with its own
correlation id. A call sends PCM chunks of any size (:meth:`LiveCall.send`), reads
:class:`Update` s (:meth:`LiveCall.updates`, :meth:`LiveCall.poll`) and ends with
:meth:`LiveCall.end`, which returns the call's segments.

Failures are typed (:mod:`client.errors`): a refused chunk raises
:class:`~client.errors.StreamError` on that call only; a call the server no longer
holds (stream closed, server restarted, idle past the timeout),
:class:`~client.errors.CallLostError`; too many calls or too long a call,
:class:`~client.errors.CallLimitError`.

Example:
    >>> with StreamSession("127.0.0.1:8001") as session:  # doctest: +SKIP
    ...     call = session.call(sample_rate=8000)
    ...     for chunk in chunks:
    ...         call.send(chunk)                      # int16 or float32, mono
    ...         for update in call.poll():
    ...             print(update.end_s, update.label)
    ...     print(call.end().segments)
"""

from __future__ import annotations

import queue
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .client_options import DEFAULT_GRPC_URL, DEFAULT_TIMEOUT_S, TransportOptions, normalize_url
from .errors import (
    CallLimitError,
    CallLostError,
    CallTimeoutError,
    ConfigError,
    ModelNotFoundError,
    ServerUnavailableError,
    StreamError,
)
from .stream_service import (
    EVENT_CANCELLED,
    EVENT_END,
    INPUT_CANCEL,
    INPUT_HOP_MS,
    INPUT_PCM,
    INPUT_PCM_S16,
    INPUT_SAMPLE_RATE,
    INPUT_VAD,
    OUTPUT_CALL_ID,
    OUTPUT_DURATION,
    OUTPUT_EVENT,
    OUTPUT_LABEL,
    OUTPUT_NAMES,
    OUTPUT_SCORES,
    OUTPUT_SEGMENT_END,
    OUTPUT_SEGMENT_LABEL,
    OUTPUT_SEGMENT_START,
    OUTPUT_SMOOTHED,
    OUTPUT_SPEECH,
    OUTPUT_SPEECH_RATIO,
    OUTPUT_WINDOW_END,
    OUTPUT_WINDOW_START,
    STREAM_MODEL,
)
from .timeline import Segment


@dataclass(frozen=True)
class Update:
    """One window of a live call, as the server reported it.

    Attributes:
        call_id: the call.
        start_s, end_s: the window in the call's time, seconds.
        speech: whether the voice-activity gate let it through to the emotion model.
        speech_ratio: share of its 32 ms frames that were speech.
        scores: raw class probabilities, ``{label: p}``; None for a window without speech.
        smoothed: exponentially smoothed probabilities so far (None before the first speech window).
        label: the held label ("" before the first speech window).
        received_s: ``time.monotonic()`` when the client received it.
    """

    call_id: int
    start_s: float
    end_s: float
    speech: bool
    speech_ratio: float
    scores: dict[str, float] | None
    smoothed: dict[str, float] | None
    label: str
    received_s: float


@dataclass(frozen=True)
class CallResult:
    """What END returns: the call's label runs and every update it received.

    Attributes:
        call_id: the call.
        label: the last held label.
        segments: label runs tiling ``[0, duration_s]`` (``no_speech`` where the gate closed).
        duration_s: audio received, seconds.
        updates: every update of the call, in order.
    """

    call_id: int
    label: str
    segments: tuple[Segment, ...]
    duration_s: float
    updates: tuple[Update, ...] = field(default=())


def _strings(array) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(array).reshape(-1)]


def _named(names: list[str], values) -> dict[str, float] | None:
    v = np.asarray(values).reshape(-1) if values is not None else np.zeros(0)
    return {n: float(p) for n, p in zip(names, v, strict=True)} if v.size else None


def stream_error(message: str, *, call_id: int | None) -> StreamError:
    """The typed error a server message about a call stands for."""
    text = " ".join(message.split())
    prefix = "" if call_id is None or f"call {call_id}" in text else f"call {call_id}: "
    if "must specify the START flag" in text:  # Triton's words for a sequence it does not hold
        return CallLostError(f"{prefix}the server does not hold this call (never started, ended, idle past its "
                             f"timeout, or the server restarted): start a new call ({text})")
    if "UnknownCall" in text or "StatusCode.UNAVAILABLE" in text or "Socket closed" in text or "stream closed" in text:
        return CallLostError(prefix + text)
    if "CallRefused" in text or "max_call_s" in text:
        return CallLimitError(prefix + text)
    return StreamError(prefix + text)


class LiveCall:
    """One live call on a :class:`StreamSession` (made by :meth:`StreamSession.call`).

    Attributes:
        call_id: the correlation id (Triton's sequence id).
        sample_rate: the rate of the PCM sent, Hz.
        ended: END was sent (or the call failed for good).
    """

    def __init__(self, session: "StreamSession", call_id: int, *, sample_rate: int, hop_ms: int | None,
                 vad: bool | None) -> None:
        self.session = session
        self.call_id = call_id
        self.sample_rate = int(sample_rate)
        self._start_inputs = {INPUT_SAMPLE_RATE: np.array([[self.sample_rate]], dtype=np.int32)}
        if hop_ms is not None:
            self._start_inputs[INPUT_HOP_MS] = np.array([[int(hop_ms)]], dtype=np.int32)
        if vad is not None:
            self._start_inputs[INPUT_VAD] = np.array([[bool(vad)]], dtype=bool)
        self._started = False
        self._chunks = 0
        self.ended = False
        self._inbox: queue.Queue = queue.Queue()
        self._updates: list[Update] = []
        self._result: CallResult | None = None
        self._error: StreamError | None = None
        self._lost: CallLostError | None = None

    # --- sending --------------------------------------------------------------

    def send(self, samples: np.ndarray, *, end: bool = False) -> None:
        """Send one chunk: mono ``int16`` (16-bit PCM) or ``float32`` in [-1, 1], any length (0 too).

        Raises:
            ConfigError: the call has ended, or another dtype or shape.
            StreamError: the server refused something on this call; CallLostError: the server no longer holds it.
        """
        self._raise_pending()
        if self._lost is not None:
            raise self._lost  # the server no longer holds it: say why again
        if self.ended:
            raise ConfigError(f"call {self.call_id}: already ended")
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ConfigError(f"call {self.call_id}: chunk of shape {x.shape}: send mono samples [n]")
        if x.dtype == np.int16:
            inputs = {INPUT_PCM_S16: x[None, :]}
        elif np.issubdtype(x.dtype, np.floating):
            inputs = {INPUT_PCM: x.astype(np.float32, copy=False)[None, :]}
        else:
            raise ConfigError(f"call {self.call_id}: chunk dtype {x.dtype}: send int16 or float32 PCM")
        if not self._started:
            inputs.update(self._start_inputs)
        self._request(inputs, start=not self._started, end=end)
        self._started = True

    def _request(self, arrays: dict[str, np.ndarray], *, start: bool, end: bool) -> None:
        self._chunks += 1
        self.session.send(self.call_id, arrays, start=start, end=end, request_id=f"{self.call_id}:{self._chunks}")
        if end:
            self.ended = True

    def end(self, *, timeout_s: float | None = None) -> CallResult:
        """Send END (the server flushes the last partial window) and wait for the call's result.

        Raises:
            StreamError (or a subclass): the server refused the call; CallTimeoutError: no result in time.
        """
        if not self.ended:
            self.send(np.zeros(0, dtype=np.float32), end=True)
        deadline = time.monotonic() + (self.session.timeout_s if timeout_s is None else timeout_s)
        while self._result is None:
            self._raise_pending()
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallTimeoutError(f"call {self.call_id}: no result within {self.session.timeout_s if timeout_s is None else timeout_s:g} s of END")
            self._take(timeout=left)
        return self._result

    def cancel(self) -> None:
        """End the call without a result: the server drops its state at once. Safe to call twice."""
        if self._started and not self.ended:
            self._request({INPUT_CANCEL: np.array([[True]])}, start=False, end=True)
        self.ended = True

    # --- receiving ------------------------------------------------------------

    def poll(self) -> list[Update]:
        """The updates that arrived since the last poll, without waiting.

        Raises:
            StreamError: the server refused a chunk of this call.
        """
        before = len(self._updates)
        while self._take(timeout=0):
            pass
        self._raise_pending()
        return self._updates[before:]

    def updates(self, *, timeout_s: float | None = None) -> Iterator[Update]:
        """Every update as it arrives, until the call's result (after :meth:`end` or ``send(end=True)``)."""
        seen = 0
        while True:
            while seen < len(self._updates):
                seen += 1
                yield self._updates[seen - 1]
            if self._result is not None:
                return
            self._raise_pending()
            if not self._take(timeout=self.session.timeout_s if timeout_s is None else timeout_s):
                raise CallTimeoutError(f"call {self.call_id}: no update for {self.session.timeout_s if timeout_s is None else timeout_s:g} s")

    def _take(self, *, timeout: float) -> bool:
        try:
            item = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return False
        if isinstance(item, StreamError):
            self._error = self._error or item
            if isinstance(item, CallLostError):
                self.ended, self._lost = True, item
        elif isinstance(item, CallResult):
            self._result = CallResult(item.call_id, item.label, item.segments, item.duration_s, tuple(self._updates))
        else:
            self._updates.append(item)
        return True

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def deliver(self, item) -> None:
        """Called by the session's stream thread with an :class:`Update`, a :class:`CallResult` or an error."""
        self._inbox.put(item)


class StreamSession:
    """One gRPC bidirectional stream to the streaming model, carrying many live calls.

    Args:
        url: ``host:port`` of the server's gRPC endpoint.
        model: the streaming model's name.
        transport: TLS and extra headers (:class:`~client.client_options.TransportOptions`).
        timeout_s: how long :meth:`LiveCall.end` and :meth:`LiveCall.updates` wait by default, seconds.
    """

    def __init__(self, url: str | None = None, *, model: str = STREAM_MODEL, transport: TransportOptions | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = normalize_url(url or DEFAULT_GRPC_URL, protocol="grpc")
        self.model = model
        self.transport = transport or TransportOptions()
        self.timeout_s = float(timeout_s)
        self.labels: tuple[str, ...] = ()
        self._client = None
        self._calls: dict[int, LiveCall] = {}
        self._lock = threading.Lock()

    def open(self) -> "StreamSession":
        """Connect, check the model is ready and decoupled, start the stream.

        Raises:
            ServerUnavailableError: nothing answers. ModelNotFoundError: no ready model of that name.
        """
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        self._client = grpcclient.InferenceServerClient(self.url, **self.transport.grpc_client_kwargs(self.url))
        try:
            ready = self._client.is_model_ready(self.model)
        except InferenceServerException as exc:
            self.close()
            raise ServerUnavailableError(f"{self.url}: {' '.join(str(exc).split())}") from None
        if not ready:
            self.close()
            raise ModelNotFoundError(f"{self.url}: model {self.model!r} is not ready (written with `ser repository --stream-model`?)")
        self._client.start_stream(callback=self._on_response, headers=dict(self.transport.headers) or None)
        return self

    def close(self) -> None:
        """Cancel the calls still open (the server frees them at once), then close the stream."""
        with self._lock:
            open_calls = [c for c in self._calls.values() if not c.ended]
        for call in open_calls:
            try:
                call.cancel()
            except Exception:  # noqa: BLE001, S110 - the stream may already be gone
                pass
        if self._client is not None:
            try:
                self._client.stop_stream()
                self._client.close()
            finally:
                self._client = None

    def __enter__(self) -> "StreamSession":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def call(self, *, sample_rate: int, call_id: int | None = None, hop_ms: int | None = None,
             vad: bool | None = None) -> LiveCall:
        """A new call (START travels with its first chunk).

        Args:
            sample_rate: the rate of the PCM it will send, Hz.
            call_id: its correlation id (default: a random 63-bit number, unique across clients).
            hop_ms: time between updates (default: the model's), within its limits.
            vad: False turns the voice-activity gate off for this call.
        """
        if self._client is None:
            raise ConfigError(f"StreamSession({self.url!r}) is not open: use it as a context manager")
        cid = int(call_id) if call_id is not None else secrets.randbits(63) or 1
        call = LiveCall(self, cid, sample_rate=sample_rate, hop_ms=hop_ms, vad=vad)
        with self._lock:
            self._calls = {k: c for k, c in self._calls.items() if not (c.ended and c._result is not None)}
            self._calls[cid] = call
        return call

    def send(self, call_id: int, arrays: dict[str, np.ndarray], *, start: bool, end: bool, request_id: str) -> None:
        """Send one request of a call on the stream (what :class:`LiveCall` uses)."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        inputs = []
        for name, value in arrays.items():
            tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        try:
            self._client.async_stream_infer(self.model, inputs, request_id=request_id, sequence_id=call_id,
                                            sequence_start=start, sequence_end=end)
        except InferenceServerException as exc:
            raise stream_error(f"stream closed: {exc}", call_id=call_id) from None

    def _on_response(self, result: Any, error: Any) -> None:
        now = time.monotonic()
        if error is not None:
            self._on_error(str(error))
            return
        call_id = int(np.asarray(result.as_numpy(OUTPUT_CALL_ID)).reshape(-1)[0])
        with self._lock:
            call = self._calls.get(call_id)
        if call is None:
            return
        event = _strings(result.as_numpy(OUTPUT_EVENT))[0]
        names = _strings(result.as_numpy(OUTPUT_NAMES)) if result.as_numpy(OUTPUT_NAMES) is not None else []
        self.labels = tuple(names) or self.labels
        label = _strings(result.as_numpy(OUTPUT_LABEL))[0] if result.as_numpy(OUTPUT_LABEL) is not None else ""
        if event == EVENT_CANCELLED:
            return
        if event == EVENT_END:
            segments = tuple(Segment(lab, float(a), float(b)) for lab, a, b in zip(
                _strings(result.as_numpy(OUTPUT_SEGMENT_LABEL)), result.as_numpy(OUTPUT_SEGMENT_START).reshape(-1),
                result.as_numpy(OUTPUT_SEGMENT_END).reshape(-1), strict=True))
            duration = float(result.as_numpy(OUTPUT_DURATION).reshape(-1)[0])
            call.deliver(CallResult(call_id, label, segments, duration))
            return
        call.deliver(Update(
            call_id=call_id,
            start_s=float(result.as_numpy(OUTPUT_WINDOW_START).reshape(-1)[0]),
            end_s=float(result.as_numpy(OUTPUT_WINDOW_END).reshape(-1)[0]),
            speech=bool(result.as_numpy(OUTPUT_SPEECH).reshape(-1)[0]),
            speech_ratio=float(result.as_numpy(OUTPUT_SPEECH_RATIO).reshape(-1)[0]),
            scores=_named(names, result.as_numpy(OUTPUT_SCORES)),
            smoothed=_named(names, result.as_numpy(OUTPUT_SMOOTHED)),
            label=label,
            received_s=now,
        ))

    def _on_error(self, message: str) -> None:
        found = re.search(r"\b(?:call|sequence) (\d+)", message)
        with self._lock:
            if found and int(found.group(1)) in self._calls:
                targets = [self._calls[int(found.group(1))]]
            else:  # not about one call: the stream failed (a gRPC status), or a request Triton refused unread
                targets = [c for c in self._calls.values() if c._result is None]
                if "StatusCode." not in message and "Socket closed" not in message:
                    for call in targets:  # the stream lives on; which call's request it was, Triton does not say
                        call.deliver(StreamError(f"call {call.call_id}: a request on this stream was refused: {message}"))
                    return
                message = (f"the stream to {self.url} closed (the server stopped or restarted), and the call with it: "
                           f"start a new call on a new session ({' '.join(message.split())})")
                for call in targets:
                    call.deliver(CallLostError(f"call {call.call_id}: {message}"))
                return
        for call in targets:
            call.deliver(stream_error(message, call_id=call.call_id))


__all__ = ["CallResult", "LiveCall", "StreamSession", "Update", "stream_error"]
