"""What one bulk-scoring job is: the sources, the output folder, the servers, the pool of clients.

:class:`BulkConfig` checks itself on construction; ``ser batch`` builds it from its options.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from client.audio import AudioConfig
from client.client_options import DEFAULT_MODEL, PROTOCOLS
from client.errors import ConfigError
from client.retry import RetryPolicy

#: The retry policy of a bulk job's clients: a server restarting (or every replica busy) is waited for
#: a minute before the batch fails and Ray retries it (the balancing client fails over at once).
BULK_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.2, max_backoff_s=2.0, retry_for_s=60.0)
#: Requests in flight per model instance that the default actor pool aims at (one running, one queued),
#: so the dynamic batcher always has the next batch waiting.
ACTORS_PER_INSTANCE = 2


@dataclass(frozen=True)
class BulkConfig:
    """One ``ser batch`` job.

    Attributes:
        sources: local folders, globs and files, or URIs (``s3://bucket/prefix/``...).
        out: the output folder (local path or URI): Parquet parts, one row per file, and ``batch.json``.
        url: the servers: ``HOST:PORT``, ``HOST:PORT,HOST:PORT`` or ``dns:///NAME:PORT``
            (every actor's client balances over all of them).
        model, protocol, model_version: as :class:`client.triton_client.SerClient` takes them.
        actors: clients in the pool (one per Ray actor, one request in flight each); None:
            :data:`ACTORS_PER_INSTANCE` per model instance over every endpoint (the servers' capacity).
        files_per_batch: files per Ray batch: decoded by one task, scored by one actor call (their windows
            travel together, split at the model's ``max_batch_size``), written together.
        actor_cpus: CPUs Ray reserves per client actor (it waits on the network: a fraction).
        timeout_s: time limit of one call, seconds.
        retry: the clients' :class:`~client.retry.RetryPolicy`.
        audio: refusal thresholds (its sample rate is replaced by the model's).
        ray_address: the Ray cluster (``auto``, ``ray://head:10001``); None: ``RAY_ADDRESS`` if set, else a
            local cluster started here.
        num_cpus: CPUs of a local cluster started here (None: all).
        shard: ``(index, count)``: score only the files of that shard (an Indexed Job's pod).
    """

    sources: tuple[str, ...]
    out: str
    url: str
    model: str = DEFAULT_MODEL
    protocol: str = "grpc"
    model_version: str = ""
    actors: int | None = None
    files_per_batch: int = 32
    actor_cpus: float = 0.25
    timeout_s: float = 30.0
    retry: RetryPolicy = BULK_RETRY
    audio: AudioConfig = field(default_factory=AudioConfig)
    ray_address: str | None = None
    num_cpus: int | None = None
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        object.__setattr__(self, "out", str(self.out))
        if not self.sources:
            raise ConfigError("sources=(): name at least one folder, glob, file or URI")
        if not self.out:
            raise ConfigError("out='': an output folder is required")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol={self.protocol!r}: expected one of {PROTOCOLS}")
        if self.actors is not None and (int(self.actors) != self.actors or self.actors < 1):
            raise ConfigError(f"actors={self.actors}: must be an integer >= 1 (or None: from the servers' capacity)")
        if int(self.files_per_batch) != self.files_per_batch or self.files_per_batch < 1:
            raise ConfigError(f"files_per_batch={self.files_per_batch}: must be an integer >= 1")
        if not 0 < self.actor_cpus <= 64:
            raise ConfigError(f"actor_cpus={self.actor_cpus}: must be in (0, 64]")
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s={self.timeout_s}: must be positive (seconds)")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus={self.num_cpus}: must be >= 1")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ConfigError(f"shard={self.shard}: expected (index, count) with 0 <= index < count")


__all__ = ["ACTORS_PER_INSTANCE", "BULK_RETRY", "BulkConfig"]
