"""The export's checks run the fp32 reference over the gate's batches once, and never answer another model from it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.helpers import quiet_and_loud_windows

W = 16_000


@pytest.fixture()
def counted_runs(monkeypatch):
    """Every ``export.parity.run_outputs`` call, as ``(file name, batch sizes)``; the real function still runs."""
    import export.parity as parity
    from export.reference_outputs import forget

    forget()
    calls: list[tuple[str, tuple[int, ...]]] = []
    real = parity.run_outputs

    def counting(path, batches, **kwargs):
        batches = list(batches)
        calls.append((str(path), tuple(len(b[0]) for b in batches)))
        return real(path, batches, **kwargs)

    monkeypatch.setattr(parity, "run_outputs", counting)
    yield calls
    forget()


def _windows():
    (qx, qn), (lx, ln) = quiet_and_loud_windows(W, quiet=4, loud=4)
    return [(np.concatenate([qx, lx]), np.concatenate([qn, ln]))]


def test_fp32_runs_the_mixed_batches_once_for_its_own_check_and_every_variant_check_after(exported_tiny, tmp_path, counted_runs):
    from export.parity import ParityConfig, check_variant_agreement

    fp32, int8 = exported_tiny / "fp32" / "model.onnx", exported_tiny / "int8" / "model.onnx"
    config = ParityConfig(prob_atol=0.5, min_label_agreement=0.0)
    windows = _windows()
    own = check_variant_agreement(fp32, fp32, window_samples=W, config=config, batches=windows)
    first = check_variant_agreement(fp32, int8, window_samples=W, config=config, batches=windows)
    again = check_variant_agreement(fp32, int8, window_samples=W, config=config, batches=windows)
    mixed, alone = (8,), (1,) * 8
    assert counted_runs == [(str(fp32), mixed), (str(fp32), alone), (str(int8), alone + mixed), (str(int8), alone + mixed)]
    assert own.max_batch_dependence <= 1e-5
    assert first.max_abs_prob_diff == again.max_abs_prob_diff and first.max_abs_logit_diff == again.max_abs_logit_diff


def test_other_windows_or_a_reference_rewritten_in_place_are_run_again(exported_tiny, tmp_path, counted_runs):
    from export.parity import ParityConfig, check_variant_agreement

    fp32, int8 = tmp_path / "fp32.onnx", exported_tiny / "int8" / "model.onnx"
    shutil.copyfile(exported_tiny / "fp32" / "model.onnx", fp32)
    config = ParityConfig(prob_atol=1.0, min_label_agreement=0.0)
    windows = _windows()
    near = check_variant_agreement(fp32, int8, window_samples=W, config=config, batches=windows)
    quieter = [(windows[0][0] * 0.5, windows[0][1])]
    check_variant_agreement(fp32, int8, window_samples=W, config=config, batches=quieter)
    shutil.copyfile(int8, fp32)  # same path, another model: its answers are int8's, so the drift is gone
    same = check_variant_agreement(fp32, int8, window_samples=W, config=config, batches=windows)
    assert [name for name, _ in counted_runs].count(str(fp32)) == 3
    assert near.max_abs_prob_diff > 0 and same.max_abs_prob_diff == 0.0
