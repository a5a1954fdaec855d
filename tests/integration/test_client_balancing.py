"""One client, two real servers: the calls spread over both, survive one stopping, and return to it.

Two tritonservers of their own (fixed ports, so an address survives a restart) serve the tiny
portable repository; the client is given both as a comma-separated list. Which server answered
is read from each server's own statistics.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from client.endpoints import BalanceOptions
from client.triton_client import AsyncSerClient, RetryPolicy, SerClient

MODEL = "ser_fp32"
BALANCE = BalanceOptions(down_for_s=0.5)
#: What the client rides out while one of two servers stops: failover is immediate, so 3 attempts are plenty.
RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.2)


def _clips(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    t = np.arange(12_000) / 16_000
    return [(0.3 * np.sin(2 * np.pi * (110 + 9 * i) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
            for i in range(count)]


def _successes(server, protocol: str = "grpc") -> int:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with SerClient(url, model=MODEL, protocol=protocol) as client:
        return client.statistics().success_count


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_calls_spread_over_both_servers(two_servers, protocol):
    urls = ",".join(s.grpc_url if protocol == "grpc" else s.http_url for s in two_servers)
    before = [_successes(s, protocol) for s in two_servers]
    with SerClient(urls, model=MODEL, protocol=protocol, balance=BALANCE) as client:
        assert client.endpoints == urls.split(",")
        results = list(client.classify_many(_clips(12), sample_rate=16_000, concurrency=3))
    assert all(r.ok for r in results)
    gained = [_successes(s, protocol) - b for s, b in zip(two_servers, before, strict=True)]
    assert min(gained) >= 4, gained  # round robin: about half each (12 clips of one window)


def test_a_server_stopped_mid_run_costs_no_request_and_takes_calls_again_once_restarted(two_servers):
    first, second = two_servers
    urls = f"{first.grpc_url},{second.grpc_url}"
    clips = _clips(40)
    done = 0
    with SerClient(urls, model=MODEL, retry=RETRY, balance=BALANCE) as client:
        stopper = None
        results = []
        for result in client.classify_many(clips, sample_rate=16_000, concurrency=4):
            results.append(result)
            done += 1
            if done == 8:  # stop (SIGTERM: models unloaded, then the port closed) while requests are in flight
                stopper = threading.Thread(target=second.stop)
                stopper.start()
        stopper.join()
        assert [r.error for r in results if not r.ok] == []
        assert not second.is_running()

        second.start()
        before = _successes(second)
        results = list(client.classify_many(clips[:10], sample_rate=16_000, concurrency=2))
        assert all(r.ok for r in results)
        time.sleep(BALANCE.down_for_s)  # then one call probes the restarted server, and it takes calls again
        results = list(client.classify_many(clips[:10], sample_rate=16_000, concurrency=2))
        assert all(r.ok for r in results)
    assert _successes(second) - before >= 3


def test_async_client_spreads_over_both_servers(two_servers):
    import asyncio

    urls = ",".join(s.grpc_url for s in two_servers)
    before = [_successes(s) for s in two_servers]

    async def run():
        async with AsyncSerClient(urls, model=MODEL, balance=BALANCE) as client:
            return await client.classify_many(_clips(8), sample_rate=16_000, concurrency=2)

    assert all(r.ok for r in asyncio.run(run()))
    gained = [_successes(s) - b for s, b in zip(two_servers, before, strict=True)]
    assert min(gained) >= 2, gained


def test_a_dns_name_reaches_the_server_it_resolves_to(two_servers):
    server = two_servers[0]
    with SerClient(f"dns:///localhost:{server.grpc_port}", model=MODEL) as client:
        assert f"127.0.0.1:{server.grpc_port}" in client.endpoints
        assert client.classify(_clips(1)[0], sample_rate=16_000).label


def test_a_server_without_the_model_passes_its_calls_to_the_other(two_servers):
    """A replica that is shutting down unloads its models first: its NOT_FOUND moves the call on."""
    import tritonclient.grpc as grpcclient

    first, second = two_servers
    admin = grpcclient.InferenceServerClient(second.grpc_url)
    with SerClient(f"{first.grpc_url},{second.grpc_url}", model=MODEL, retry=RETRY, balance=BALANCE) as client:
        admin.unload_model(MODEL)
        try:
            results = list(client.classify_many(_clips(8), sample_rate=16_000, concurrency=2))
        finally:
            admin.load_model(MODEL)
            admin.close()
    assert [r.error for r in results if not r.ok] == []


def test_a_replica_that_appears_under_the_name_takes_calls_without_a_restart(two_servers):
    first, second = two_servers
    registry = {"replicas:8001": [first.grpc_url]}  # what the name resolves to, as DNS would answer it
    balance = BalanceOptions(down_for_s=0.5, resolve_every_s=0.5, resolver=lambda name: registry[name])
    before = _successes(second)
    with SerClient("dns:///replicas:8001", model=MODEL, balance=balance) as client:
        assert client.endpoints == [first.grpc_url]
        assert all(r.ok for r in client.classify_many(_clips(4), sample_rate=16_000, concurrency=2))
        assert _successes(second) == before
        registry["replicas:8001"] = [first.grpc_url, second.grpc_url]  # a new replica becomes ready
        time.sleep(balance.resolve_every_s)
        assert all(r.ok for r in client.classify_many(_clips(8), sample_rate=16_000, concurrency=2))
        assert client.endpoints == [first.grpc_url, second.grpc_url]
    assert _successes(second) - before >= 3
