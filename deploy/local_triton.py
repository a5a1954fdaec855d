"""Run the real Triton Inference Server on this host, without Docker or a GPU.

The ``nvidia-pytriton`` wheel ships a real ``tritonserver`` (2.51) with the python backend; the
ONNX Runtime backend of native repositories is built by ``make venv`` (:mod:`deploy.native_backend`).
See docs/serving-and-repositories.md, "The local server". :class:`LocalTriton`

* builds a temporary backend directory: ``python/`` of links to the python backend and the stub of
  the running Python version, and ``onnxruntime`` when the repository has native models, whose one
  shared ONNX Runtime pool is as wide as the usable CPUs (:mod:`deploy.node`);
* puts this interpreter's ``bin`` first on ``PATH`` (the stub's embedded
  interpreter finds the virtual environment from ``python3``) and the
  interpreter's ``LIBDIR`` on ``LD_LIBRARY_PATH`` (the stub links libpython);
* binds 127.0.0.1 only, on free ports unless told otherwise, with a unique
  python-backend shared-memory prefix so it removes exactly its own
  ``/dev/shm`` regions;
* refuses a given port another process listens on (:mod:`deploy.ports`), starts the server in its
  own process group, tied to this process (:mod:`deploy.spawn`: SIGKILLed if this one dies), waits
  until *its* process listens on its ports and answers ready (``/v2/health/ready``, or gRPC's
  ``ServerReady`` with ``http=False``; no proxy) and fails fast (:class:`~client.errors.ServerStartError` naming the
  port, or the model that failed to load) when the process exits; ``start(cancel=event)`` gives up at once;
* stops with SIGTERM, then SIGKILL of the process group, kills leftover backend
  stubs by PID and removes its shm regions and temporary folder.

The pieces it uses live beside it: :mod:`deploy.triton_binary` (the wheel's files, the backend
directory, the environment), :mod:`deploy.probes` (readiness, the model index), :mod:`deploy.server_log`
(why a server failed) and :mod:`deploy.cleanup` (leftover stubs and shm regions).

Example:
    >>> with LocalTriton("model_repository/portable") as server:  # doctest: +SKIP
    ...     print(server.grpc_url)
    127.0.0.1:40123
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Sequence

from client.errors import ConfigError, ServerError, ServerStartError
from deploy.cleanup import kill_stubs, pid_alive, pids_of_stubs, remove_shm_regions, shm_regions
from deploy.flags import SUMMARY_LATENCIES, GrpcTls, onnxruntime_thread_args, restricted_args
from deploy.native_backend.locate import require_onnxruntime_backend
from deploy.node import usable_cpus
from deploy.ports import listening_ports, port_taken
from deploy.probes import (
    grpc_live,
    grpc_models,
    grpc_ready,
    http_get_status,
    http_models,
    reload_model,
)
from deploy.server_log import summarize_failure
from deploy.spawn import spawn_tied
from deploy.triton_binary import (
    find_installation,
    make_backend_directory,
    native_models,
    server_env,
)

MODEL_CONTROL_MODES = ("none", "explicit", "poll")


class ServerStartCancelled(ServerStartError):
    """:meth:`LocalTriton.start` was cancelled (its ``cancel`` event was set): the server was killed, nothing is left."""


def free_ports(count: int = 3) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalTriton:
    """The real tritonserver serving a model repository on 127.0.0.1: a context manager.

    Args:
        repository: model repository root (``<repo>/<model>/config.pbtxt``...).
        http_port: HTTP port; None picks a free one.
        grpc_port: gRPC port; None picks a free one.
        metrics_port: Prometheus metrics port; None picks a free one.
        startup_timeout_s: seconds to wait for ``/v2/health/ready``.
        exit_timeout_s: ``--exit-timeout-secs``: how long the server waits for
            in-flight requests on SIGTERM (s); :meth:`stop` SIGKILLs after this plus a grace.
        log_path: where the server log is written; None keeps it in the temporary
            folder (read it with :meth:`log_text`; the last text survives :meth:`stop`).
        model_control: ``explicit`` (default, as on GPU nodes: ``load_models`` load at
            start, reloadable later through the repository API), ``none`` or ``poll``.
        load_models: with ``explicit``, the models to load at start (default: all).
        admin_key: guard the repository, shared-memory, trace and logging APIs with this
            key (:func:`deploy.flags.restricted_args`); None leaves them open.
        grpc_tls: serve gRPC over TLS (:class:`deploy.flags.GrpcTls`); None: plaintext.
        http: serve the HTTP endpoint; False turns it off (``--allow-http=false``: gRPC and
            metrics only), which closes the JSON path that one request can abort 2.51 through.
            Not with ``grpc_tls`` (readiness is then checked over plaintext gRPC).
        onnxruntime_threads: width of the one ONNX Runtime thread pool every native model shares
            (:func:`deploy.flags.onnxruntime_thread_args`); None: the CPUs this process may use
            (:func:`deploy.node.usable_cpus`). Only used when the repository has native models.
        extra_args: further tritonserver flags, appended last (they win).

    Attributes:
        repository: the absolute repository path.
        http_port, grpc_port, metrics_port: the ports in use once started.
        startup_s: seconds from launch to ready (after :meth:`start`).
        returncode: the server's exit status (after :meth:`stop`).
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        startup_timeout_s: float = 60.0,
        exit_timeout_s: int = 5,
        log_path: str | Path | None = None,
        model_control: str = "explicit",
        load_models: Sequence[str] = (),
        admin_key: str | None = None,
        grpc_tls: GrpcTls | None = None,
        http: bool = True,
        onnxruntime_threads: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repository = Path(repository).expanduser().resolve()
        if not self.repository.is_dir():
            raise ServerStartError(f"{repository}: model repository is not a directory")
        if not any((p / "config.pbtxt").is_file() for p in self.repository.iterdir() if p.is_dir()):
            raise ServerStartError(f"{repository}: no <model>/config.pbtxt inside: not a Triton model repository")
        if model_control not in MODEL_CONTROL_MODES:
            raise ConfigError(f"model_control={model_control!r}: expected one of {MODEL_CONTROL_MODES}")
        if load_models and model_control != "explicit":
            raise ConfigError(f"load_models={list(load_models)!r} needs model_control='explicit', not {model_control!r}")
        if startup_timeout_s <= 0 or exit_timeout_s < 0:
            raise ConfigError(f"startup_timeout_s={startup_timeout_s}, exit_timeout_s={exit_timeout_s}: need > 0 and >= 0")
        fixed = [p for p in (http_port, grpc_port, metrics_port) if p is not None]
        if len(set(fixed)) != len(fixed) or any(not 0 < p < 65536 for p in fixed):
            raise ConfigError(
                f"http_port={http_port}, grpc_port={grpc_port}, metrics_port={metrics_port}: "
                "ports must be distinct and in 1..65535 (None picks a free one)"
            )
        self._fixed_ports = (http_port, grpc_port, metrics_port)
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.startup_timeout_s = float(startup_timeout_s)
        self.exit_timeout_s = int(exit_timeout_s)
        self.model_control = model_control
        self.load_models = tuple(load_models)
        self.extra_args = tuple(extra_args)
        self._restricted = restricted_args(admin_key) if admin_key is not None else []
        self._admin_key = admin_key
        if grpc_tls is not None and not isinstance(grpc_tls, GrpcTls):
            raise ConfigError(f"grpc_tls={grpc_tls!r}: expected a deploy.flags.GrpcTls")
        self.grpc_tls = grpc_tls
        if not http and grpc_tls is not None:
            raise ConfigError(
                "http=False with grpc_tls: the launcher checks readiness over HTTP or plaintext gRPC; "
                "keep HTTP on (it listens on 127.0.0.1 only) or serve gRPC without TLS"
            )
        self.http = bool(http)
        self.native_models = native_models(self.repository)
        self._onnxruntime_backend = require_onnxruntime_backend(self.repository, self.native_models) if self.native_models else None
        self.onnxruntime_threads = onnxruntime_threads if onnxruntime_threads is not None else usable_cpus()
        self._thread_args = onnxruntime_thread_args(self.onnxruntime_threads) if self.native_models else []
        self._starts = 0
        self._user_log_path = Path(log_path).expanduser().resolve() if log_path else None
        self.shm_prefix = f"ser_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._log_path: Path | None = None
        self._log_handle = None
        self._last_log = ""
        self._stubs_seen: set[int] = set()
        self._lock = threading.Lock()
        self.startup_s: float | None = None
        self.returncode: int | None = None

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:<grpc_port>`` for tritonclient.grpc."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``127.0.0.1:<http_port>`` for tritonclient.http."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """``127.0.0.1:<metrics_port>`` (Prometheus text at ``/metrics``)."""
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def pid(self) -> int | None:
        """The server's PID while started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """The server log file (None before start; gone after stop unless ``log_path`` was given)."""
        return self._log_path

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """The server's log so far (stdout and stderr, including backend stubs)."""
        if self._log_path is not None and self._log_path.exists():
            try:
                return self._log_path.read_text(errors="replace")
            except OSError:
                pass
        return self._last_log

    def command(self) -> list[str]:
        """The tritonserver command line (ports must be set: call after they are chosen)."""
        inst = find_installation()
        assert self._tmp is not None
        args = [
            str(inst.server),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._tmp / 'backends'}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--cache-directory={inst.cache_dir}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--allow-http={'true' if self.http else 'false'}",
            "--allow-grpc=true",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--model-control-mode={self.model_control}",
            "--log-verbose=0",
            "--log-info=true",
            "--log-warning=true",
            "--log-error=true",
            SUMMARY_LATENCIES,
            *self._thread_args,
            *self._restricted,
            *(self.grpc_tls.args() if self.grpc_tls is not None else []),
        ]
        if self.model_control == "explicit":
            args += [f"--load-model={m}" for m in (self.load_models or ("*",))]
        return args + list(self.extra_args)

    def keep_ports(self) -> None:
        """Reuse the ports in use now on every later :meth:`start` (a restarted server keeps its address)."""
        if None in (self.http_port, self.grpc_port, self.metrics_port):
            raise ServerError(f"server for {self.repository} has no ports yet: start it first")
        self._fixed_ports = (self.http_port, self.grpc_port, self.metrics_port)

    def start(self, *, cancel: threading.Event | None = None) -> "LocalTriton":
        """Launch the server and wait until it is ready. Returns ``self``.

        A port given that another process listens on is an error before launch; ports chosen
        here are retried once with new ones if taken in between. Ready means our process is
        alive, listens on each of its ports itself (never another server there) and answers ready.

        Args:
            cancel: set it (from a signal handler or another thread) to give up the start:
                the server is SIGKILLed at once, with its stubs, within about 0.1 s.

        Raises:
            ServerStartCancelled: ``cancel`` was set before the server was ready.
            ServerStartError: a given port is taken, the process exited, or it was not ready
                within ``startup_timeout_s``; the message names the port, or the failing model and reason.
        """
        if self._proc is not None:
            raise ServerError(f"server for {self.repository} already started (pid {self._proc.pid})")
        self._check_fixed_ports()
        attempts = 1 if all(p is not None for p in self._fixed_ports) else 2
        for attempt in range(attempts):
            try:
                return self._start_once(cancel)
            except ServerStartError as exc:
                if attempt + 1 < attempts and "already in use" in str(exc):
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_fixed_ports(self) -> None:
        """Refuse a given port that another process holds: the server would die on it, and a probe would find the other."""
        for service, port in zip(("HTTP", "gRPC", "metrics"), self._fixed_ports, strict=True):
            if port is None or (service == "HTTP" and not self.http):
                continue
            if port_taken(port):
                raise ServerStartError(
                    f"127.0.0.1:{port} already in use (the {service} port): another server or process listens there; "
                    "nothing was started"
                )

    def _start_once(self, cancel: threading.Event | None) -> "LocalTriton":
        inst = find_installation()
        picked = iter(free_ports(3))
        self.http_port, self.grpc_port, self.metrics_port = (
            p if p is not None else next(picked) for p in self._fixed_ports
        )
        self._tmp = Path(tempfile.mkdtemp(prefix="ser-triton-"))
        try:
            make_backend_directory(inst, self._tmp, onnxruntime=self._onnxruntime_backend)
            self._log_path = self._user_log_path or (self._tmp / "tritonserver.log")
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            # A restart appends to a log file of the caller's: the crash that caused it stays readable.
            mode = "ab" if self._user_log_path is not None and self._starts else "wb"
            self._starts += 1
            self._log_handle = open(self._log_path, mode)  # noqa: SIM115 - closed by stop()
            t0 = time.perf_counter()
            try:
                self._proc = spawn_tied(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=self._log_handle,
                    stderr=subprocess.STDOUT,
                    env=server_env(),
                    cwd=self._tmp,
                    start_new_session=True,  # its own process group: Ctrl-C in our terminal does not reach it
                )
            except OSError as exc:
                raise ServerStartError(f"cannot execute {inst.server}: {exc}") from None
            atexit.register(self.stop)
            self._wait_ready(t0, cancel)
        except (ServerStartCancelled, KeyboardInterrupt):
            self.stop(kill=True)  # nothing served yet: a model still loading would hold SIGTERM for its whole load
            raise
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0
        return self

    def is_ready(self, *, timeout_s: float = 1.0) -> bool:
        """Whether the server answers ready: ``/v2/health/ready`` is 200, or gRPC ``ServerReady`` without HTTP."""
        if self.http:
            return http_get_status(f"http://{self.http_url}/v2/health/ready", timeout_s=timeout_s) == 200
        return grpc_ready(self.grpc_url, timeout_s=timeout_s)

    def is_live(self, *, timeout_s: float = 2.0) -> bool:
        """Whether the server answers live: ``/v2/health/live`` is 200, or gRPC ``ServerLive`` without HTTP."""
        if self.http:
            return http_get_status(f"http://{self.http_url}/v2/health/live", timeout_s=timeout_s) == 200
        return grpc_live(self.grpc_url, timeout_s=timeout_s)

    def _our_ports(self) -> set[int]:
        ports = {self.grpc_port, self.metrics_port} | ({self.http_port} if self.http else set())
        return {p for p in ports if p is not None}

    def _wait_ready(self, t0: float, cancel: threading.Event | None) -> None:
        assert self._proc is not None
        deadline = t0 + self.startup_timeout_s
        ours = self._our_ports()
        while True:
            if cancel is not None and cancel.is_set():
                raise ServerStartCancelled(
                    f"start of tritonserver on {self.repository} cancelled after {time.perf_counter() - t0:.1f} s"
                )
            self._remember_stubs()
            rc = self._proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"tritonserver exited with rc={rc} while starting on {self.repository}: "
                    f"{summarize_failure(self.log_text())}"
                )
            # Only our own listener counts: a 200 from another server on the port is not our server ready.
            if ours <= listening_ports(self._proc.pid) and self.is_ready(timeout_s=1.0):
                self._remember_stubs()
                return
            if time.perf_counter() > deadline:
                raise ServerStartError(
                    f"tritonserver on {self.repository} not ready after {self.startup_timeout_s:g} s: "
                    f"{summarize_failure(self.log_text())}"
                )
            if cancel is not None:
                cancel.wait(0.1)
            else:
                time.sleep(0.1)

    def _remember_stubs(self) -> None:
        self._stubs_seen.update(pids_of_stubs(self.shm_prefix))

    def stop(self, *, kill: bool = False) -> int | None:
        """Stop the server and clean up everything it left. Safe to call twice.

        SIGTERM, wait ``exit_timeout_s`` + 10 s, then SIGKILL of the process
        group (``kill=True``: SIGKILL at once); leftover backend stubs of this server
        are killed by PID; its ``/dev/shm`` regions and temporary folder are removed.

        Returns:
            The server's exit status (None if it was never started).
        """
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                self._cleanup_files()
                return self.returncode
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            self._remember_stubs()
            pgid = proc.pid  # start_new_session: the leader's pid is the group id
            if proc.poll() is None and kill:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait(timeout=10)
            elif proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.exit_timeout_s + 10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pgid, signal.SIGKILL)
                    proc.wait(timeout=10)
            self.returncode = proc.returncode
            # Anything left in its process group (stubs that ignored SIGTERM), then stubs by PID.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            kill_stubs(self._stubs_seen | set(pids_of_stubs(self.shm_prefix)), wait_s=5.0)
            self._stubs_seen.clear()
            self._cleanup_files()
            return self.returncode

    def _cleanup_files(self) -> None:
        remove_shm_regions(self.shm_prefix)
        if self._log_handle is not None:
            with contextlib.suppress(OSError):
                self._log_handle.close()
            self._log_handle = None
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._last_log = self._log_path.read_text(errors="replace")
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            if self._user_log_path is None:
                self._log_path = None

    def shm_regions(self) -> list[Path]:
        """This server's python-backend shared-memory regions under /dev/shm."""
        return shm_regions(self.shm_prefix)

    def stub_pids(self) -> list[int]:
        """PIDs of this server's live python-backend stubs."""
        return [p for p in pids_of_stubs(self.shm_prefix) if pid_alive(p)]

    def reload_model(self, model: str, *, timeout_s: float = 120.0) -> None:
        """Unload ``model`` and load it again through the repository API: new instances, new backend stubs.

        Raises:
            ServerError: the server refused or did not answer (the message says why).
        """
        reload_model(self.http_url if self.http else None, self.grpc_url, model, admin_key=self._admin_key, timeout_s=timeout_s)

    def models(self) -> dict[str, str]:
        """``{model name: state}`` from the repository index (``READY``, ``UNAVAILABLE``, ...)."""
        if not self.http:
            return grpc_models(self.grpc_url, admin_key=self._admin_key)
        return http_models(self.http_url, admin_key=self._admin_key)

    def __enter__(self) -> "LocalTriton":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"LocalTriton({str(self.repository)!r}, grpc={self.grpc_url}, http={self.http_url}, {state})"
