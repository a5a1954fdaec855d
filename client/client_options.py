"""Where and how the client connects: protocols, default addresses and model, TLS, headers, time limits.

:func:`normalize_url` accepts ``host:port``, ``grpc://`` and ``http://`` addresses;
:class:`TransportOptions` describes TLS, extra headers and time limits once for
both protocols and turns them into tritonclient's keyword arguments.
"""

from __future__ import annotations

import ipaddress
import re
import ssl as _ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

PROTOCOLS = ("grpc", "http")
DEFAULT_GRPC_URL = "127.0.0.1:8001"
DEFAULT_HTTP_URL = "127.0.0.1:8000"
DEFAULT_MODEL = "ser_int8"
#: Time limit of one client call (s) unless the caller gives ``timeout_s``.
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TransportOptions:
    """How the client talks to the server: TLS, extra headers, time limits.

    One description for both protocols: gRPC gets ``ssl``/``root_certificates``/
    ``private_key``/``certificate_chain`` as tritonclient takes them (file paths);
    HTTP gets ``ssl`` and ``ssl_options`` ``{ca_certs, keyfile, certfile}`` from
    the same files, and ``insecure`` (no certificate check) if asked.

    Attributes:
        headers: extra request headers sent with every call (auth tokens, routing).
        ssl: use TLS (gRPC ``ssl=True``, HTTPS).
        root_certificates: PEM file of the CA(s) to trust; None uses the system's.
        private_key: PEM client key (mutual TLS; needs ``certificate_chain``).
        certificate_chain: PEM client certificate chain (mutual TLS; needs ``private_key``).
        insecure: HTTP only: do not verify the server's certificate.
        connection_timeout_s: HTTP: time limit to connect; None = the client's ``timeout_s``.
        network_timeout_s: HTTP: time limit of one socket read/write; None = ``timeout_s``.
            (``tritonclient.http.aio`` takes one limit for the whole call, connecting and
            answering together: :class:`~client.async_client.AsyncSerClient` gives it the sum.)
        request_timeout_s: gRPC: time limit of one call (``client_timeout``); None = ``timeout_s``.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    ssl: bool = False
    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None
    insecure: bool = False
    connection_timeout_s: float | None = None
    network_timeout_s: float | None = None
    request_timeout_s: float | None = None

    def __post_init__(self) -> None:
        headers = dict(self.headers)
        for key, value in headers.items():
            if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key):
                raise ConfigError(f"header name {key!r}: must be a non-empty token (letters, digits, -_.)")
            if not isinstance(value, str) or "\n" in value or "\r" in value:
                raise ConfigError(f"header {key!r}={value!r}: value must be a single-line string")
        object.__setattr__(self, "headers", headers)
        files = {"root_certificates": self.root_certificates, "private_key": self.private_key,
                 "certificate_chain": self.certificate_chain}
        for name, path in files.items():
            if path is None:
                continue
            object.__setattr__(self, name, Path(path))
            if not self.ssl:
                raise ConfigError(f"{name}={str(path)!r} with ssl=False: TLS files need ssl=True")
            if not Path(path).is_file():
                raise ConfigError(f"{name}={str(path)!r}: no such file")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ConfigError(
                "private_key and certificate_chain go together (mutual TLS): "
                f"got private_key={self.private_key}, certificate_chain={self.certificate_chain}"
            )
        if self.insecure and not self.ssl:
            raise ConfigError("insecure=True with ssl=False: insecure only skips the certificate check of TLS")
        for name in ("connection_timeout_s", "network_timeout_s", "request_timeout_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name}={value}: must be positive (seconds) or None")

    def grpc_client_kwargs(self, address: str | None = None) -> dict[str, Any]:
        """Keyword arguments of ``tritonclient.grpc[.aio].InferenceServerClient`` for ``address`` (``host:port``).

        A loopback ``address`` gets :data:`GRPC_NO_PROXY`: gRPC follows ``http_proxy``/``grpc_proxy``
        even to 127.0.0.1, so with one set (and no ``no_proxy``) a local server would be unreachable.
        """
        kw: dict[str, Any] = {"ssl": self.ssl}
        if address is not None and is_loopback(address.rpartition(":")[0] or address):
            kw["channel_args"] = list(GRPC_NO_PROXY)
        for name in ("root_certificates", "private_key", "certificate_chain"):
            if getattr(self, name) is not None:
                kw[name] = str(getattr(self, name))
        return kw

    def http_client_kwargs(self, *, timeout_s: float) -> dict[str, Any]:
        """Keyword arguments of ``tritonclient.http.InferenceServerClient`` (``timeout_s``: the default limit)."""
        kw: dict[str, Any] = {
            "connection_timeout": self.connection_timeout_s or timeout_s,
            "network_timeout": self.network_timeout_s or timeout_s,
        }
        if self.ssl:
            kw["ssl"] = True
            kw["insecure"] = self.insecure
            options = {"ca_certs": self.root_certificates, "keyfile": self.private_key, "certfile": self.certificate_chain}
            kw["ssl_options"] = {k: str(v) for k, v in options.items() if v is not None}
        return kw

    def ssl_context(self) -> _ssl.SSLContext | None:
        """An :class:`ssl.SSLContext` from the same files (``tritonclient.http.aio``), or None without TLS."""
        if not self.ssl:
            return None
        ctx = _ssl.create_default_context(cafile=str(self.root_certificates) if self.root_certificates else None)
        if self.certificate_chain is not None:
            ctx.load_cert_chain(str(self.certificate_chain), str(self.private_key))
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = _ssl.CERT_NONE
        return ctx


#: gRPC channel arguments for a loopback address: never through a proxy of the environment.
GRPC_NO_PROXY = [("grpc.enable_http_proxy", 0)]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this host's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def normalize_url(url: str, *, protocol: str) -> str:
    """``host:port`` from ``host:port``, ``grpc://host:port`` or ``http://host:port[/]``.

    Raises:
        ConfigError: an unsupported scheme (``https``) or no port.
    """
    text = url.strip().rstrip("/")
    for scheme in ("grpc://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    if "://" in text:
        raise ConfigError(f"url={url!r}: only host:port, grpc:// and http:// are supported")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"url={url!r}: expected HOST:PORT (e.g. {DEFAULT_GRPC_URL if protocol == 'grpc' else DEFAULT_HTTP_URL})")
    return text


__all__ = ["DEFAULT_GRPC_URL", "DEFAULT_HTTP_URL", "DEFAULT_MODEL", "DEFAULT_TIMEOUT_S", "PROTOCOLS", "GRPC_NO_PROXY", "TransportOptions", "is_loopback", "normalize_url"]
