"""Option values given as text: one check per kind, the same message from every parser that uses it."""

from __future__ import annotations

import argparse

import pytest

from client import option_values as values
from client.errors import ConfigError


@pytest.mark.parametrize("check, text, expected", [
    (values.positive_int, "3", 3),
    (values.non_negative_int, "0", 0),
    (values.positive_float, "0.5", 0.5),
    (values.non_negative_float, "0", 0.0),
    (values.seconds, "2.5", 2.5),
    (values.csv_list, " a, b,, ", ("a", "b")),
    (values.csv_ints, "1,8", (1, 8)),
    (values.csv_positive_ints, "1,4,16", (1, 4, 16)),
    (values.one_of(("grpc", "http")), "http", "http"),
])
def test_a_good_value_is_parsed(check, text, expected) -> None:
    assert check(text) == expected


@pytest.mark.parametrize("check, text, message", [
    (values.positive_int, "x", "'x': expected an integer"),
    (values.positive_int, "0", "'0': must be >= 1"),
    (values.non_negative_int, "-1", "'-1': must be >= 0"),
    (values.positive_float, "0", "'0': must be a finite number > 0"),
    (values.positive_float, "inf", "'inf': must be a finite number > 0"),
    (values.positive_float, "nan", "'nan': must be a finite number > 0"),
    (values.non_negative_float, "-0.1", "'-0.1': expected a finite number >= 0"),
    (values.non_negative_float, "nan", "'nan': expected a finite number >= 0"),
    (values.seconds, "-2", "'-2': expected a finite number of seconds >= 0"),
    (values.seconds, "soon", "'soon': expected a finite number of seconds >= 0"),
    (values.csv_ints, "1,a", "'1,a': expected comma-separated integers, e.g. 1,8"),
    (values.csv_positive_ints, "1,0", "'0': must be >= 1"),
    (values.csv_positive_ints, ",", "',': expected comma-separated integers >= 1, e.g. 1,4,16"),
    (values.one_of(("grpc", "http")), "udp", "'udp': expected one of ['grpc', 'http']"),
])
def test_a_bad_value_names_the_text_and_what_was_expected(check, text, message) -> None:
    with pytest.raises(ConfigError) as caught:
        check(text)
    assert str(caught.value) == message


def test_arg_type_turns_the_error_into_argparses_usage_error() -> None:
    parser = argparse.ArgumentParser(prog="probe", exit_on_error=False)
    parser.add_argument("--n", type=values.arg_type(values.positive_int))
    assert parser.parse_args(["--n", "4"]).n == 4
    with pytest.raises(argparse.ArgumentError, match="'0': must be >= 1"):
        parser.parse_args(["--n", "0"])
    assert values.arg_type(values.seconds).__name__ == "seconds"


def test_the_cli_and_the_client_bench_parse_with_these_checks() -> None:
    from client.bench import ClientBenchConfig, add_arguments, config_from_args
    from ser import arg_types

    for name in ("positive_int", "non_negative_int", "non_negative_float", "seconds", "csv_list", "csv_ints"):
        parse = getattr(arg_types, name)
        assert parse.__name__ == name
    with pytest.raises(argparse.ArgumentTypeError, match="'-1': expected a finite number of seconds >= 0"):
        arg_types.seconds("-1")
    args = add_arguments(argparse.ArgumentParser()).parse_args(["--concurrency", "2,4"])
    assert config_from_args(args) == ClientBenchConfig(concurrencies=(2, 4))
    assert config_from_args(add_arguments(argparse.ArgumentParser()).parse_args([])) == ClientBenchConfig()


@pytest.mark.parametrize("argv, message", [
    (["--max-p95-ms", "-5"], "max_p95_ms='-5'"),
    (["--max-failure-ratio", "2"], "max_failure_ratio='2': must be a ratio in [0, 1]"),
    (["--users", "1,0"], "'0': must be >= 1"),
])
def test_ser_loadtest_refuses_a_bad_limit_as_the_locustfile_does(argv, message, capsys) -> None:
    from ser.cli import build_parser

    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["loadtest", "--url", "127.0.0.1:1", *argv])
    assert caught.value.code == 2 and message in capsys.readouterr().err


def test_ser_loadtest_options_default_to_the_load_tests_config() -> None:
    from dataclasses import fields

    from loadtest.run_config import LoadTestConfig
    from ser.cli import build_parser

    args = build_parser().parse_args(["loadtest", "--url", "127.0.0.1:1"])
    defaults = {f.name: f.default for f in fields(LoadTestConfig)}
    assert (args.model, args.protocol, tuple(args.users), args.run_time, args.warmup, args.compare_users, args.out) == (
        defaults["model"], defaults["protocol"], defaults["users"], defaults["run_time_s"], defaults["warmup_s"],
        defaults["compare_users"], defaults["out_dir"])


def test_a_port_is_1_to_65535() -> None:
    assert values.port("8001") == 8001
    with pytest.raises(ConfigError, match="'70000': a port is at most 65535"):
        values.port("70000")
    with pytest.raises(ConfigError, match="'0': must be >= 1"):
        values.port("0")
