"""Bad ``ser bench`` configurations: a typed ConfigError that quotes the offending value."""

from __future__ import annotations

import pytest

from client.errors import ConfigError


@pytest.mark.parametrize(
    ("options", "quoted"),
    [
        (dict(shapes=("tiny", "huge")), "'huge'"),
        (dict(shapes=()), "shapes=()"),
        (dict(runners=("ort-fp32", "tensorrt-int4")), "'tensorrt-int4'"),
        (dict(runners=("ort-int8:no-such-preset",)), "'no-such-preset'"),
        (dict(runners=("torch-fp32:fast",)), "'torch-fp32:fast'"),
        (dict(runners=()), "runners=()"),
        (dict(batch_sizes=(1, 0)), "batch size 0"),
        (dict(batch_sizes=(-3,)), "batch size -3"),
        (dict(clip_seconds=-1.0), "clip_seconds=-1.0"),
        (dict(clip_seconds=0), "clip_seconds=0"),
        (dict(clip_seconds=0.001), "W=16"),
        (dict(sample_rate=0), "sample_rate=0"),
        (dict(warmup=-1), "warmup=-1"),
        (dict(repeat=0), "repeat=0"),
        (dict(budget_s=-2.0), "budget_s=-2.0"),
        (dict(threads=0), "threads=0"),
        (dict(device="tpu"), "'tpu'"),
        (dict(num_labels=1), "num_labels=1"),
    ],
)
def test_a_bad_bench_config_raises_a_config_error_naming_the_value(options, quoted):
    from export.bench import BenchConfig

    with pytest.raises(ConfigError) as info:
        BenchConfig(**{"shapes": ("tiny",), **options})
    assert quoted in str(info.value)


def test_an_unknown_shape_error_lists_the_known_shapes():
    from export.bench import BenchConfig

    with pytest.raises(ConfigError, match="xlsr-large"):
        BenchConfig(shapes=("xlsr",))


def test_ort_int8_expands_to_every_preset_and_default_to_the_default_preset():
    from export.bench import BenchConfig
    from export.quantize import DEFAULT_PRESET, QUANTIZATION_PRESETS

    every = BenchConfig(shapes=("tiny",), runners=("ort-int8",))
    assert every.runners == tuple(f"ort-int8:{p}" for p in QUANTIZATION_PRESETS)
    one = BenchConfig(shapes=("tiny",), runners=("ort-fp32", "ort-int8:default", f"ort-int8:{DEFAULT_PRESET}"))
    assert one.runners == ("ort-fp32", f"ort-int8:{DEFAULT_PRESET}")


def test_the_command_line_prints_one_error_line_and_exits_2(capsys, tmp_path):
    from ser.cli import main

    code = main(["bench", "--shape", "tiny", "--batch-sizes", "0", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "batch size 0" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_the_command_line_rejects_non_integer_batch_sizes(capsys):
    from ser.cli import main

    with pytest.raises(SystemExit) as info:
        main(["bench", "--batch-sizes", "1,eight"])
    assert info.value.code == 2
    assert "'1,eight'" in capsys.readouterr().err


def test_a_runner_that_fails_mid_run_leaves_the_rounds_and_the_others_go_on():
    from export.bench import BenchConfig
    from export.bench.run import time_interleaved as _time_interleaved

    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 3:  # warm-up, first timed call, then it breaks
            raise RuntimeError("session lost")

    config = BenchConfig(shapes=("tiny",), runners=("ort-fp32",), warmup=1, repeat=4, threads=1)
    times, failed = _time_interleaved({"flaky": flaky, "steady": lambda: None, "broken": lambda: 1 / 0}, config)
    assert set(times) == {"steady"} and len(times["steady"]) == 4
    assert isinstance(failed["flaky"], RuntimeError) and isinstance(failed["broken"], ZeroDivisionError)
