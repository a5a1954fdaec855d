"""The endpoint pool of a client with several servers: parsing, turns, setting aside, probing, DNS changes."""

from __future__ import annotations

import pytest

from client.endpoints import BalanceOptions, EndpointPool, parse_endpoints, resolve
from client.errors import ConfigError, ServerUnavailableError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_parse_one_list_and_dns():
    assert parse_endpoints("grpc://a:1", protocol="grpc") == (("a:1",), None)
    assert parse_endpoints("a:1, b:2,a:1", protocol="grpc") == (("a:1", "b:2"), None)
    assert parse_endpoints("dns:///svc.ns:8001", protocol="grpc") == ((), "svc.ns:8001")


@pytest.mark.parametrize("url", ["a:1,,b:2", "a:1,b", "dns:///svc", "dns://auth/svc:1", "dns:///a:1,b:2", "https://a:1"])
def test_bad_urls_are_config_errors_naming_the_url(url):
    with pytest.raises(ConfigError, match="url="):
        parse_endpoints(url, protocol="grpc")


def test_balance_options_check_themselves():
    with pytest.raises(ConfigError, match="down_for_s"):
        BalanceOptions(down_for_s=0)
    with pytest.raises(ConfigError, match="resolve_every_s"):
        BalanceOptions(resolve_every_s=float("inf"))


def test_round_robin_over_the_endpoints_up():
    pool = EndpointPool("a:1,b:2,c:3")
    assert pool.balanced
    assert [pool.pick() for _ in range(4)] == [("a:1", False), ("b:2", False), ("c:3", False), ("a:1", False)]


def test_failed_endpoint_sits_out_then_one_caller_probes_it():
    clock = Clock()
    pool = EndpointPool("a:1,b:2", options=BalanceOptions(down_for_s=2.0), clock=clock)
    pool.failed("a:1")
    assert {pool.pick()[0] for _ in range(5)} == {"b:2"}
    clock.now += 2.0
    assert pool.pick() == ("a:1", True)  # the probe goes to one caller...
    assert pool.pick() == ("b:2", False)  # ...the others keep to the endpoints up meanwhile
    pool.recovered("a:1")
    assert {pool.pick()[0] for _ in range(4)} == {"a:1", "b:2"}


def test_a_failed_probe_sets_the_endpoint_aside_again():
    clock = Clock()
    pool = EndpointPool("a:1,b:2", options=BalanceOptions(down_for_s=1.0), clock=clock)
    pool.failed("a:1")
    clock.now += 1.0
    assert pool.pick() == ("a:1", True)
    pool.failed("a:1")
    assert pool.pick() == ("b:2", False)
    assert not pool.is_up("a:1")


def test_with_every_endpoint_down_the_call_goes_to_the_first_set_aside():
    clock = Clock()
    pool = EndpointPool("a:1,b:2", options=BalanceOptions(down_for_s=5.0), clock=clock)
    pool.failed("b:2")
    clock.now += 1
    pool.failed("a:1")
    assert pool.pick() == ("b:2", False)
    assert pool.up() == []


def test_one_endpoint_always_takes_the_call():
    pool = EndpointPool("a:1")
    pool.failed("a:1")
    assert not pool.balanced
    assert pool.pick() == ("a:1", False)


def test_dns_name_is_resolved_again_and_picks_up_new_replicas():
    clock = Clock()
    answers = {"svc:8001": ["10.0.0.1:8001"]}
    pool = EndpointPool("dns:///svc:8001", options=BalanceOptions(resolve_every_s=10.0), resolver=lambda t: answers[t], clock=clock)
    assert pool.spec == "dns:///svc:8001"
    pool.refresh(force=True)
    assert pool.addresses() == ["10.0.0.1:8001"]
    answers["svc:8001"] = ["10.0.0.1:8001", "10.0.0.2:8001"]
    clock.now += 5
    assert {pool.pick()[0] for _ in range(4)} == {"10.0.0.1:8001"}  # not due yet
    clock.now += 5
    assert {pool.pick()[0] for _ in range(4)} == {"10.0.0.1:8001", "10.0.0.2:8001"}
    answers["svc:8001"] = ["10.0.0.2:8001"]
    clock.now += 10
    assert pool.pick()[0] == "10.0.0.2:8001"
    assert pool.take_removed() == ["10.0.0.1:8001"]
    answers["svc:8001"] = []  # a resolution that finds nothing keeps what was known
    clock.now += 10
    assert pool.pick()[0] == "10.0.0.2:8001"


def test_a_name_that_never_resolves_is_unavailable():
    pool = EndpointPool("dns:///nowhere.invalid:8001", resolver=lambda t: [])
    with pytest.raises(ServerUnavailableError, match="nowhere.invalid:8001"):
        pool.refresh(force=True)


def test_resolve_localhost():
    assert "127.0.0.1:8001" in resolve("localhost:8001")
    assert resolve("nowhere.invalid:1") == []
