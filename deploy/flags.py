"""Production tritonserver flags shared by every way the bundle runs Triton.

One source for the choices that ``deploy/gpu/run-triton.sh`` (NGC container),
``deploy/k8s`` (Kubernetes), ``deploy/compose`` and :class:`deploy.local_triton.LocalTriton`
(``ser serve``) make; ``tests/system/test_deploy.py`` fails when a script or manifest drifts
from them. Each was checked against ``tritonserver --help`` of the 2.51 binary bundled here
and against the command-line parser of the pinned release (:data:`TRITON_TAG`):

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
* ``--backend-config=onnxruntime,enable-global-threadpool=1`` with ``intra_op_thread_count=<CPUs>``
  (:func:`onnxruntime_thread_args`): every model instance of Triton's ONNX Runtime backend shares one
  thread pool as wide as the CPUs the node gives the server, so more models or instances never
  oversubscribe the cores; the model configs' own thread parameters are then ignored.
* ``--http-max-input-size`` (:data:`HTTP_MAX_INPUT_SIZE`, GPU nodes only): the largest HTTP
  request input the server reads, sized by :func:`largest_request_bytes` for the bundle's
  largest legitimate request. The flag and the fixes for oversized and overflowing HTTP
  inputs came in upstream releases after 2.51 (see :data:`TRITON_TAG`); the bundled 2.51
  has neither, so ``ser serve`` defends itself by restarting (``deploy.supervisor``) and
  ``--no-http``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from client.errors import ConfigError

#: The NGC release every deploy path runs (``deploy/triton.env`` names it for the script and compose;
#: ``deploy/k8s`` repeats it): tritonserver 2.71.0, which has every upstream fix for hostile HTTP
#: bodies released so far: ``--http-max-input-size`` (2.59, triton-inference-server/server#8174),
#: the request-JSON size check (2.62, #8432), overflow checks when reading JSON inputs (2.68, #8676),
#: the chunk-count cap and compressed-body memory release (2.69, #8770, #8764).
TRITON_TAG = "26.07"
TRITON_VERSION = "2.71.0"

#: The serving envelope the deploy paths are sized for: windows up to 30 s at 16 kHz (the longest
#: ``TrainConfig.window_s`` allows) and ``max_batch_size`` up to 64 in binary tensor requests
#: (what ``tritonclient`` and the bundle's clients send), or up to 8 in JSON-text requests (curl).
MAX_WINDOW_SAMPLES = 30 * 16_000
MAX_BATCH_SIZE = 64
MAX_JSON_BATCH_SIZE = 8
#: The longest JSON text of one FP32 sample with its separator: ``-1.2345678901234567e-05,``.
JSON_BYTES_PER_VALUE = 24
#: Room for the request's JSON header (names, shapes, parameters) on top of the tensors.
HEADER_MARGIN_BYTES = 1 << 20


def largest_request_bytes(*, window_samples: int, max_batch_size: int, json_batch_size: int) -> int:
    """Bytes the largest legitimate inference request puts through Triton's HTTP input checks.

    Binary tensors (``max_batch_size`` rows of ``waveform`` FP32 ``[W]`` and ``num_samples``
    INT64 ``[1]``) or JSON text (``json_batch_size`` rows at :data:`JSON_BYTES_PER_VALUE` per
    value), whichever is larger, plus :data:`HEADER_MARGIN_BYTES`.
    """
    if min(window_samples, max_batch_size, json_batch_size) < 1:
        raise ConfigError(
            f"window_samples={window_samples}, max_batch_size={max_batch_size}, json_batch_size={json_batch_size}: "
            "all must be >= 1"
        )
    binary = max_batch_size * (4 * window_samples + 8)
    json_text = json_batch_size * (window_samples + 1) * JSON_BYTES_PER_VALUE
    return max(binary, json_text) + HEADER_MARGIN_BYTES


def http_max_input_size(*, window_samples: int, max_batch_size: int, json_batch_size: int) -> int:
    """``--http-max-input-size``: :func:`largest_request_bytes` rounded up to a whole MiB."""
    need = largest_request_bytes(window_samples=window_samples, max_batch_size=max_batch_size, json_batch_size=json_batch_size)
    return -(-need // (1 << 20)) * (1 << 20)


#: ``--http-max-input-size`` of every deploy path: 119 MiB for :data:`MAX_BATCH_SIZE` binary
#: windows of :data:`MAX_WINDOW_SAMPLES` (upstream's default, 64 MiB, would refuse them).
HTTP_MAX_INPUT_SIZE = http_max_input_size(
    window_samples=MAX_WINDOW_SAMPLES, max_batch_size=MAX_BATCH_SIZE, json_batch_size=MAX_JSON_BATCH_SIZE
)

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


def onnxruntime_thread_args(threads: int) -> list[str]:
    """Flags for one ONNX Runtime thread pool of ``threads`` intra-op threads, shared by every native model instance.

    The graph is a chain, so inter-op parallelism buys nothing: one inter-op thread.
    """
    if threads < 1:
        raise ConfigError(f"onnxruntime threads={threads}: must be >= 1")
    return [
        "--backend-config=onnxruntime,enable-global-threadpool=1",
        f"--backend-config=onnxruntime,intra_op_thread_count={threads}",
        "--backend-config=onnxruntime,inter_op_thread_count=1",
    ]


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
