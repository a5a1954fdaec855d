"""Triton's Prometheus metrics, scraped before and after a load run.

The batching evidence comes from the server, not from assumptions:
``nv_inference_count`` counts inferences (a request of batch n counts n) and
``nv_inference_exec_count`` counts model executions, so over a run
``Δinference_count / Δexec_count`` is the mean batch size the server executed.
Queue and compute times are cumulative microseconds summed over requests
(``nv_inference_queue_duration_us``, ``nv_inference_compute_infer_duration_us``);
dividing by the successful requests gives per-request means.
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from client.errors import ConfigError, ServerUnavailableError

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


def parse_metrics(text: str, *, model: str) -> ModelCounters:
    """Read one model's counters from Prometheus text exposition format.

    Args:
        text: the body of ``GET /metrics``.
        model: the model whose samples are summed (over its versions; label ``model``).

    Returns:
        :class:`ModelCounters`; counters absent from ``text`` are 0 (a model that
        has not run yet exports no per-model samples).
    """
    totals = dict.fromkeys(_FIELDS.values(), 0.0)
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
            totals[_FIELDS[m.group(1)]] += float(m.group(3))
        except ValueError:
            continue
    return ModelCounters(model=model, **totals)


def metrics_url(address: str) -> str:
    """``http://host:port/metrics`` from ``host:port`` or a full URL."""
    text = address.strip().rstrip("/")
    if not text:
        raise ConfigError("metrics address '': expected HOST:PORT of Triton's metrics endpoint")
    if not text.startswith(("http://", "https://")):
        text = "http://" + text
    return text if text.endswith("/metrics") else text + "/metrics"


def scrape(address: str, *, timeout_s: float = 5.0) -> str:
    """``GET /metrics`` of a Triton server (a fresh connection, closed after).

    Raises:
        ServerUnavailableError: nothing answers, or not with 200.
    """
    url = metrics_url(address)
    req = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - loopback metrics endpoint
            return resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        raise ServerUnavailableError(f"{url}: metrics endpoint answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerUnavailableError(f"{url}: metrics endpoint unreachable ({reason})") from None


def read_counters(address: str, *, model: str) -> ModelCounters:
    """Scrape and parse one model's counters (see :func:`parse_metrics`)."""
    return parse_metrics(scrape(address), model=model)
