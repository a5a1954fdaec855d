"""ONNX Runtime sessions opened as the served model opens them: one factory for every in-process run.

The portable repository's python-backend model (``export/served/window_model.py``,
copied into each model folder and therefore self-contained) runs ONNX Runtime on
the CPU with these options: intra-op threads from the config parameter
``intra_op_thread_count`` (default ``min(4, cpu_count)``), one inter-op thread,
sequential execution, every graph optimisation. :func:`open_session` opens a
session the same way, so the export parity checks, the quantization report,
``ser evaluate --onnx``, ``ser bench`` and the load test's in-process baseline
measure what the server runs; ``tests/unit/test_onnx_session.py`` fails if the
two drift apart.

It lives in ``client/`` because every part may import ``client/``. The client
itself never calls it: onnxruntime comes with the ``full`` extra and is imported
only when a session is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

#: ONNX Runtime inter-op threads of the served model: the graph is one chain, parallel branches buy nothing.
INTER_OP_THREADS = 1
#: The most intra-op threads a session takes when none are given (the served model's default).
MAX_DEFAULT_INTRA_OP_THREADS = 4
#: ONNX Runtime's log level for these sessions: 3 = errors only.
LOG_SEVERITY_LEVEL = 3


def default_intra_op_threads() -> int:
    """Intra-op threads when none are given: ``min(4, cpu_count)``, at least 1."""
    return max(1, min(MAX_DEFAULT_INTRA_OP_THREADS, os.cpu_count() or 1))


def session_options(*, intra_op_threads: int | None = None):
    """The served model's ``onnxruntime.SessionOptions``.

    Args:
        intra_op_threads: threads of one operator (``None`` or 0: :func:`default_intra_op_threads`).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra_op_threads or default_intra_op_threads())
    options.inter_op_num_threads = INTER_OP_THREADS
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = LOG_SEVERITY_LEVEL
    return options


def open_session(
    path: str | Path,
    *,
    intra_op_threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
):
    """An ``onnxruntime.InferenceSession`` of ``path`` with the served model's options.

    Args:
        path: the ``.onnx`` file.
        intra_op_threads: threads of one operator (``None`` or 0: :func:`default_intra_op_threads`).
        providers: execution providers in order of preference (the served model: CPU only;
            ``("CUDAExecutionProvider", "CPUExecutionProvider")`` on a GPU host).

    Returns:
        The session. ONNX Runtime's own exceptions pass through: callers turn them into
        the bundle's typed errors, naming the file.
    """
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(intra_op_threads=intra_op_threads),
                                providers=list(providers))
