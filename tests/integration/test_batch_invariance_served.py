"""A window's served answer does not depend on the other callers' windows Triton batches it with.

Each round sends one quiet window and ``max_batch_size - 1`` loud windows of other content as
concurrent single-window requests, so the dynamic batcher merges them into one execution, and
compares the quiet window's probabilities with those it got when sent alone, on both repository
runtimes (``batching_server``: the portable python-backend model and Triton's own ONNX Runtime backend).
Tolerances per variant as in tests/unit/test_batch_invariance.py.
"""

from __future__ import annotations

import queue

import numpy as np
import pytest

from tests.helpers import quiet_and_loud_windows

W = 16_000
MAX_BATCH = 8
ROUNDS = 4
#: Max |Δprobability| between a window served alone and batched, per served model.
BATCH_ATOL = {"ser_fp32": 1e-5, "ser_int8": 1e-5}


@pytest.fixture
def batching_server(runtime_server):
    """A started server of each runtime whose ``ser_*`` models batch dynamically (``max_batch_size`` 8, 2 ms queue delay)."""
    return runtime_server


def _inputs(grpcclient, x, n):
    inputs = [grpcclient.InferInput("waveform", [1, W], "FP32"), grpcclient.InferInput("num_samples", [1, 1], "INT64")]
    inputs[0].set_data_from_numpy(np.ascontiguousarray(x[None]))
    inputs[1].set_data_from_numpy(np.ascontiguousarray(n[None]))
    return inputs


def _counts(client, model, *, settle_s: float = 5.0):
    """``(successful requests, executions)`` once the statistics stop changing.

    The python backend reports them just after it responds.
    """
    import time

    def read():
        stats = [s for s in client.get_inference_statistics(model, as_json=True)["model_stats"] if s["version"] == "1"][0]
        return int(stats["inference_stats"]["success"]["count"]), int(stats["execution_count"])

    last, deadline = read(), time.perf_counter() + settle_s
    while time.perf_counter() < deadline:
        time.sleep(0.3)
        now = read()
        if now == last:
            break
        last = now
    return last


@pytest.mark.parametrize("model", sorted(BATCH_ATOL))
def test_a_window_served_among_louder_callers_gets_the_answer_it_gets_alone(batching_server, model):
    import tritonclient.grpc as grpcclient

    (qx, qn), (lx, ln) = quiet_and_loud_windows(W, quiet=2, loud=MAX_BATCH - 1, seed=1)
    client = grpcclient.InferenceServerClient(batching_server.grpc_url)
    try:
        alone = [client.infer(model, _inputs(grpcclient, qx[i], qn[i])).as_numpy("probabilities")[0] for i in range(len(qx))]
        requests0, executions0 = _counts(client, model)
        worst, sent = 0.0, 0
        for r in range(ROUNDS):
            i = r % len(qx)
            done: queue.Queue = queue.Queue()
            order = [("loud", k) for k in range(MAX_BATCH - 1)]
            order.insert(r % MAX_BATCH, ("quiet", i))  # the quiet window at a different position each round
            for kind, k in order:
                x, n = (qx[k], qn[k]) if kind == "quiet" else (lx[k], ln[k])
                client.async_infer(model, _inputs(grpcclient, x, n),
                                   callback=lambda result, error, kind=kind, done=done: done.put((kind, result, error)))
            sent += len(order)
            for _ in order:
                kind, result, error = done.get(timeout=60)
                assert error is None, error
                if kind == "quiet":
                    worst = max(worst, float(np.abs(result.as_numpy("probabilities")[0] - alone[i]).max()))
        requests, executions = (a - b for a, b in zip(_counts(client, model), (requests0, executions0), strict=True))
    finally:
        client.close()
    print(f"\n{model}: {sent} requests in {executions} executions, max |Δp| alone vs batched {worst:.2e}")
    assert executions < requests / 2, f"{requests} requests ran in {executions} executions: too few were batched to test"
    assert worst <= BATCH_ATOL[model], f"{model}: a served window's answer moved {worst:.3g} with its batch's company"
