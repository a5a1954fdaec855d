"""Several servers behind one client: the endpoint list, DNS names, and which endpoint takes the next call.

A client's ``url`` is one of:

* one ``host:port`` (``grpc://`` and ``http://`` accepted): every call goes there;
* a comma-separated list, ``10.0.0.5:8001,10.0.0.6:8001``: the calls go round the list;
* a DNS name, ``dns:///name:port``: the calls go round the addresses the name resolves to (a
  Kubernetes headless Service resolves to one address per ready pod), and the name is resolved
  again every ``resolve_every_s`` so that replicas added later take calls without a restart.

:class:`EndpointPool` decides which endpoint takes the next call: round robin over the
endpoints that are up. An endpoint whose call failed with a transport failure (refused,
reset, ``UNAVAILABLE``) is set aside for ``down_for_s``; then one caller probes it (is the
model ready there?) and, if it answers, it takes calls again. When every endpoint is set
aside the calls still go out (to the one whose time is up first), so a client of servers that
all restart at once waits on its retry policy as a one-server client does.

The pool only decides; the clients (:mod:`client.sync_client`, :mod:`client.async_client`)
hold one transport per endpoint and report back with :meth:`EndpointPool.failed` and
:meth:`EndpointPool.recovered`. It is thread-safe.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .client_options import normalize_url
from .errors import ConfigError, ServerUnavailableError

#: The prefix of a DNS name whose addresses are the endpoints (gRPC's name syntax).
DNS_PREFIX = "dns:///"


@dataclass(frozen=True)
class BalanceOptions:
    """How a client with several endpoints balances and fails over.

    Attributes:
        down_for_s: seconds an endpoint whose call failed (refused, reset, ``UNAVAILABLE``) is set
            aside before one caller probes it with a readiness check.
        resolve_every_s: seconds between two resolutions of a ``dns:///`` name (new replicas
            take calls at most this long after they are in DNS).
        resolver: how a ``dns:///`` name's ``host:port`` becomes endpoints (``["10.0.0.5:8001", ...]``);
            None: the system's resolver (:func:`resolve`). Another service registry plugs in here.
    """

    down_for_s: float = 1.0
    resolve_every_s: float = 10.0
    resolver: Callable[[str], list[str]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("down_for_s", "resolve_every_s"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ConfigError(f"{name}={value}: must be a positive, finite number of seconds")


def parse_endpoints(url: str, *, protocol: str) -> tuple[tuple[str, ...], str | None]:
    """``(addresses, dns_name)`` of a client ``url``: a fixed list, or ``((), "name:port")`` for ``dns:///name:port``.

    Raises:
        ConfigError: an empty list item, a list item without a port, a DNS name without a port.
    """
    text = url.strip()
    if text.startswith(DNS_PREFIX):
        target = text[len(DNS_PREFIX):]
        if "," in target:
            raise ConfigError(f"url={url!r}: a dns:/// URL names one DNS name (give a list of host:port instead)")
        return (), normalize_url(target, protocol=protocol)
    if text.startswith("dns:"):
        raise ConfigError(f"url={url!r}: a DNS name is written dns:///NAME:PORT (no authority)")
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise ConfigError(f"url={url!r}: an empty item in the endpoint list")
    return tuple(dict.fromkeys(normalize_url(item, protocol=protocol) for item in items)), None


def resolve(target: str) -> list[str]:
    """The ``ip:port`` endpoints (IPv6: ``[ip]:port``) that ``host:port`` resolves to, sorted; [] if none."""
    host, _, port = target.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except OSError:
        return []
    out = {f"[{info[4][0]}]:{port}" if info[0] == socket.AF_INET6 else f"{info[4][0]}:{port}" for info in infos}
    return sorted(out)


@dataclass
class _State:
    down_until: float | None = None  # None: up
    probing: bool = False


@dataclass
class EndpointPool:
    """Which endpoint takes the next call (see the module's docstring).

    Args:
        url: one ``host:port``, a comma-separated list, or ``dns:///name:port``.
        protocol: ``grpc`` or ``http`` (the default ports of the error messages).
        options: :class:`BalanceOptions`.
        resolver: ``host:port`` -> endpoints: :func:`resolve` unless ``options.resolver`` or this names another.
        clock: seconds, monotonic.

    Attributes:
        spec: the ``url`` as the errors name it (the list joined by commas, or the ``dns:///`` URL).
        dns_name: ``name:port`` of a ``dns:///`` URL, else None.
    """

    url: str
    protocol: str = "grpc"
    options: BalanceOptions = field(default_factory=BalanceOptions)
    resolver: Callable[[str], list[str]] = resolve
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.options.resolver is not None:
            self.resolver = self.options.resolver
        fixed, self.dns_name = parse_endpoints(self.url, protocol=self.protocol)
        self.spec = DNS_PREFIX + self.dns_name if self.dns_name else ",".join(fixed)
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {a: _State() for a in fixed}
        self._order: list[str] = list(fixed)
        self._next = 0
        self._resolved_at: float | None = None
        self._removed: list[str] = []

    @property
    def balanced(self) -> bool:
        """Whether calls may go to more than one endpoint (a list, or a DNS name)."""
        return self.dns_name is not None or len(self._order) > 1

    def addresses(self) -> list[str]:
        """The endpoints now known, in round-robin order."""
        with self._lock:
            return list(self._order)

    def up(self) -> list[str]:
        """The endpoints not set aside."""
        with self._lock:
            return [a for a in self._order if self._states[a].down_until is None]

    def refresh(self, *, force: bool = False) -> None:
        """Resolve the DNS name again if ``resolve_every_s`` has passed (``force``: now); a list never changes.

        A failed or empty resolution keeps the endpoints known so far (a DNS hiccup is not an outage).

        Raises:
            ServerUnavailableError: the name has never resolved to any address.
        """
        if self.dns_name is None:
            return
        now = self.clock()
        with self._lock:
            if not force and self._resolved_at is not None and now - self._resolved_at < self.options.resolve_every_s:
                return
            self._resolved_at = now
        found = self.resolver(self.dns_name)
        with self._lock:
            if found:
                gone = [a for a in self._order if a not in found]
                self._removed.extend(gone)
                self._states = {a: self._states.get(a, _State()) for a in found}
                self._order = list(found)
            if not self._order:
                self._resolved_at = None  # try again at the next call
                raise ServerUnavailableError(f"{self.spec}: the name resolves to no address")

    def take_removed(self) -> list[str]:
        """Endpoints dropped by a resolution since the last call (their transports can be closed)."""
        with self._lock:
            out, self._removed = self._removed, []
        return out

    def pick(self) -> tuple[str, bool]:
        """``(endpoint, probe)``: the endpoint for the next call; with ``probe`` the caller checks readiness first.

        A set-aside endpoint whose ``down_for_s`` is over goes to one caller as a probe; otherwise
        the next endpoint that is up, in turn; with none up, the one set aside the longest ago.
        """
        self.refresh()
        now = self.clock()
        with self._lock:
            if not self._order:
                raise ServerUnavailableError(f"{self.spec}: no endpoint known")
            if len(self._order) == 1:
                return self._order[0], False
            for address in self._order:
                state = self._states[address]
                if state.down_until is not None and not state.probing and state.down_until <= now:
                    state.probing = True
                    return address, True
            n = len(self._order)
            for step in range(n):
                address = self._order[(self._next + step) % n]
                if self._states[address].down_until is None:
                    self._next = (self._next + step + 1) % n
                    return address, False
            return min(self._order, key=lambda a: self._states[a].down_until or 0.0), False

    def failed(self, address: str) -> None:
        """``address`` failed a call (transport failure) or a probe: set it aside for ``down_for_s``."""
        with self._lock:
            state = self._states.get(address)
            if state is not None:
                state.down_until = self.clock() + self.options.down_for_s
                state.probing = False

    def recovered(self, address: str) -> None:
        """``address`` answered: it takes calls again."""
        with self._lock:
            state = self._states.get(address)
            if state is not None:
                state.down_until = None
                state.probing = False

    def is_up(self, address: str) -> bool:
        """Whether ``address`` is known and not set aside."""
        with self._lock:
            state = self._states.get(address)
            return state is not None and state.down_until is None


__all__ = ["DNS_PREFIX", "BalanceOptions", "EndpointPool", "parse_endpoints", "resolve"]
