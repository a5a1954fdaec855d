"""The path `make demo` takes, end to end, with its training shortened (ser/demo.py).

Synthetic RAVDESS-layout corpus -> the demo recipe's training -> export with the
automatic int8 choice, checked on this host's CPU class and on the emulated AVX2 class
where qemu is present -> repositories -> the real tritonserver -> held-out clips
classified -> a short Locust run. A model trained this way once failed the int8 check
on one kind of CPU only; this runs the same steps on whatever CPU the suite has.
"""

from __future__ import annotations

import io
import re

import pytest

#: Training steps here (the demo recipe takes more; the path is the same).
STEPS = 300


@pytest.mark.slow
def test_the_demo_path_trains_exports_int8_verified_on_both_cpu_classes_and_serves_every_held_out_clip(tmp_path):
    from export.cpu_class import cpu_class
    from export.isa_check import emulator_command
    from export.quantize import INT8_PRESET_ORDER, integer_weights
    from export.recipe import ExportRecord
    from ser.demo import DemoConfig, run_demo

    emulated = emulator_command("avx2") is not None
    config = DemoConfig(workdir=tmp_path / "demo", repository=tmp_path / "repo", max_steps=STEPS, loadtest_s=2,
                        loadtest_users=4, verify_cpu_classes=("avx2",) if emulated else ())
    out = io.StringIO()
    assert run_demo(config, out=out) == 0, out.getvalue()[-3000:]
    text = out.getvalue()

    recipe = ExportRecord.read(tmp_path / "demo" / "export" / "int8" / "recipe.json")
    attempts = recipe.options["preset_selection"]
    assert recipe.preset in INT8_PRESET_ORDER and attempts[-1] == {**attempts[-1], "preset": recipe.preset, "passed": True}
    assert [a["preset"] for a in attempts] == list(INT8_PRESET_ORDER[:len(attempts)])  # tried in the stated order
    assert all(a["refused_because"] for a in attempts[:-1])
    classes = recipe.contract.extra["verified_cpu_classes"].split(",")
    assert classes == list(dict.fromkeys([cpu_class(), *(["avx2"] if emulated else [])]))
    assert integer_weights(tmp_path / "demo" / "export" / "int8" / "model.onnx").avx2_exact
    served = (tmp_path / "repo" / "portable" / "ser_int8" / "config.pbtxt").read_text()
    assert f'string_value: "{",".join(classes)}"' in served

    accuracy = re.search(r"held-out accuracy: (\d+)/(\d+)", text)
    assert accuracy and int(accuracy.group(2)) == 120, text[-2000:]  # 2 held-out actors x 60 clips, every one served
    assert int(accuracy.group(1)) / 120 > 2 / 8, text[-2000:]  # well above chance (1/8) after a short training
    assert "0 failures" in text and "no process or /dev/shm region left behind" in text
