"""Triton's Prometheus metrics, scraped before and after a load run.

The batching evidence comes from the server, not from assumptions:
``nv_inference_count`` counts inferences (a request of batch n counts n) and
``nv_inference_exec_count`` counts model executions, so over a run
``Δinference_count / Δexec_count`` is the mean batch size the server executed.
Queue and compute times are cumulative microseconds summed over requests
(``nv_inference_queue_duration_us``, ``nv_inference_compute_infer_duration_us``);
dividing by the successful requests gives per-request means.

Counters are per model *version*, and a version's counters are reset when it unloads: across
a version swap, "after − before" of the sum over versions under-counts. :class:`CounterTracker`
adds up increases per version instead, from observations a sampler takes during the run
(:mod:`loadtest.sampler`, every second by default).
"""

from __future__ import annotations

import math
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

from client.errors import ConfigError, ServerUnavailableError
from deploy.probes import urlopen

#: Counters read per model (summed over versions).
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ModelCounters:
    """Cumulative counters of one model, as the metrics endpoint reported them.

    Attributes:
        model: model name.
        success: ``nv_inference_request_success`` (requests).
        failure: ``nv_inference_request_failure`` (requests).
        inference_count: ``nv_inference_count`` (inferences; a batch of n counts n).
        exec_count: ``nv_inference_exec_count`` (model executions).
        request_us: ``nv_inference_request_duration_us`` (µs, summed over requests).
        queue_us: ``nv_inference_queue_duration_us`` (µs, summed over requests).
        compute_infer_us: ``nv_inference_compute_infer_duration_us`` (µs, summed over requests).
    """

    model: str
    success: float = 0.0
    failure: float = 0.0
    inference_count: float = 0.0
    exec_count: float = 0.0
    request_us: float = 0.0
    queue_us: float = 0.0
    compute_infer_us: float = 0.0

    def __sub__(self, before: "ModelCounters") -> "ModelCounters":
        return ModelCounters(
            model=self.model,
            **{f: getattr(self, f) - getattr(before, f) for f in _FIELDS.values()},
        )

    @property
    def mean_batch_size(self) -> float:
        """inference_count / exec_count (NaN before any execution)."""
        return self.inference_count / self.exec_count if self.exec_count else math.nan

    @property
    def queue_us_per_request(self) -> float:
        """Mean queue time per successful request (µs; NaN if none)."""
        return self.queue_us / self.success if self.success else math.nan

    @property
    def compute_us_per_request(self) -> float:
        """Mean compute-infer time per successful request (µs; NaN if none)."""
        return self.compute_infer_us / self.success if self.success else math.nan

    @property
    def request_us_per_request(self) -> float:
        """Mean server-side request time per successful request (µs; NaN if none)."""
        return self.request_us / self.success if self.success else math.nan


_FIELDS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inference_count",
    "nv_inference_exec_count": "exec_count",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
}


def parse_metrics_by_version(text: str, *, model: str) -> dict[str, ModelCounters]:
    """Read one model's counters per version (label ``version``) from Prometheus text format.

    Returns:
        ``{version: ModelCounters}`` of the versions ``text`` reports (loaded ones).
    """
    totals: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m or m.group(1) not in _FIELDS:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        if labels.get("model") != model:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        version = totals.setdefault(labels.get("version", ""), dict.fromkeys(_FIELDS.values(), 0.0))
        version[_FIELDS[m.group(1)]] += value
    return {v: ModelCounters(model=model, **t) for v, t in totals.items()}


def parse_metrics(text: str, *, model: str) -> ModelCounters:
    """Read one model's counters from Prometheus text exposition format.

    Args:
        text: the body of ``GET /metrics``.
        model: the model whose samples are summed (over its versions; label ``model``).

    Returns:
        :class:`ModelCounters`; counters absent from ``text`` are 0 (a model that
        has not run yet exports no per-model samples).
    """
    return total(parse_metrics_by_version(text, model=model).values(), model=model)


def total(counters, *, model: str) -> ModelCounters:
    """The sum of ``counters`` (an iterable of :class:`ModelCounters`)."""
    sums = dict.fromkeys(_FIELDS.values(), 0.0)
    for c in counters:
        for f in sums:
            sums[f] += getattr(c, f)
    return ModelCounters(model=model, **sums)


