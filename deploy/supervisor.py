"""Keep the local tritonserver serving: restart it when it dies (``ser serve``).

The bundled tritonserver 2.51 cannot be patched, and one unauthenticated HTTP JSON request
declaring a huge shape makes it abort (it allocates the declared size before reading the
data; upstream added ``--http-max-input-size`` and overflow checks later, see
``docs/hostile-traffic.md``). The local defence is three parts:

* :class:`Supervisor` restarts a server that died, on the same ports, after cleaning up what
  it left (backend stubs killed by PID, ``/dev/shm`` regions removed: :meth:`LocalTriton.stop`),
  with exponential backoff and a bounded number of restarts per :attr:`RestartPolicy.window_s`;
  every death and restart is one log line naming the exit status and the log's reason. A
  backend stub that died under a live server is noticed too (:class:`deploy.stub_watch.StubWatch`):
  its model is reloaded, or the server restarted if the reload fails; so is a server that is
  alive but stopped answering (``/v2/health/live`` missed ``live_misses`` times in a row);
* ``ser serve --no-http`` serves gRPC only, which closes that request's path altogether;
* the client's time budget (``ser predict --retry-for``) rides out the restart.

Example:
    >>> server = LocalTriton("model_repository/portable")  # doctest: +SKIP
    >>> Supervisor(server, policy=RestartPolicy(max_restarts=3)).run(threading.Event())  # doctest: +SKIP
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from client.errors import ConfigError, ServerError, ServerStartError
from deploy.cleanup import remove_orphaned_regions
from deploy.flags import GrpcTls
from deploy.local_triton import LocalTriton, ServerStartCancelled
from deploy.server_log import summarize_failure
from deploy.stub_watch import StubWatch

#: Signals that stop ``ser serve`` cleanly: Ctrl-C, ``kill``/Kubernetes, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def death_reason(rc: int | None, log_text: str) -> str:
    """Why a running server died: its log's crash line, or the signal that killed it when the log cannot say.

    A SIGKILL (the OOM killer, ``kill -9``) leaves nothing in the log; its last line would only
    read as a cause. A server that crashed (``Signal (N) received``) is described by its log.
    """
    found = summarize_failure(log_text)
    if rc is None or rc >= 0 or found.startswith("aborted by signal"):
        return found
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = f"signal {-rc}"
    return f"killed by {name} from outside (its log names no cause: the OOM killer, or another process)"


@dataclass(frozen=True)
class RestartPolicy:
    """How a dead server is restarted.

    Restart ``r`` (1, 2, ...) waits ``min(max_backoff_s, initial_backoff_s * 2**(r-1))``.
    A server that served for ``window_s`` or longer has its count reset: a crash a day is
    restarted for ever, a crash loop stops after ``max_restarts``.

    Attributes:
        max_restarts: restarts allowed in a row (0 = never restart; the death is an error).
        initial_backoff_s: wait before the first restart, seconds.
        max_backoff_s: cap on one wait, seconds.
        window_s: seconds of serving after which the count of restarts starts again.
    """

    max_restarts: int = 5
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    window_s: float = 300.0

    def __post_init__(self) -> None:
        if int(self.max_restarts) != self.max_restarts or self.max_restarts < 0:
            raise ConfigError(f"max_restarts={self.max_restarts}: must be an integer >= 0 (0 = never restart)")
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ConfigError(
                f"initial_backoff_s={self.initial_backoff_s}, max_backoff_s={self.max_backoff_s}: "
                "need 0 <= initial_backoff_s <= max_backoff_s"
            )
        if not self.window_s > 0:
            raise ConfigError(f"window_s={self.window_s}: must be positive (seconds)")

    def backoff_s(self, restart: int) -> float:
        """Seconds to wait before restart number ``restart`` (1-based)."""
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(restart - 1, 0))


@dataclass(frozen=True)
class Restart:
    """One death of the server and what followed.

    Attributes:
        returncode: the dead server's exit status (negative: killed by that signal).
        reason: one line read from its log.
        served_s: seconds it had served before it died.
        down_s: seconds from noticing the death to ready again (None: not restarted).
    """

    returncode: int | None
    reason: str
    served_s: float
    down_s: float | None


class Supervisor:
    """Keep ``server`` serving until asked to stop: a started-or-not :class:`LocalTriton`.

    Args:
        server: the server to keep serving (started by :meth:`run` if it is not running).
        policy: restart limits and backoff.
        log: called with one line per event (default: print to stderr).
        poll_s: how often the server's process and its backend stubs are checked, seconds.
        live_every_s: how often the server is asked whether it is live (each answer may take 2 s), seconds.
        live_misses: unanswered liveness questions in a row after which a hung server is killed and restarted.

    Attributes:
        restarts: every death so far, in order.
        stub_watch: the watch on the backend stubs (its ``reloads``: every model reloaded so far).
    """

    def __init__(
        self,
        server: LocalTriton,
        *,
        policy: RestartPolicy | None = None,
        log: Callable[[str], None] | None = None,
        poll_s: float = 0.2,
        live_every_s: float = 5.0,
        live_misses: int = 3,
    ) -> None:
        if not poll_s > 0 or not live_every_s > 0:
            raise ConfigError(f"poll_s={poll_s}, live_every_s={live_every_s}: must be positive (seconds)")
        if int(live_misses) != live_misses or live_misses < 1:
            raise ConfigError(f"live_misses={live_misses}: must be an integer >= 1")
        self.live_every_s = float(live_every_s)
        self.live_misses = int(live_misses)
        self._missed = 0
        self._live_at = 0.0
        self.server = server
        self.policy = policy or RestartPolicy()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.poll_s = float(poll_s)
        self.restarts: list[Restart] = []
        self.stub_watch = StubWatch(server, log=self.log)

    def run(self, stop: threading.Event, *, on_ready: Callable[[LocalTriton], None] | None = None) -> int:
        """Serve until ``stop`` is set; restart the server whenever it dies. The server is stopped on return.

        Args:
            stop: set it (from a signal handler or another thread) to stop serving; a start in
                progress is given up at once (the server is killed: it served nothing yet).
            on_ready: called once, after the first start.

        Returns:
            0 after a requested stop (also one during the first start).

        Raises:
            ServerStartError: the first start failed (names the failing model).
            ServerError: the server died more than ``max_restarts`` times in a row (the
                message names the last exit status and reason).
        """
        server = self.server
        try:
            if not server.is_running():
                server.start(cancel=stop)
            server.keep_ports()  # a restarted server answers where clients already look
            self.stub_watch.reset()
            if on_ready is not None:
                on_ready(server)
            in_a_row = 0
            up_since = time.monotonic()
            while not stop.wait(self.poll_s):
                forced = self._check(stop)
                if forced is None:
                    continue
                served = time.monotonic() - up_since
                if served >= self.policy.window_s:
                    in_a_row = 0
                rc = server.stop()  # kills leftover stubs by PID, removes shm regions and the temporary folder
                reason = forced or death_reason(rc, server.log_text())
                noticed = time.monotonic()
                if in_a_row >= self.policy.max_restarts:
                    self.restarts.append(Restart(rc, reason, served, None))
                    raise ServerError(
                        f"tritonserver exited unexpectedly (rc={rc}) after {in_a_row} restart(s) in a row; "
                        f"not restarting again: {reason}"
                    )
                up = self._restart(stop, rc=rc, reason=reason, served=served, noticed=noticed, number=in_a_row + 1)
                if up is None:
                    break
                up_since, in_a_row = up
                self.stub_watch.reset()
                self._missed, self._live_at = 0, 0.0
            return 0
        except ServerStartCancelled:
            return 0
        finally:
            if self.stub_watch.abandoned is not None:
                self.log(f"stopping: the reload of model {self.stub_watch.abandoned!r} is still running; killing tritonserver")
            server.stop(kill=self.stub_watch.abandoned is not None)  # a loading server holds SIGTERM until the load ends

    def _check(self, stop: threading.Event) -> str | None:
        """None while the server serves (a model whose stub died is reloaded); else why to restart it.

        ``""``: the server died (the reason is read from its log); text: a reload failed, or
        the server hung (it is killed here: a hung server does not act on SIGTERM).
        """
        if not self.server.is_running():
            return ""
        try:
            self.stub_watch.check(cancel=stop)
        except ServerError as exc:
            if not self.server.is_running():
                return ""
            self.log(f"{exc}; restarting tritonserver")
            return f"restarted after a failed model reload: {exc}"
        if time.monotonic() < self._live_at or stop.is_set():
            return None
        self._live_at = time.monotonic() + self.live_every_s
        self._missed = 0 if self.server.is_live(timeout_s=2.0) else self._missed + 1
        if self._missed < self.live_misses or not self.server.is_running():
            return None
        hung = f"alive but not answering liveness {self._missed} times in a row, {self.live_every_s:g} s apart; killed"
        self.server.stop(kill=True)
        return hung

    def _restart(
        self, stop: threading.Event, *, rc: int | None, reason: str, served: float, noticed: float, number: int
    ) -> tuple[float, int] | None:
        """Wait the backoff and start again, retrying failed starts within the budget.

        Returns:
            ``(monotonic time it was ready, restarts in a row so far)``, or None if ``stop`` was set.

        Raises:
            ServerError: no start succeeded within ``max_restarts``.
        """
        limit = self.policy.max_restarts
        while True:
            wait = self.policy.backoff_s(number)
            self.log(
                f"tritonserver died (rc={rc}) after {served:.1f} s: {reason}; "
                f"restart {number} of {limit} in {wait:.1f} s"
            )
            if stop.wait(wait):
                self.restarts.append(Restart(rc, reason, served, None))
                return None
            try:
                self.server.start(cancel=stop)
            except ServerStartCancelled:
                self.restarts.append(Restart(rc, reason, served, None))
                return None
            except ServerStartError as exc:
                if number >= limit:
                    self.restarts.append(Restart(rc, reason, served, None))
                    raise ServerError(f"tritonserver could not be restarted after {number} attempt(s): {exc}") from None
                number += 1
                reason, served = f"restart failed: {exc}", 0.0
                continue
            down = time.monotonic() - noticed
            self.restarts.append(Restart(rc, reason, served, down))
            self.log(f"tritonserver restarted (restart {number} of {limit}): ready again {down:.1f} s after it died")
            return time.monotonic(), number


def serve_forever(
    repository: str | Path,
    *,
    http_port: int | None = 8000,
    grpc_port: int | None = 8001,
    metrics_port: int | None = 8002,
    startup_timeout_s: float = 120.0,
    exit_timeout_s: int = 5,
    log_path: str | Path | None = None,
    admin_key: str | None = None,
    grpc_tls: GrpcTls | None = None,
    http: bool = True,
    restart: RestartPolicy | None = None,
    out: TextIO | None = None,
    onnxruntime_threads: int | None = None,
) -> int:
    """Serve ``repository`` on 127.0.0.1 until Ctrl-C, SIGTERM or SIGHUP, restarting a dead server (``ser serve``).

    Removes the ``/dev/shm`` regions of local servers whose owner was killed
    (:func:`deploy.cleanup.remove_orphaned_regions`, one line if any), then prints one line when
    ready (addresses and models), one per death and restart, and one when stopped, on ``out`` (default stderr); the server log goes to ``log_path`` if given
    (appended to across restarts). The production choices of :mod:`deploy.flags` apply;
    ``admin_key`` guards the repository, shared-memory, trace and logging APIs,
    ``grpc_tls`` serves gRPC over TLS, ``http=False`` serves gRPC and metrics only.
    ``onnxruntime_threads`` sizes native models' shared ONNX Runtime pool (None: the node's usable CPUs).

    Returns:
        0 after a requested stop.

    Raises:
        ServerStartError: the server failed to start (names the failing model).
        ServerError: the server kept dying (more than ``restart.max_restarts`` times in a row).
    """
    out = out or sys.stderr
    stop = threading.Event()

    def _on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:  # also while the server starts: a start is given up at once
            previous[sig] = signal.signal(sig, _on_signal)
    server = LocalTriton(
        repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        startup_timeout_s=startup_timeout_s,
        exit_timeout_s=exit_timeout_s,
        log_path=log_path,
        admin_key=admin_key,
        grpc_tls=grpc_tls,
        http=http,
        onnxruntime_threads=onnxruntime_threads,
    )

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    orphaned = remove_orphaned_regions()
    if orphaned:
        say(f"removed the /dev/shm regions of {len(orphaned)} server(s) whose owner was killed: {', '.join(orphaned)}")

    def ready(s: LocalTriton) -> None:
        models = ", ".join(f"{name} ({state})" for name, state in sorted(s.models().items()))
        http_part = f"HTTP {s.http_url}" if s.http else "HTTP off"
        say(
            f"tritonserver ready in {s.startup_s:.1f} s: gRPC {s.grpc_url}, {http_part}, "
            f"metrics http://{s.metrics_url}/metrics; models: {models}; Ctrl-C to stop"
        )

    try:
        return Supervisor(server, policy=restart, log=say).run(stop, on_ready=ready)
    finally:
        if stop.is_set():
            say(f"tritonserver stopped (rc={server.returncode})")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
