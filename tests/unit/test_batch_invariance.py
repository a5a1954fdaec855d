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
