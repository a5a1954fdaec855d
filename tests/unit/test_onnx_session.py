"""The shared ONNX Runtime session factory opens sessions exactly as the served python-backend model does."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def identity_onnx(tmp_path_factory):
    """A real one-node ONNX file: ``y = Identity(x)``, x float32 ``[batch, 4]``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx-session") / "identity.onnx"
    onnx.save(model, path)
    return path


def _served_settings(session) -> dict:
    options = session.get_session_options()
    return {
        "intra_op_num_threads": options.intra_op_num_threads,
        "inter_op_num_threads": options.inter_op_num_threads,
        "execution_mode": options.execution_mode,
        "graph_optimization_level": options.graph_optimization_level,
        "providers": session.get_providers(),
    }


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_the_factory_opens_sessions_with_the_served_models_options(identity_onnx, threads):
    from client.onnx_session import open_session
    from export.served.window_model import make_session

    factory = open_session(identity_onnx, intra_op_threads=threads)
    served = make_session(identity_onnx, intra_op_threads=threads)
    assert _served_settings(factory) == _served_settings(served)
    assert factory.get_providers() == ["CPUExecutionProvider"]


def test_the_default_thread_count_is_the_served_default():
    from client.onnx_session import default_intra_op_threads
    from export.served.window_model import default_threads

    assert default_intra_op_threads() == default_threads()
    assert 1 <= default_intra_op_threads() <= 4


def test_a_session_from_the_factory_runs_the_graph(identity_onnx):
    import numpy as np

    from client.onnx_session import open_session

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (y,) = open_session(identity_onnx, intra_op_threads=1).run(None, {"x": x})
    assert np.array_equal(y, x)


def test_the_served_model_reads_the_thread_parameter_the_repository_writer_sets():
    """The portable model file keeps its own copy of the parameter name (it runs without the bundle)."""
    from export.repository.names import THREADS_PARAMETER
    from export.served.window_model import THREADS_PARAMETER as SERVED

    assert SERVED == THREADS_PARAMETER == "intra_op_thread_count"
