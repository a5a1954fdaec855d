"""One bulk-scoring job on Ray Data: list, skip what is done, decode in tasks, score in an actor pool, write Parquet.

:func:`run_batch` is ``ser batch``. The same code runs on a local cluster (``ray.init()`` here)
and on a Ray cluster (``ray_address``, or ``RAY_ADDRESS``): the files are listed on the driver,
the decoding runs as Ray tasks next to the data, the scoring in a pool of actors, each holding one
client that balances over every server of the URL list, and the rows are written by Ray as
Parquet parts into the output folder (on a cluster: a bucket or a shared filesystem every node
reaches). Failures, and what they cost:

* a file that cannot be read or decoded: its row carries the error, the job goes on;
* a server that dies: its clients' calls go to the other servers at once (set aside, probed back);
* an actor (or its node) that dies: Ray restarts it and runs its batch again (no row is written
  twice: rows are written after scoring, by the writing stage);
* the driver killed: the parts written are complete or removed by the next run, which scores the
  files missing from them (:func:`deploy.bulk.output.done_sources`).

Ray is imported inside :func:`run_batch` only.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from typing import Callable

from client.errors import ConfigError

from .config import ACTORS_PER_INSTANCE, BulkConfig
from .output import BatchSummary, done_sources, output_path, read_rows, write_manifest
from .sources import in_shard, list_sources
from .stages import Scorer, decode_batch


def pool_size(config: BulkConfig, *, instances: int, endpoints: int) -> int:
    """The number of client actors: ``config.actors``, else :data:`ACTORS_PER_INSTANCE` per model instance per endpoint."""
    return config.actors or max(1, ACTORS_PER_INSTANCE * max(instances, 1) * max(endpoints, 1))


def model_instances(model_config: dict) -> int:
    """Model instances one server runs (the sum of ``instance_group[].count``; 1 where the config names none)."""
    groups = model_config.get("instance_group") or []
    return sum(int(g.get("count", 1) or 1) for g in groups) or 1


def _init_ray(config: BulkConfig) -> bool:
    """Connect to the cluster (or start a local one); True if this call did (and should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=config.num_cpus, include_dashboard=False, log_to_driver=False)
    return True


def run_batch(config: BulkConfig, *, print_fn: Callable[[str], None] = print) -> BatchSummary:
    """Score every audio file of ``config.sources`` not yet in ``config.out``; see the module's docstring.

    Raises:
        ConfigError: bad sources or output folder.
        ServerUnavailableError, ModelNotFoundError, ContractError: the servers cannot score (checked
            before any work starts).
    """
    from client.triton_client import SerClient

    sources = list_sources(config.sources)
    if config.shard is not None:
        index, count = config.shard
        sources = [s for s in sources if in_shard(s, index=index, count=count)]
    done = done_sources(config.out)
    todo = [s for s in sources if s not in done]
    with SerClient(config.url, model=config.model, protocol=config.protocol, model_version=config.model_version,
                   timeout_s=config.timeout_s, retry=config.retry) as probe:
        contract = probe.contract
        assert contract is not None
        actors = pool_size(config, instances=model_instances(probe.config), endpoints=len(probe.endpoints))
    audio = replace(config.audio, sample_rate=contract.sample_rate)
    write_manifest(config.out, labels=contract.labels, model=config.model, url=config.url, summary=None)
    print_fn(f"{len(sources)} files, {len(sources) - len(todo)} already in {config.out}, {len(todo)} to score "
             f"with {actors} clients over {config.url}")
    startup = elapsed = 0.0
    if todo:
        startup, elapsed = _score(config, todo, audio=audio, window_samples=contract.window_samples,
                                  hop_samples=contract.hop_samples, actors=actors)
    wanted = set(todo)
    new_rows = [r for r in read_rows(config.out) if r["source"] in wanted]
    summary = BatchSummary(total=len(sources), skipped=len(sources) - len(todo), scored=len(new_rows),
                           failed=sum(1 for r in new_rows if r["error_type"]), actors=actors, elapsed_s=elapsed,
                           startup_s=startup)
    write_manifest(config.out, labels=contract.labels, model=config.model, url=config.url, summary=summary)
    return summary


def _score(config: BulkConfig, todo: list[str], *, audio, window_samples: int, hop_samples: int,
           actors: int) -> tuple[float, float]:
    """Run the pipeline; ``(seconds to reach the cluster, seconds of the run after it)``."""
    import ray
    import ray.data

    t0 = time.perf_counter()
    started_here = _init_ray(config)
    t1 = time.perf_counter()
    try:
        check_cpus(ray.cluster_resources().get("CPU", 0.0), actors=actors, actor_cpus=config.actor_cpus)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"source": s} for s in todo],
                                 override_num_blocks=max(1, math.ceil(len(todo) / config.files_per_batch)))
        ds = ds.map_batches(decode_batch, batch_size=config.files_per_batch, batch_format="numpy",
                            fn_kwargs={"audio": audio, "window_samples": window_samples, "hop_samples": hop_samples})
        ds = ds.map_batches(
            Scorer, batch_size=config.files_per_batch, batch_format="numpy", num_cpus=config.actor_cpus,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"url": config.url, "model": config.model, "protocol": config.protocol,
                                   "model_version": config.model_version, "timeout_s": config.timeout_s,
                                   "retry": config.retry},
        )
        ds.write_parquet(output_path(config.out))
        return t1 - t0, time.perf_counter() - t1
    finally:
        if started_here:
            ray.shutdown()


def check_cpus(cpus: float, *, actors: int, actor_cpus: float) -> None:
    """Refuse a pool that leaves no CPU for a decoding task (Ray would wait for one forever).

    Raises:
        ConfigError: naming the cluster's CPUs and what the pool takes.
    """
    need = actors * actor_cpus + 1
    if cpus < need:
        raise ConfigError(f"the Ray cluster has {cpus:g} CPUs: {actors} client actors x {actor_cpus:g} CPU plus one "
                          f"decoding task need {need:g} (lower --actors or --actor-cpus, or add CPUs)")


__all__ = ["check_cpus", "model_instances", "pool_size", "run_batch"]
