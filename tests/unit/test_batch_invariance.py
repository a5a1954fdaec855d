"""Served variants answer a window the same whoever else is in its batch (in-process ONNX Runtime).

Triton's dynamic batcher stacks the windows of different callers into one tensor; these tests stack a
quiet window with up to ``max_batch_size - 1`` loud windows of other content and compare its
probabilities with those it gets alone. Tolerances per variant: fp32 differs only by float summation
order (~1e-7 measured), int8 (per-row activation scales) the same; both must stay within 1e-5.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM, OUTPUT_PROBABILITIES
from tests.helpers import quiet_and_loud_windows

W = 16_000
MAX_BATCH = 8
#: Max |Δprobability| between a window alone and batched, per served variant.
BATCH_ATOL = {"fp32": 1e-5, "int8": 1e-5}


def _probs(session, x, n):
    return session.run([OUTPUT_PROBABILITIES], {INPUT_WAVEFORM: x, INPUT_NUM_SAMPLES: n})[0]


@pytest.mark.parametrize("variant", sorted(BATCH_ATOL))
def test_a_window_gets_the_same_probabilities_alone_and_batched_with_louder_windows(exported_tiny, variant):
    from client.onnx_session import open_session

    session = open_session(exported_tiny / variant / "model.onnx", intra_op_threads=1)
    (qx, qn), (lx, ln) = quiet_and_loud_windows(W, quiet=4, loud=MAX_BATCH - 1)
    worst = 0.0
    for i in range(len(qx)):
        alone = _probs(session, qx[i : i + 1], qn[i : i + 1])[0]
        for company in (1, 3, MAX_BATCH - 1):  # batches of 2, 4 and max_batch_size, the window at every position
            for pos in (0, company):
                x = np.insert(lx[:company], pos, qx[i], axis=0)
                n = np.insert(ln[:company], pos, qn[i], axis=0)
                batched = _probs(session, x, n)[pos]
                worst = max(worst, float(np.abs(batched - alone).max()))
    print(f"\n{variant}: max |Δp| alone vs batched {worst:.2e}")
    assert worst <= BATCH_ATOL[variant], f"{variant}: a window's answer moved {worst:.3g} with its batch's company"


def test_the_export_gate_refuses_a_model_whose_answers_depend_on_the_batch(exported_tiny, tmp_path):
    from export.errors import BatchDependenceError
    from export.parity import ParityConfig, check_variant_agreement
    from export.quantize import QUANTIZATION_PRESETS, quantize_int8

    fp32 = exported_tiny / "fp32" / "model.onnx"
    per_tensor = quantize_int8(fp32, tmp_path / "per-tensor.onnx", config=QUANTIZATION_PRESETS["dynamic-int8-convmatmul-qattention"])
    (qx, qn), (lx, ln) = quiet_and_loud_windows(W, quiet=4, loud=4)
    windows = [(np.concatenate([qx, lx]), np.concatenate([qn, ln]))]
    small = ParityConfig(prob_atol=0.5, min_label_agreement=0.0)  # only batch dependence can fail here
    with pytest.raises(BatchDependenceError, match=r"answer differently alone and batched with 7 others"):
        check_variant_agreement(fp32, per_tensor, window_samples=W, config=small, batches=windows)
    # The same model served unbatched passes, and the batch-invariant default passes batched.
    check_variant_agreement(fp32, per_tensor, window_samples=W, batches=windows,
                            config=ParityConfig(prob_atol=0.5, min_label_agreement=0.0, max_batch_size=1))
    report = check_variant_agreement(fp32, exported_tiny / "int8" / "model.onnx", window_samples=W, config=small,
                                     batches=windows)
    assert report.windows == 8 and report.batch_sizes == (1, 8) and report.max_batch_dependence <= 1e-5


def test_quantizing_does_not_print_onnx_runtimes_pre_processing_advice(exported_tiny, tmp_path, capfd, caplog):
    from export.quantize import PREPROCESS_ADVICE, QUANTIZATION_PRESETS, quantize_int8

    with caplog.at_level(logging.INFO):
        quantize_int8(exported_tiny / "fp32" / "model.onnx", tmp_path / "int8.onnx",
                      config=QUANTIZATION_PRESETS["dynamic-int8-matmul"])
        logging.getLogger().warning("a warning of someone else")  # the root logger still passes other messages
    out, err = capfd.readouterr()
    assert "pre-processing" not in out + err and "pre-processing" not in caplog.text
    assert PREPROCESS_ADVICE.startswith("Please consider") and "a warning of someone else" in caplog.text


def test_with_held_out_clips_the_gate_scores_whole_clips_and_refuses_a_flipped_clip(exported_tiny):
    """Clips are scored as serving scores them.

    A variant that flips one clip of eight fails the clip agreement (≥ 0.99) and the accuracy
    bound (≤ 0.5 points below fp32), by name.
    """
    from export.errors import ParityError
    from export.gate_windows import clip_probabilities
    from export.parity import ParityConfig, compare_variants, run_outputs, variant_runs

    fp32 = exported_tiny / "fp32" / "model.onnx"
    (qx, qn), (lx, ln) = quiet_and_loud_windows(W, quiet=8, loud=8, seed=3)
    windows = [(np.concatenate([qx, lx]), np.concatenate([qn, ln]))]
    clip_of_window = np.arange(16) // 2  # eight clips of two windows
    config = ParityConfig(prob_atol=1.0, min_label_agreement=0.0)
    runs, _ = variant_runs(W, config, windows)
    outputs = run_outputs(fp32, runs)
    alone = np.concatenate([p for _, p in outputs[:16]])
    counts = windows[0][1]
    labels = clip_probabilities(alone, counts, clip_of_window, 8).argmax(1)  # fp32 is right on every clip
    same = compare_variants(fp32, fp32, window_samples=W, config=config, batches=windows, clips=(clip_of_window, labels))
    assert same.passed and (same.clips, same.clip_agreement, same.accuracy, same.reference_accuracy) == (8, 1.0, 1.0, 1.0)
    flipped = [(lg, np.roll(pr, 1, axis=1) if j in (0, 1) else pr) for j, (lg, pr) in enumerate(outputs)]  # clip 0, alone
    report = compare_variants(fp32, fp32, window_samples=W, config=config, batches=windows, clips=(clip_of_window, labels),
                              candidate_outputs=flipped)
    assert report.clip_agreement == 7 / 8 and report.accuracy == 7 / 8
    assert any("clip agreement 0.875 < 0.99 over 8 held-out clips" in m for m in report.mismatches)
    assert any("12.5 points lower > 0.5" in m for m in report.mismatches)
    assert isinstance(report.error(), ParityError)
