"""Production tritonserver flags shared by every way the bundle runs Triton.

One source for the choices that ``deploy/gpu/run-triton.sh`` (NGC container),
``deploy/k8s`` (Kubernetes), ``deploy/compose`` and :class:`deploy.local_triton.LocalTriton`
(``ser serve``) make; ``tests/system/test_deploy.py`` fails when a script or manifest drifts
from them. Each was checked against ``tritonserver --help`` of the 2.51 binary bundled here
(the NGC 24.10 image ships the same version):

* ``--model-control-mode=explicit`` + ``--load-model=<names>``: the listed models load at
  start exactly as in ``none`` mode, and an operator can reload a model after a new version
  directory was copied in (``POST /v2/repository/models/<m>/load``). ``poll`` is refused:
  it loads half-copied version directories.
* ``--strict-readiness=true``, ``--exit-on-error=true``: ``/v2/health/ready`` is 200 only
  when every model is ready, and a model that fails to load stops the server (a visible
  crash loop instead of a node that is "up" but serves nothing).
* ``--exit-timeout-secs``: SIGTERM lets in-flight requests finish for this long
  (:data:`EXIT_TIMEOUT_S`; Kubernetes' grace period is longer than it).
* ``--http-restricted-api`` / ``--grpc-restricted-protocol``: the APIs in
  :data:`RESTRICTED_APIS` (repository index, load/unload, shared-memory registration,
  trace and log settings: everything that changes server state) answer only requests
  carrying the admin key. Inference, health, metadata, model config and statistics stay
  open (clients read their contract from the model config). HTTP expects the header
  :data:`ADMIN_HEADER`; gRPC prefixes it, so gRPC callers send :data:`GRPC_ADMIN_HEADER`
  (measured on the real server).
* ``--metrics-config=summary_latencies=true``: ``nv_inference_*_summary_us{quantile=...}``
  (p50/p90/p95/p99) for the dashboard, besides the cumulative ``*_duration_us`` counters.
* ``--disable-auto-complete-config``: the configs are generated and complete; the backend
  must not change them.
* gRPC TLS: ``--grpc-use-ssl`` with server certificate and key, ``--grpc-use-ssl-mutual``
  when a client CA is given. Triton's HTTP endpoint has no TLS: terminate it at the ingress.
* Request size: tritonserver 2.51 has no request-size flag (none in ``--help``); the
  ingress limits body size, and Triton refuses any shape other than ``[<= max_batch_size, W]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from client.errors import ConfigError

#: Triton's own ports (inside the container, and the local defaults of ``ser serve``).
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
#: Endpoint groups that only the admin key may call (Triton's API names).
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
#: HTTP header carrying the admin key.
ADMIN_HEADER = "admin-key"
#: gRPC metadata key carrying the admin key (tritonserver prefixes the configured key).
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
#: Seconds in-flight requests get on SIGTERM on production nodes.
EXIT_TIMEOUT_S = 30
#: Latency quantiles in Prometheus.
SUMMARY_LATENCIES = "--metrics-config=summary_latencies=true"


def restricted_args(admin_key: str) -> list[str]:
    """``--http-restricted-api`` and ``--grpc-restricted-protocol`` guarding :data:`RESTRICTED_APIS` with ``admin_key``."""
    if not admin_key or any(c in admin_key for c in " ,:=\n\t"):
        raise ConfigError("admin key: must be non-empty without spaces, ',', ':' or '=' (it is part of a flag value)")
    apis = ",".join(RESTRICTED_APIS)
    return [
        f"--http-restricted-api={apis}:{ADMIN_HEADER}={admin_key}",
        f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={admin_key}",
    ]


@dataclass(frozen=True)
class GrpcTls:
    """TLS for Triton's gRPC endpoint (PEM files).

    Attributes:
        cert: server certificate chain.
        key: server private key.
        client_ca: CA that client certificates must chain to; set = mutual TLS.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None

    def __post_init__(self) -> None:
        for field in ("cert", "key", "client_ca"):
            value = getattr(self, field)
            if value is None:
                continue
            path = Path(value).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"grpc tls {field}={value}: no such file (PEM expected)")
            object.__setattr__(self, field, path)

    def args(self) -> list[str]:
        """The tritonserver flags."""
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.client_ca is not None:
            args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={self.client_ca}"]
        return args


#: File names of a TLS directory (the layout of a Kubernetes ``kubernetes.io/tls`` Secret, plus ``ca.crt``).
TLS_CERT, TLS_KEY, TLS_CA = "tls.crt", "tls.key", "ca.crt"


def grpc_tls_from_dir(directory: str | Path) -> GrpcTls:
    """:class:`GrpcTls` from ``DIR/tls.crt`` + ``DIR/tls.key`` (mutual if ``DIR/ca.crt`` exists)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{directory}: grpc TLS directory does not exist (expected {TLS_CERT}, {TLS_KEY}[, {TLS_CA}])")
    ca = root / TLS_CA
    return GrpcTls(cert=root / TLS_CERT, key=root / TLS_KEY, client_ca=ca if ca.is_file() else None)


def read_admin_key(path: str | Path) -> str:
    """The admin key stored in ``path`` (surrounding whitespace dropped), checked as :func:`restricted_args` does."""
    try:
        key = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the admin key file ({exc.strerror})") from None
    try:
        restricted_args(key)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return key
