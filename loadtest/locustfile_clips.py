r"""Whole clips through Triton, two ways: the client decodes (windows), or the server does (bytes).

Each Locust request is one clip, timed from the encoded bytes to the label:

* ``ClientSideClipUser``: :meth:`SerClient.classify` on the window model (``--model ser_int8``):
  decode, resample and window in this process, send the windows, aggregate;
* ``ServerSideClipUser``: ``SerClient(server_side=True)`` on the audio model (``--model ser``):
  send the encoded bytes, the server decodes and windows them and sends the windows to its
  window model through BLS.

Both cycle through the same clips (the options of :mod:`loadtest.users`: ``--audio-dir``,
``--manifest``, or generated speech). Name the class to run::

    locust -f loadtest/locustfile_clips.py --headless -u 16 -r 16 -t 30s --host 127.0.0.1:8001 \
        --model ser ServerSideClipUser

``ser loadtest --compare-server-side`` runs the two side by side against one server.
"""

from __future__ import annotations

import threading
import time

from locust import User, constant, events, task
from locust.exception import StopUser

from client.errors import ConfigError, ContractError, SerError
from client.triton_client import RetryPolicy, SerClient, normalize_url
from loadtest.clip_pool import ClipPool, build_clip_pool
from loadtest.payload import AudioSourceConfig
from loadtest.users import install_listeners, source_from

install_listeners(events)


_pools: dict[AudioSourceConfig, ClipPool] = {}
_pools_lock = threading.Lock()


_source = source_from


def _pool(source: AudioSourceConfig) -> ClipPool:
    with _pools_lock:
        if source not in _pools:
            _pools[source] = build_clip_pool(source)
        return _pools[source]


@events.init.add_listener
def _build_pool(environment, **_kwargs) -> None:
    """Encode the clips before any user starts (synthesis in a user would stall every greenlet and the clock)."""
    if environment.parsed_options is not None:
        try:
            _pool(_source(environment.parsed_options))
        except SerError:
            pass  # each user reports it at its start, as a failed "setup" request


class ClipUser(User):
    """Abstract: classify the next whole clip with the bundle's client, back to back.

    Attributes:
        server_side: send bytes to the audio model (True) or windows to the window model (False).
    """

    abstract = True
    wait_time = constant(0)
    server_side = False
    _ids = 0

    def __init__(self, environment) -> None:
        super().__init__(environment)
        opts = environment.parsed_options
        self.model = getattr(opts, "model", None)
        self.protocol = getattr(opts, "protocol", "grpc")
        self.timeout_s = float(getattr(opts, "client_timeout_s", 30.0))
        self.source = _source(opts)
        if not self.host:
            raise ConfigError("no --host: give the Triton server's HOST:PORT (gRPC or HTTP port to match --protocol)")
        self.url = normalize_url(self.host, protocol=self.protocol)
        ClipUser._ids += 1
        self._next = ClipUser._ids * 3
        self.client: SerClient | None = None
        self.pool: ClipPool | None = None
        self.request_name = f"{self.model or 'default'} {'server' if self.server_side else 'client'}-side clip"

    def _fire(self, t0: float, length: int, exc: BaseException | None, name: str | None = None) -> None:
        self.environment.events.request.fire(
            request_type=self.protocol, name=name or self.request_name, response_time=(time.perf_counter() - t0) * 1000.0,
            response_length=length, response=None, context={"model": self.model}, exception=exc, url=self.url,
        )

    def on_start(self) -> None:
        """Build the clip pool (once per process) and open this user's client (no retries: failures count)."""
        t0 = time.perf_counter()
        try:
            self.pool = _pool(self.source)
            self.client = SerClient(self.url, model=self.model, protocol=self.protocol, timeout_s=self.timeout_s,
                                    retry=RetryPolicy.none(), server_side=self.server_side).open()
        except SerError as exc:  # a failed "setup" request; the first task stops the user (no traceback per user)
            self._fire(t0, 0, exc, name="setup")

    def on_stop(self) -> None:
        """Close the connection."""
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def classify_next(self) -> None:
        """Classify the next clip; one Locust request from the encoded bytes to the label."""
        if self.client is None or self.pool is None:
            raise StopUser()
        name, data = self.pool.clips[self._next % len(self.pool)]
        self._next += 1
        t0 = time.perf_counter()
        error = None
        try:
            prediction = self.client.classify(data, name=name)
            if not prediction.label:
                raise ContractError(f"{name}: answer without a label")
        except Exception as exc:  # noqa: BLE001 - every failure is reported, typed where it can be
            error = exc
        self._fire(t0, len(data), error)


class ClientSideClipUser(ClipUser):
    """The client decodes and windows each clip and sends the windows (``--model``: a window model)."""

    @task
    def classify_clip_client_side(self) -> None:
        """Decode here, send windows, aggregate here."""
        self.classify_next()


class ServerSideClipUser(ClipUser):
    """The client sends each clip's encoded bytes (``--model``: the audio model, e.g. ``ser``)."""

    server_side = True

    @task
    def send_clip_bytes(self) -> None:
        """Send the encoded bytes; the server decodes, windows and aggregates."""
        self.classify_next()