class CounterTracker:
    """The increase of one model's counters over a run, per version, through unloads and swaps.

    Counters are per model version. When a version unloads, 2.51 keeps exporting its samples
    but resets them to 0; a version loaded mid-run starts from 0. "After − before" of the sum
    over versions therefore under-counts across a swap. The tracker adds up increases per
    version and counter between successive observations as Prometheus' ``increase()`` does: a
    value lower than the last one is a reset, and counts from 0. Requests an old version
    served after the last observation before its unload are missed: at most one sampling
    interval's worth.

    :meth:`begin`, :meth:`sample` and :meth:`end` scrape and observe under one lock, so the
    observations are applied in the order the server produced them (two overlapping scrapes
    could otherwise arrive reversed and read as a reset).

    Args:
        model: the model name.
    """

    def __init__(self, *, model: str) -> None:
        self.model = model
        self._io = threading.Lock()
        self._lock = threading.Lock()
        self._last: dict[str, ModelCounters] = {}
        self._increase: dict[str, ModelCounters] = {}
        self.counting = False

    # --- observations given -------------------------------------------------------

    def start(self, before: dict[str, ModelCounters]) -> None:
        """Count from ``before`` (per-version counters, :func:`parse_metrics_by_version`) on."""
        with self._lock:
            self._last = dict(before)
            self._increase = {}
            self.counting = True

    def observe(self, now: dict[str, ModelCounters]) -> None:
        """Add the increases since the last observation (ignored unless counting)."""
        zero = ModelCounters(model=self.model)
        with self._lock:
            if not self.counting:
                return
            for version, counters in now.items():
                last = self._last.get(version, zero)
                inc = ModelCounters(model=self.model, **{
                    f: (getattr(counters, f) - getattr(last, f)) if getattr(counters, f) >= getattr(last, f) else getattr(counters, f)
                    for f in _FIELDS.values()
                })
                self._increase[version] = total([self._increase.get(version, zero), inc], model=self.model)
                self._last[version] = counters

    def finish(self) -> None:
        """Stop counting: later observations are ignored."""
        with self._lock:
            self.counting = False

    # --- observations scraped ---------------------------------------------------------

    def begin(self, address: str) -> dict[str, ModelCounters]:
        """Scrape ``address`` and :meth:`start` from it; returns what was read."""
        with self._io:
            before = read_counters_by_version(address, model=self.model)
            self.start(before)
            return before

    def sample(self, address: str) -> None:
        """Scrape ``address`` and :meth:`observe` it (nothing is counted before :meth:`begin`)."""
        with self._io:
            if self.counting:
                self.observe(read_counters_by_version(address, model=self.model))

    def end(self, address: str) -> dict[str, ModelCounters]:
        """Scrape ``address``, :meth:`observe` it and :meth:`finish`; returns what was read."""
        with self._io:
            after = read_counters_by_version(address, model=self.model)
            self.observe(after)
            self.finish()
            return after

    # --- results ------------------------------------------------------------------------

    def total(self) -> ModelCounters:
        """The increase since :meth:`start`, summed over versions."""
        with self._lock:
            return total(self._increase.values(), model=self.model)

    def by_version(self) -> dict[str, ModelCounters]:
        """The increase since :meth:`start`, per version."""
        with self._lock:
            return dict(self._increase)


def metrics_url(address: str) -> str:
    """``http://host:port/metrics`` from ``host:port`` or a full URL."""
    text = address.strip().rstrip("/")
    if not text:
        raise ConfigError("metrics address '': expected HOST:PORT of Triton's metrics endpoint")
    if not text.startswith(("http://", "https://")):
        text = "http://" + text
    return text if text.endswith("/metrics") else text + "/metrics"


def scrape(address: str, *, timeout_s: float = 5.0) -> str:
    """``GET /metrics`` of a Triton server (a fresh connection, closed after; a loopback address bypasses any proxy).

    Raises:
        ServerUnavailableError: nothing answers, or not with 200.
    """
    url = metrics_url(address)
    req = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urlopen(req, timeout_s=timeout_s) as resp:  # a loopback endpoint bypasses http_proxy
            return resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        raise ServerUnavailableError(f"{url}: metrics endpoint answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerUnavailableError(f"{url}: metrics endpoint unreachable ({reason})") from None


def read_counters(address: str, *, model: str) -> ModelCounters:
    """Scrape and parse one model's counters (see :func:`parse_metrics`)."""
    return parse_metrics(scrape(address), model=model)


def read_counters_by_version(address: str, *, model: str) -> dict[str, ModelCounters]:
    """Scrape and parse one model's counters per version (see :func:`parse_metrics_by_version`)."""
    return parse_metrics_by_version(scrape(address), model=model)
