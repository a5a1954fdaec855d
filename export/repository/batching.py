"""The dynamic-batching figures of a model.

The defaults of :class:`RepositoryConfig` (:func:`default_preferred_batch_sizes`) and the
choice from a ``ser bench --json`` result (:func:`batching_from_bench`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from client.errors import ConfigError

#: Bench runners whose figures stand for a variant (first measured one wins), per instance kind.
BENCH_RUNNERS = {
    ("int8", "KIND_CPU"): ("ort-int8:",),
    ("fp32", "KIND_CPU"): ("ort-fp32",),
    ("fp16", "KIND_CPU"): ("ort-fp32",),
    ("fp16", "KIND_GPU"): ("torch-fp16",),
    ("fp32", "KIND_GPU"): ("ort-cuda-fp32", "torch-fp32"),
}
# KIND_AUTO is sized for the GPU it lands on where there is one: that is where batching pays.
BENCH_RUNNERS.update({(variant, "KIND_AUTO"): runners for (variant, kind), runners in list(BENCH_RUNNERS.items())
                      if kind == "KIND_GPU"})
#: A batch is "good enough" once its clips/s reach this fraction of the best measured.
BATCH_THROUGHPUT_FRACTION = 0.9
#: The queue delay is this fraction of one batch-1 inference (waiting longer than a
#: quarter of a call to fill a batch costs more latency than it saves), capped below.
QUEUE_DELAY_FRACTION = 0.25
MAX_QUEUE_DELAY_US = 20_000


def default_preferred_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Default dynamic-batcher targets: the two largest of 2, 4, 8, ... 256 up to ``max_batch_size``.

    ``max_batch_size`` itself counts when it is not among them: 8 -> ``(4, 8)``, 12 -> ``(8, 12)``.
    """
    sizes = [b for b in (2, 4, 8, 16, 32, 64, 128, 256) if b <= max_batch_size]
    if max_batch_size not in sizes:
        sizes.append(max_batch_size)
    return tuple(sizes[-2:])


@dataclass(frozen=True)
class BatchingChoice:
    """Dynamic-batching figures chosen from a benchmark result.

    Attributes:
        max_batch_size: largest batch Triton forms: the largest batch measured, at least
            the default 8 (clients send several windows of one clip in one request).
        preferred_batch_sizes: the smallest measured batch reaching
            :data:`BATCH_THROUGHPUT_FRACTION` of the best clips/s.
        max_queue_delay_us: :data:`QUEUE_DELAY_FRACTION` of the batch-1 median
            (0 when batching does not raise throughput: nothing to wait for).
        source: which file, shape, runner and cells the figures came from.
    """

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    source: str


def batching_from_bench(bench_json: str | Path, *, variant: str, kind: str, shape: str | None = None) -> BatchingChoice:
    """Choose max_batch_size, preferred batch and queue delay from a ``ser bench --json`` file.

    Args:
        bench_json: written by ``ser bench --json`` (:meth:`export.bench.BenchResult.write_json`).
        variant: ``fp32``, ``int8`` or ``fp16``.
        kind: ``KIND_CPU``, ``KIND_AUTO`` or ``KIND_GPU`` (which runners stand for the variant: :data:`BENCH_RUNNERS`).
        shape: model shape of the cells to use (default: the largest measured, by GFLOP/clip).

    Raises:
        ConfigError: the file is not a bench result, or holds no measured cell for the variant.
    """
    import json

    path = Path(bench_json)
    try:
        data = json.loads(path.read_text())
        cells = [c for c in data["cells"] if c["status"] == "measured"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a `ser bench --json` result ({type(exc).__name__}: {exc})") from None
    runners = BENCH_RUNNERS.get((variant, kind), ())
    device = "cpu" if kind == "KIND_CPU" else "cuda"
    if shape is None:
        shapes = data.get("shapes", {})
        measured = {c["shape"] for c in cells}
        shape = max(measured, key=lambda s: shapes.get(s, {}).get("gflop_per_clip", 0.0)) if measured else None
    chosen: list[dict] = []
    for prefix in runners:
        chosen = [c for c in cells if c["shape"] == shape and c.get("device", device) == device
                  and (c["runner"] == prefix or (prefix.endswith(":") and c["runner"].startswith(prefix)))]
        if chosen:
            runner = chosen[0]["runner"]
            chosen = sorted((c for c in chosen if c["runner"] == runner), key=lambda c: c["batch"])
            break
    if not chosen:
        raise ConfigError(f"{path}: no measured cell of shape {shape!r} for {variant} on {kind} (runners {list(runners)})")
    best = max(c["clips_per_s"] for c in chosen)
    preferred = next(c["batch"] for c in chosen if c["clips_per_s"] >= BATCH_THROUGHPUT_FRACTION * best)
    one = next((c for c in chosen if c["batch"] == 1), chosen[0])
    delay = 0 if preferred == 1 else min(MAX_QUEUE_DELAY_US, int(round(QUEUE_DELAY_FRACTION * one["median_ms"] * 1e3 / one["batch"])))
    figures = ", ".join(f"b{c['batch']} {c['median_ms']:.1f} ms {c['clips_per_s']:.1f} clips/s" for c in chosen)
    return BatchingChoice(
        max_batch_size=max(8, chosen[-1]["batch"]),
        preferred_batch_sizes=(preferred,),
        max_queue_delay_us=delay,
        source=f"{path.name} {shape} {chosen[0]['runner']}: {figures}",
    )
