"""Notice a python-backend stub that died under a live server, and reload its model.

Each instance of a python-backend model runs in a stub process. When one is killed (an OOM
kill, a segfault in a native library) tritonserver 2.51 stays live and ready and the model
stays READY, but every request to it fails with ``Stub process '<instance>' is not healthy``;
nothing restarts the stub. :class:`StubWatch` remembers the stubs of a started
:class:`~deploy.local_triton.LocalTriton`, notices one that is gone and unloads and loads its model
through the repository API (new instances, new stubs; ``model_control="explicit"``, the
default, allows it; a load alone of an unchanged model is a no-op), logging one line when it notices and one when the model answers again.
:class:`deploy.supervisor.Supervisor` calls :meth:`StubWatch.check` every poll and restarts
the whole server when a reload fails.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from client.errors import ServerError
from deploy.cleanup import Stub, pid_alive, stubs_of
from deploy.local_triton import LocalTriton


@dataclass(frozen=True)
class StubReload:
    """One model reloaded because a stub of it died.

    Attributes:
        model: the model reloaded.
        stub: the stub found dead (PID and instance name).
        reload_s: seconds from noticing the death to the model loaded again.
    """

    model: str
    stub: Stub
    reload_s: float


class StubWatch:
    """Watch ``server``'s backend stubs; reload a model whose stub died.

    Args:
        server: a started server.
        log: called with one line per death and per reload.
        rescan_s: how often the list of stubs is read again (models an operator loaded), seconds.

    Attributes:
        reloads: every reload so far, in order.
        abandoned: the model whose reload was left running when ``cancel`` was set (None: none);
            tritonserver holds SIGTERM until that load ends, so its owner stops it with SIGKILL.
    """

    def __init__(self, server: LocalTriton, *, log: Callable[[str], None], rescan_s: float = 5.0) -> None:
        self.server = server
        self.log = log
        self.rescan_s = float(rescan_s)
        self.reloads: list[StubReload] = []
        self.abandoned: str | None = None
        self._known: dict[int, Stub] = {}
        self._rescan_at = 0.0

    def reset(self) -> None:
        """Remember the stubs running now (after a start, a restart or a reload)."""
        self._known = {stub.pid: stub for stub in self._live()}
        self._rescan_at = time.monotonic() + self.rescan_s

    def _live(self) -> list[Stub]:
        return [stub for stub in stubs_of(self.server.shm_prefix) if pid_alive(stub.pid)]

    def check(self, *, cancel: threading.Event | None = None) -> list[StubReload]:
        """Reload the model of every remembered stub that is gone and was not replaced; returns those reloads.

        A stub replaced by one of the same instance name (a reload by an operator) and a model
        that is no longer READY (unloaded on purpose) are not crashes. Setting ``cancel`` stops
        the wait for a reload in progress (a model can take minutes to load; a stop must not).

        Raises:
            ServerError: the server could not be asked, or refused the reload (the caller restarts it).
        """
        dead = [stub for pid, stub in self._known.items() if not pid_alive(pid)]
        if not dead:
            if time.monotonic() >= self._rescan_at:
                self.reset()
            return []
        noticed = time.monotonic()
        live = {stub.instance for stub in self._live()}
        crashed: dict[str, Stub] = {}
        for stub in dead:
            if stub.instance not in live:
                crashed.setdefault(stub.model, stub)
        try:
            states = self.server.models() if crashed else {}
        except Exception as exc:  # noqa: BLE001 - urllib, socket or tritonclient errors: one message
            raise ServerError(f"repository index unreadable after a backend stub died: {exc}") from None
        done = []
        for model, stub in sorted(crashed.items()):
            if states.get(model) != "READY":
                continue
            self.log(
                f"backend stub of model {model!r} died (instance {stub.instance}, pid {stub.pid}): "
                f"every request to {model!r} fails until it is reloaded; reloading it"
            )
            if not self._reload(model, cancel):
                return done
            reload = StubReload(model, stub, time.monotonic() - noticed)
            self.reloads.append(reload)
            done.append(reload)
            self.log(f"model {model!r} reloaded: answering again {reload.reload_s:.1f} s after its stub was found dead")
        self.reset()
        return done

    def _reload(self, model: str, cancel: threading.Event | None) -> bool:
        """Reload ``model`` in a helper thread; False if ``cancel`` was set first (the reload is left to the server).

        Raises:
            ServerError: the reload failed.
        """
        failure: list[ServerError] = []

        def reload() -> None:
            try:
                self.server.reload_model(model)
            except ServerError as exc:
                failure.append(exc)

        worker = threading.Thread(target=reload, name=f"reload-{model}", daemon=True)
        worker.start()
        while worker.is_alive():
            if cancel is not None and cancel.is_set():
                self.abandoned = model
                return False
            worker.join(0.1)
        if failure:
            raise failure[0]
        return True
