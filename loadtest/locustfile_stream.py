r"""Live calls through Triton in real time: each Locust user is one caller speaking into ``ser-stream``.

A user keeps one gRPC stream (:class:`client.stream.StreamSession`) and places calls one
after another: generated speech (:func:`loadtest.payload.generated_clips`) sent in chunks of
``--chunk-ms`` at real-time pace, then END. Locust's statistics get, per call and per update
(request type ``stream``):

* ``time to first emotion``: START sent -> the first update that carries a label, ms;
* ``update lag``: when the window's last sample was due to be spoken -> when its update
  arrived, ms (under one hop keeps up with the call);
* ``update gap``: between two consecutive updates of a call, ms (the hop when the server keeps pace);
* ``call``: END sent -> the call's segments, ms; a refused or lost call is a failure here.

A failed call still takes its caller the clip's time, and the next call goes on a new stream (a failed
opening of it is a ``setup`` failure), as a caller redials after a dropped call.

``ser loadtest --live-calls`` sweeps it over user counts (:mod:`loadtest.live_calls`: exact percentiles
per name, the hop as the bar). Alone, with Locust's percentiles in the CSV (``*_stats.csv``: 50%...99%)::

    locust -f loadtest/locustfile_stream.py --headless -u 16 -r 4 -t 60s --host 127.0.0.1:8001 \
        --csv out/stream-16 --max-update-lag-p99-ms 500 LiveCallUser

``--max-update-lag-p99-ms`` fails the run (exit 1) when the exact p99 update lag is above it: the calls
fell behind. The shared gates of :mod:`loadtest.users` apply as in every locustfile; here
``--max-failure-ratio`` counts every record (updates too), where ``ser loadtest --live-calls`` counts calls.
"""

from __future__ import annotations

import logging
import time

from locust import User, constant, events, task
from locust.exception import StopUser

from client.errors import SerError
from client.option_values import arg_type, positive_float, positive_int
from client.stream import StreamSession  # imports tritonclient.grpc only when a session opens
from client.stream_service import STREAM_MODEL
from loadtest import users  # gevent-ready gRPC; the shared options, warm-up, final statistics
from loadtest.gates import GATE_PREFIX
from loadtest.live_calls import CALL, FIRST_EMOTION, SETUP, UPDATE_GAP, UPDATE_LAG, WORKLOAD

users.install_listeners(events)

REQUEST_TYPE = WORKLOAD
log = logging.getLogger("loadtest")
_clips: list = []


@events.init_command_line_parser.add_listener
def _arguments(parser, **_kwargs) -> None:
    group = parser  # locust's own parser: its ``include_in_web_ui`` keyword is not known to argument groups
    group.add_argument("--stream-model", default=STREAM_MODEL, help="the streaming model", include_in_web_ui=True)
    group.add_argument("--chunk-ms", type=arg_type(positive_int), default=100, help="audio per chunk, ms (default: 100)")
    group.add_argument("--calls-clips", type=arg_type(positive_int), default=8, help="generated clips the calls cycle through")
    group.add_argument("--max-update-lag-p99-ms", type=arg_type(positive_float), default=None, include_in_web_ui=True,
                       help="gate: fail the run (exit 1) when the p99 update lag is above this, ms (one hop keeps pace)")


@events.quitting.add_listener
def _update_lag_gate(environment, **_kwargs) -> None:
    """The live-call gate: p99 of ``update lag`` against ``--max-update-lag-p99-ms`` (the master judges).

    Judged on the exact lags (:func:`loadtest.users.exact_percentiles`), not on Locust's histogram, which
    rounds 504 ms to 500 and would pass a run whose every update broke a 500 ms limit.
    """
    from locust.runners import WorkerRunner

    limit = getattr(environment.parsed_options, "max_update_lag_p99_ms", None)
    if limit is None or isinstance(environment.runner, WorkerRunner):
        return
    p99 = users.exact_percentiles(UPDATE_LAG).get("p99_ms")
    if p99 is None or p99 > limit:
        seen = "no update" if p99 is None else f"p99 update lag {p99:.6g} ms"
        log.error("%s%s > max_update_lag_p99_ms=%g", GATE_PREFIX, seen, limit)
        environment.process_exit_code = 1


