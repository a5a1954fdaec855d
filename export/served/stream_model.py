"""The streaming model ``ser-stream``: a Triton python-backend model, one live call per sequence, updates out.

The repository writer (:mod:`export.stream_repository`) copies this file to
``<repo>/ser-stream/1/model.py``, the audio model's file beside it (``audio_model.py``:
the BLS code that sends windows to the window model), the client's contract
modules to ``1/client/`` and silero-vad's ONNX file to ``1/silero_vad.onnx``.

Triton's sequence batcher (Oldest strategy) routes every chunk of a call to the
same instance and batches chunks of different calls into one ``execute``; the
model is decoupled, so a chunk gets zero or more updates and then the final flag.
Per ``execute``:

1. per request, in arrival order and without awaiting: read START/END/CORRID and
   the chunk, create or find the call's :class:`client.stream_service.CallState`, push
   the samples (resample, detector, ring buffer) and collect the windows they complete;
2. send the speech windows of every request together to the window model (BLS,
   :class:`audio_model.WindowModels`): the window model's dynamic batcher merges them
   with other calls' and clips' windows;
3. per request, after the call's previous chunk has been answered (a chain of futures
   keeps a call's updates in order while ``execute`` calls overlap): smoothing, label,
   one update per window, at END the segments, then the final flag.

The detector runs here, not as a model of its own: it is recurrent per call (128-float
state, 64 samples of context) and costs about 0.6 ms per 32 ms frame on one core, so
its state lives with the call's audio instead of travelling as sequence state through
a BLS round trip per frame.

Triton does not tell a model when it forgets an idle sequence, so a thread drops
calls without a chunk for ``ser.stream.idle_timeout_s`` (the config's
``max_sequence_idle_microseconds`` is the same time). A refused chunk gets an error
for its call alone: ``INVALID_ARGUMENT`` (bad audio, a call that was never started),
``UNAVAILABLE`` (too many calls, no window model); no exception leaves ``execute``.
The stub of the bundled release may log ``Cannot remove future from background; KeyError``
when an ``execute`` finishes before the stub has filed it (a harmless race in the python
backend's async execute, triton-inference-server/server#8537).
The gauge ``ser_stream_calls`` (Triton's metrics endpoint) counts the calls held.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if (_HERE / "client").is_dir() and sys.path[:1] != [str(_HERE)]:
    sys.path.insert(0, str(_HERE))  # the packaged contract and the audio model's BLS code win over installed ones

import numpy as np  # noqa: E402
from audio_model import InnerModelUnavailable, WindowModels, pb_utils, read_config  # noqa: E402

from client.audio_service import error_message, inner_models_from_parameters  # noqa: E402
from client.contract import ModelContract  # noqa: E402
from client.errors import AudioError, ConfigError  # noqa: E402
from client.stream_service import (  # noqa: E402
    CONTROL_CORRID,
    CONTROL_END,
    CONTROL_START,
    INPUT_CANCEL,
    INPUT_HOP_MS,
    INPUT_PCM,
    INPUT_PCM_S16,
    INPUT_SAMPLE_RATE,
    INPUT_VAD,
    STREAM_PARAM_PREFIX,
    CallState,
    StreamSettings,
    cancelled,
    read_chunk,
)
from client.vad import VAD_FILENAME, VAD_SILERO, open_vad  # noqa: E402


class CallRefused(RuntimeError):
    """A START beyond ``max_calls``."""


class UnknownCall(ValueError):
    """A chunk for a call this instance does not hold (never started, ended, swept, or the server restarted)."""


class Call:
    """A call held by this instance: its state, when it last sent a chunk, the tail of its answer chain."""

    __slots__ = ("state", "seen", "tail")

    def __init__(self, state: CallState) -> None:
        self.state = state
        self.seen = time.monotonic()
        self.tail = None


def _array(request, name: str):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _flag(request, name: str) -> bool:
    value = _array(request, name)
    return bool(value is not None and value.size and value.reshape(-1)[0])


class TritonPythonModel:
    """The python-backend entry points of ``ser-stream``."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read the contract, settings and window models; open the detector; start the sweeper."""
        self.name, params = read_config(args, default_name="ser-stream")
        self.contract = ModelContract.from_parameters(params, model=self.name)
        self.settings = StreamSettings.from_parameters(params, model=self.name)
        self.windows = WindowModels(inner_models_from_parameters(params, model=self.name, prefix=STREAM_PARAM_PREFIX))
        self.vad = open_vad(_HERE / VAD_FILENAME) if self.settings.vad == VAD_SILERO else None
        self.calls: dict[int, Call] = {}
        self.lock = threading.Lock()
        self._gauge = self._swept = None
        if hasattr(pb_utils, "MetricFamily"):  # the families must outlive their metrics: kept as attributes
            labels = {"model": self.name}
            self._families = (
                pb_utils.MetricFamily(name="ser_stream_calls", description="calls held by the streaming model",
                                      kind=pb_utils.MetricFamily.GAUGE),
                pb_utils.MetricFamily(name="ser_stream_calls_swept", description="calls dropped as idle",
                                      kind=pb_utils.MetricFamily.COUNTER),
            )
            self._gauge, self._swept = (family.Metric(labels=labels) for family in self._families)
        self._stop = threading.Event()
        self._server_pid = os.getppid()  # the tritonserver that spawned this stub
        self._sweeper = threading.Thread(target=self._sweep_loop, name="ser-stream-sweeper", daemon=True)
        self._sweeper.start()
        pb_utils.Logger.log_info(f"model {self.name!r}: streaming, detector {self.settings.vad}, "
                                 f"idle timeout {self.settings.idle_timeout_s:g} s, max {self.settings.max_calls} calls")

    # --- call table -----------------------------------------------------------

    def _count(self) -> None:
        if self._gauge is not None:
            self._gauge.set(float(len(self.calls)))

    def _drop(self, call_id: int) -> None:
        with self.lock:
            self.calls.pop(call_id, None)
            self._count()

    def _sweep_loop(self) -> None:
        # A metric update is a request to the server that waits for its answer without a limit: sent
        # after the server died, it blocks this thread for good and the stub's own exit on its parent's
        # death deadlocks behind it (an orphaned stub holding its /dev/shm region). So the sweeper stops
        # once the server is gone, and touches the metrics only when it dropped a call.
        period = min(1.0, self.settings.idle_timeout_s / 4)
        while not self._stop.wait(period) and os.getppid() == self._server_pid:
            self.sweep()

    def sweep(self) -> int:
        """Drop calls idle for ``idle_timeout_s``; how many were dropped."""
        limit = time.monotonic() - self.settings.idle_timeout_s
        with self.lock:
            idle = [cid for cid, call in self.calls.items() if call.seen < limit]
            for cid in idle:
                del self.calls[cid]
            if idle:
                self._count()
        if idle and self._swept is not None:
            self._swept.increment(float(len(idle)))
        return len(idle)

    def _start(self, call_id: int, request) -> Call:
        rate = _array(request, INPUT_SAMPLE_RATE)
        if rate is None or rate.size != 1:
            raise ConfigError(f"call {call_id}: START needs {INPUT_SAMPLE_RATE!r} (one INT32, Hz of the PCM to come)")
        hop_ms = _array(request, INPUT_HOP_MS)
        hop = self.settings.hop_samples(self.contract, None if hop_ms is None else int(hop_ms.reshape(-1)[0]))
        wants_vad = _array(request, INPUT_VAD)
        vad = self.vad
        if wants_vad is not None and not bool(wants_vad.reshape(-1)[0]):
            vad = None
        elif wants_vad is not None and self.vad is None:
            raise ConfigError(f"call {call_id}: {INPUT_VAD}=true, but model {self.name!r} was written without a detector")
        state = CallState(call_id, sample_rate=int(rate.reshape(-1)[0]), contract=self.contract, settings=self.settings,
                          hop_samples=hop, vad=vad)
        with self.lock:
            self.calls.pop(call_id, None)  # a START again restarts the call
            if len(self.calls) >= self.settings.max_calls:
                raise CallRefused(f"call {call_id}: {len(self.calls)} calls already held by this instance "
                                  f"(ser.stream.max_calls={self.settings.max_calls}); try again later")
            call = self.calls[call_id] = Call(state)
            self._count()
        return call

    # --- requests -------------------------------------------------------------

    def _take(self, request, loop):
        """Step 1 for one request: ``(call, windows, end)``, or None when it was answered already (cancel)."""
        corrid = _array(request, CONTROL_CORRID)
        call_id = int(corrid.reshape(-1)[0]) if corrid is not None else int(request.correlation_id())
        start, end = _flag(request, CONTROL_START), _flag(request, CONTROL_END)
        if request.is_cancelled() or (end and _flag(request, INPUT_CANCEL)):
            self._drop(call_id)
            if request.is_cancelled():
                raise InterruptedError(f"call {call_id}: cancelled by the client")
            self._send(request, cancelled(call_id), final=True)
            return None
        if start:
            call = self._start(call_id, request)
        else:
            with self.lock:
                call = self.calls.get(call_id)
            if call is None:
                raise UnknownCall(f"call {call_id}: not held by model {self.name!r} (never started, already ended, "
                                  f"idle past {self.settings.idle_timeout_s:g} s, or the server restarted): "
                                  "start a new call with START")
        call.seen = time.monotonic()
        try:
            samples = read_chunk(_array(request, INPUT_PCM), _array(request, INPUT_PCM_S16), call_id=call_id,
                                 sample_rate=call.state.sample_rate, max_chunk_s=self.settings.max_chunk_s)
            windows = call.state.push(samples)
            if end:
                windows += call.state.finish()
        except AudioError as exc:
            if "max_call_s" in str(exc) or start:
                self._drop(call_id)  # a call past its length ends; a refused first chunk leaves nothing behind
            raise
        if end:
            self._drop(call_id)
        previous, mine = call.tail, loop.create_future()
        call.tail = mine
        return call, windows, end, previous, mine

    def _send(self, request, tensors: dict | None, *, final: bool, error=None) -> None:
        sender = request.get_response_sender()
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        if error is not None:
            sender.send(pb_utils.InferenceResponse(output_tensors=[], error=error), flags=flags)
        elif tensors is None:
            sender.send(flags=flags)
        else:
            sender.send(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in tensors.items()]),
                        flags=flags)

    def _send_error(self, request, exc: BaseException) -> None:
        """The final response of a request: its error. A sender the client already closed is let go."""
        try:
            self._send(request, None, final=True, error=self._error(exc))
        except Exception as send_failure:  # noqa: BLE001 - the call's client is gone; nothing left to tell
            pb_utils.Logger.log_warn(f"model {self.name!r}: could not answer a request ({exc}): {send_failure}")

    def _error(self, exc: BaseException):
        if isinstance(exc, (AudioError, ConfigError, UnknownCall)):
            return pb_utils.TritonError(error_message(exc), pb_utils.TritonError.INVALID_ARG)
        if isinstance(exc, (CallRefused, InnerModelUnavailable)):
            return pb_utils.TritonError(f"model {self.name!r}: {error_message(exc)}", pb_utils.TritonError.UNAVAILABLE)
        if isinstance(exc, InterruptedError):
            return pb_utils.TritonError(str(exc), getattr(pb_utils.TritonError, "CANCELLED", pb_utils.TritonError.UNKNOWN))
        return pb_utils.TritonError(f"model {self.name!r}: {error_message(exc)}", pb_utils.TritonError.INTERNAL)

    async def execute(self, requests: list) -> None:
        """Answer each request through its response sender (decoupled); returns None."""
        import asyncio

        loop = asyncio.get_running_loop()
        jobs = []
        for request in requests:
            try:
                job = self._take(request, loop)
            except Exception as exc:  # noqa: BLE001 - one error for this call, the others go on
                self._send_error(request, exc)
                continue
            if job is not None:
                jobs.append((request, *job))
        speech = [w for _, _, windows, _, _, _ in jobs for w in windows if w.speech]
        probabilities, failure = {}, None
        if speech:
            try:
                p = await self.windows.classify(np.stack([w.waveform for w in speech]),
                                                np.array([w.num_samples for w in speech], dtype=np.int64))
                probabilities = {id(w): row for w, row in zip(speech, p, strict=True)}
            except Exception as exc:  # noqa: BLE001 - every call of this batch hears why
                failure = exc
        for request, call, windows, end, previous, mine in jobs:
            try:
                if previous is not None:
                    await previous
                if failure is not None and any(w.speech for w in windows):
                    self._send(request, None, final=True, error=self._error(failure))
                    continue
                for window in windows:
                    self._send(request, call.state.update(window, probabilities.get(id(window))), final=False)
                self._send(request, call.state.result() if end else None, final=True)
            except Exception as exc:  # noqa: BLE001 - the stub lives on
                self._send_error(request, exc)
            finally:
                mine.set_result(None)
                if call.tail is mine:
                    call.tail = None
        return None

    def finalize(self) -> None:
        """Stop the sweeper; the calls go with the process."""
        self._stop.set()
        self._sweeper.join(timeout=2.0)
