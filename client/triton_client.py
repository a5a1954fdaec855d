"""Classify audio through a Triton server: the bundle's client, its public entry.

Import the client from here (``from client.triton_client import SerClient``); the
pieces live in modules named for their job:

* :mod:`client.sync_client`: :class:`SerClient`, the blocking client;
* :mod:`client.async_client`: :class:`AsyncSerClient`, its asyncio twin;
* :mod:`client.client_base`: what the two share (contract checks, requests, aggregation);
* :mod:`client.client_options`: :class:`TransportOptions` (TLS, headers, time limits),
  :func:`normalize_url`, the protocols and default addresses and model;
* :mod:`client.retry`: :class:`RetryPolicy`, :func:`is_retryable`, :func:`is_refused_restricted_api`;
* :mod:`client.error_mapping`: :func:`translate_error`, tritonclient's failures as typed errors;
* :mod:`client.results`: :class:`Prediction`, :class:`ClassifyResult`, :class:`ModelStats`,
  :func:`parse_classification`;
* :mod:`client.server_side`: the server-side mode (``server_side=True``).

:class:`SerClient` configures itself from the server: on open it checks
the server is live and the model ready, reads the model config and rebuilds the
:class:`~client.contract.ModelContract` from its ``ser.*`` parameters (labels,
sample rate, window, hop). Audio then goes through the one audio contract
(:mod:`client.audio`): decode -> mono -> resample -> fixed windows; the windows
of one clip travel as one batched request (split at the model's
``max_batch_size``), and the per-window probabilities are combined weighted by
valid samples.

Every failure is a typed :class:`~client.errors.SerError` with a one-line message:

* nothing answers at the address (connection refused, gRPC UNAVAILABLE or HTTP 503, no answer
  to ``open()``'s health checks in time): :class:`~client.errors.ServerUnavailableError`, after
  the retries;
* one request gets no answer within its time limit (DEADLINE_EXCEEDED, an HTTP socket time-out):
  :class:`~client.errors.RequestTimeoutError`, that request's failure alone, never retried;
* the model is unknown or not ready (NOT_FOUND / 404): :class:`~client.errors.ModelNotFoundError`
  listing the models that are ready;
* a restricted API (repository, shared memory, trace, logging) called without the admin key:
  :class:`~client.errors.AccessDeniedError`, never retried (2.51 answers it UNAVAILABLE over gRPC);
* the model does not carry the bundle's contract: :class:`~client.errors.ContractError`;
* the server refuses or fails a request (INVALID_ARGUMENT / 400, INTERNAL / 500):
  :class:`~client.errors.InferenceError`;
* bad audio: :class:`~client.errors.AudioError` subclasses naming the file.

This module imports neither torch nor transformers (a calling service installs
the client alone); ``tests/integration/test_client_server.py`` checks that in a subprocess.
"""

from __future__ import annotations

from .async_client import AsyncSerClient
from .client_options import (
    DEFAULT_GRPC_URL,
    DEFAULT_HTTP_URL,
    DEFAULT_MODEL,
    PROTOCOLS,
    TransportOptions,
    normalize_url,
)
from .error_mapping import translate_error
from .results import ClassifyResult, ModelStats, Prediction, parse_classification
from .retry import RetryPolicy, is_refused_restricted_api, is_retryable
from .sync_client import SerClient

__all__ = [
    "DEFAULT_GRPC_URL",
    "DEFAULT_HTTP_URL",
    "DEFAULT_MODEL",
    "PROTOCOLS",
    "AsyncSerClient",
    "ClassifyResult",
    "ModelStats",
    "Prediction",
    "RetryPolicy",
    "SerClient",
    "TransportOptions",
    "is_refused_restricted_api",
    "is_retryable",
    "normalize_url",
    "parse_classification",
    "translate_error",
]