def clips(count: int) -> list:
    """``(samples float32 [n], rate)`` of generated speech, made once per process."""
    if not _clips:
        from loadtest.payload import generated_clips

        _clips.extend((y, rate) for _, y, rate in generated_clips(count, 0))
    return _clips


@events.init.add_listener
def _prepare(environment, **_kwargs) -> None:
    """Synthesise the clips before any user starts (synthesis in a user would stall every greenlet and the clock)."""
    if environment.parsed_options is not None:
        clips(int(getattr(environment.parsed_options, "calls_clips", 8)))


class LiveCallUser(User):  # ser loadtest --live-calls runs it by this name (run_config.LIVE_CALL_USER)
    """One caller: calls back to back, each at real-time pace, updates timed as they arrive."""

    wait_time = constant(0)
    _ids = 0

    def __init__(self, environment) -> None:
        super().__init__(environment)
        opts = environment.parsed_options
        self.model = getattr(opts, "stream_model", STREAM_MODEL)
        self.chunk_ms = int(getattr(opts, "chunk_ms", 100))
        self.session: StreamSession | None = None
        LiveCallUser._ids += 1
        self._next = LiveCallUser._ids

    def _fire(self, name: str, ms: float, exc: BaseException | None = None) -> None:
        self.environment.events.request.fire(request_type=REQUEST_TYPE, name=name, response_time=ms, response_length=0,
                                             response=None, context={"model": self.model}, exception=exc, url=self.host)

    def on_start(self) -> None:
        """Open this user's stream."""
        if not self._open():
            raise StopUser()

    def _open(self) -> bool:
        """Open a stream to the server; a failure is recorded (``setup``) and answers False."""
        t0 = time.perf_counter()
        try:
            self.session = StreamSession(self.host, model=self.model).open()
        except SerError as exc:
            self._fire(SETUP, (time.perf_counter() - t0) * 1000, exc)
            return False
        return True

    @staticmethod
    def _hold_the_line(until: float) -> None:
        """Wait until ``until`` (monotonic s): a failed call takes its caller the clip's time all the same.

        A caller does not redial a hundred times a second, and failed calls / calls placed stays the share
        of the offered calls that the server lost.
        """
        time.sleep(max(0.0, until - time.monotonic()))

    def on_stop(self) -> None:
        """Close the stream (open calls are cancelled)."""
        session, self.session = self.session, None
        if session is not None:
            session.close()

    @task
    def place_call(self) -> None:
        """One call of the next clip, chunks paced in real time; its updates timed against the audio clock."""
        pool = clips(int(getattr(self.environment.parsed_options, "calls_clips", 8)))
        y, rate = pool[self._next % len(pool)]
        self._next += 1
        started = time.monotonic()
        if self.session is None and not self._open():  # the last call failed: a new stream
            self._hold_the_line(started + y.size / rate)
            return
        step = rate * self.chunk_ms // 1000
        call = self.session.call(sample_rate=rate)
        try:
            for i in range(0, y.size, step):
                chunk = y[i:i + step]
                time.sleep(max(0.0, started + (i + chunk.size) / rate - time.monotonic()))  # once it has been spoken
                call.send(chunk)
                call.poll()
            ended = time.monotonic()
            result = call.end()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, typed where it can be
            self._fire(CALL, 0.0, exc)
            # As a caller redials: the next call on a new stream. The old one may have closed (the server
            # restarted), or be held by a server that is shutting down and refuses every call on it.
            session, self.session = self.session, None
            try:
                session.close()  # cancels the failed call, if the server still holds it
            except Exception:  # noqa: BLE001, S110 - a stream that is gone cannot be closed more
                pass
            self._hold_the_line(started + y.size / rate)
            return
        self._fire(CALL, (time.monotonic() - ended) * 1000)
        labelled = [u for u in result.updates if u.label]
        if labelled:
            self._fire(FIRST_EMOTION, (labelled[0].received_s - started) * 1000)
        for before, update in zip((None, *result.updates), result.updates, strict=False):
            due = started + min(update.end_s, y.size / rate)
            self._fire(UPDATE_LAG, max(0.0, update.received_s - due) * 1000)
            if before is not None:
                self._fire(UPDATE_GAP, (update.received_s - before.received_s) * 1000)
