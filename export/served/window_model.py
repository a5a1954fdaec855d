"""One generic Triton python-backend model: ONNX Runtime over the ``model.onnx`` beside it.

The repository writer copies this file to ``<repo>/<model>/1/model.py`` next to
``1/model.onnx`` (the *portable* runtime, for tritonservers with only the python
backend). It depends only on numpy, onnxruntime,
``triton_python_backend_utils`` (importable inside the server only) and
``cpu_class.py``, which the writer copies beside it, so the copied files work on their own.

* ``initialize()`` reads the tensor names, dtypes (``pb_utils.triton_string_to_numpy``)
  and dims from the model config, opens ``model.onnx`` with the CPU execution
  provider (``intra_op_thread_count`` config parameter, default
  ``min(4, cpu_count)``) and refuses a config whose inputs/outputs differ from
  the ONNX session's.
* ``execute(requests)`` concatenates *all* requests' inputs along the batch axis
  (one ``np.concatenate`` per input), runs *one* ``session.run``, and splits the
  outputs back: exactly one response per request. A bad request (missing
  input, wrong dtype or shape, or values the model cannot mean: ``num_samples``
  outside ``[1, W]``, NaN or Inf samples) gets ``InferenceResponse(error=TritonError(...,
  INVALID_ARG))`` naming the tensor and the reason, and does not fail the others.

The batching logic is the plain function :func:`run_batched`, testable with an
ONNX Runtime session and numpy arrays outside the server.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

try:  # only inside tritonserver's python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # unit tests, tooling
    pb_utils = None

if pb_utils is not None:  # in the server: the repository writer copied export/cpu_class.py beside this file
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cpu_class import VERIFIED_CLASSES_PARAMETER, unverified_warning
else:  # imported as export.served.window_model (tests, tooling)
    from export.cpu_class import VERIFIED_CLASSES_PARAMETER, unverified_warning

MODEL_FILENAME = "model.onnx"
#: Config parameter holding ONNX Runtime's intra-op thread count (same key as Triton's onnxruntime backend).
THREADS_PARAMETER = "intra_op_thread_count"

#: Triton config data types -> numpy (used when pb_utils is not available).
TRITON_TO_NUMPY: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}
#: ONNX Runtime type strings -> Triton config data types.
ORT_TO_TRITON = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
}


#: The input counting the valid samples of each row of :data:`SIGNAL_INPUT` (the bundle's contract;
#: this file is copied into repositories alone, so it names them instead of importing them).
LENGTH_INPUT = "num_samples"
#: The input whose rows :data:`LENGTH_INPUT` counts: ``[batch, W]``.
SIGNAL_INPUT = "waveform"


class RequestError(ValueError):
    """One request cannot be run; the others can.

    Args:
        message: what is wrong, naming the tensor.
        internal: the server failed (Triton ``INTERNAL``) rather than the request being
            invalid (``INVALID_ARG``: missing input, wrong dtype, shape or value).
    """

    def __init__(self, message: str, *, internal: bool = False) -> None:
        super().__init__(message)
        self.internal = internal


@dataclass(frozen=True)
class IOSpec:
    """One input or output as the model config declares it.

    Attributes:
        name: tensor name.
        data_type: Triton type name, e.g. ``TYPE_FP32``.
        dtype: the numpy dtype of ``data_type``.
        dims: dims *without* the batch axis; ``-1`` is a variable dim.
    """

    name: str
    data_type: str
    dtype: np.dtype
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """What the model config says about the model.

    Attributes:
        inputs: input specs in config order.
        outputs: output specs in config order.
        max_batch_size: the config's ``max_batch_size`` (> 0: inputs carry a batch axis).
        parameters: ``{key: string_value}`` of the config's ``parameters``.
    """

    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    max_batch_size: int
    parameters: Mapping[str, str]


def parse_model_config(model_config: Mapping[str, Any] | str, *, to_numpy: Callable[[str], Any] | None = None) -> ModelSpec:
    """Read tensor specs from a Triton model config in its JSON form (``args["model_config"]``).

    Args:
        model_config: the config as a dict or JSON text.
        to_numpy: Triton type name -> numpy dtype (``pb_utils.triton_string_to_numpy``
            in the server; a local table otherwise).

    Returns:
        :class:`ModelSpec`.

    Raises:
        ValueError: the config declares no batching, or an unknown data type.
    """
    config = json.loads(model_config) if isinstance(model_config, str) else model_config
    to_numpy = to_numpy or (lambda name: TRITON_TO_NUMPY[name])
    name = config.get("name", "model")
    max_batch_size = int(config.get("max_batch_size", 0))
    if max_batch_size <= 0:
        raise ValueError(f"model {name!r}: max_batch_size={max_batch_size}: this model batches requests and needs max_batch_size > 0")

    def spec(entry: Mapping[str, Any], kind: str) -> IOSpec:
        data_type = str(entry.get("data_type", ""))
        try:
            dtype = np.dtype(to_numpy(data_type))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"model {name!r}: {kind} {entry.get('name')!r} has unsupported data_type {data_type!r}") from exc
        dims = tuple(int(d) for d in entry.get("dims", []))
        return IOSpec(name=str(entry["name"]), data_type=data_type, dtype=dtype, dims=dims)

    params = {}
    for key, value in (config.get("parameters") or {}).items():
        params[key] = value.get("string_value", "") if isinstance(value, Mapping) else str(value)
    return ModelSpec(
        inputs=tuple(spec(e, "input") for e in config.get("input", [])),
        outputs=tuple(spec(e, "output") for e in config.get("output", [])),
        max_batch_size=max_batch_size,
        parameters=params,
    )


def default_threads() -> int:
    """ONNX Runtime intra-op threads when the config does not say: ``min(4, cpu_count)``."""
    return max(1, min(4, os.cpu_count() or 1))


def make_session(path: str | Path, *, intra_op_threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` (sequential execution, one inter-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra_op_threads or default_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_against_session(spec: ModelSpec, session, *, model: str = "model") -> None:
    """Refuse a config whose inputs/outputs differ from the ONNX session's.

    Checks names (as sets, both ways), data types and the dims after the batch axis.

    Raises:
        ValueError: listing every difference.
    """
    problems = []
    for kind, declared, actual in (
        ("input", spec.inputs, session.get_inputs()),
        ("output", spec.outputs, session.get_outputs()),
    ):
        onnx_by_name = {a.name: a for a in actual}
        config_names = [d.name for d in declared]
        for missing in [n for n in onnx_by_name if n not in config_names]:
            problems.append(f"ONNX {kind} {missing!r} is not declared in the config")
        for d in declared:
            a = onnx_by_name.get(d.name)
            if a is None:
                problems.append(f"config {kind} {d.name!r} does not exist in the ONNX graph (it has {sorted(onnx_by_name)})")
                continue
            onnx_type = ORT_TO_TRITON.get(a.type, a.type)
            if onnx_type != d.data_type:
                problems.append(f"{kind} {d.name!r}: config data_type {d.data_type} != ONNX {onnx_type}")
            onnx_dims = tuple(x if isinstance(x, int) else -1 for x in a.shape[1:])
            compatible = len(onnx_dims) == len(d.dims) and all(o == -1 or o == c for o, c in zip(onnx_dims, d.dims, strict=True))
            if not compatible:
                problems.append(f"{kind} {d.name!r}: config dims {list(d.dims)} != ONNX dims {list(onnx_dims)} (batch axis excluded)")
    if problems:
        raise ValueError(f"model {model!r}: config does not match model.onnx: " + "; ".join(problems))


def length_bound(spec: ModelSpec) -> int | None:
    """W, the largest valid :data:`LENGTH_INPUT` value, or None when the config has no such pair of inputs."""
    by_name = {s.name: s for s in spec.inputs}
    length, signal = by_name.get(LENGTH_INPUT), by_name.get(SIGNAL_INPUT)
    if length is None or signal is None or length.dtype.kind not in "iu" or not signal.dims or signal.dims[-1] <= 0:
        return None
    return int(signal.dims[-1])


def _rows(mask: np.ndarray, limit: int = 4) -> str:
    """``row 3`` / ``rows [0, 2, 5, ...]`` of the batch rows where ``mask`` is true."""
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)).tolist()
    if len(rows) == 1:
        return f"row {rows[0]}"
    return f"rows {rows[:limit]}{'...' if len(rows) > limit else ''}"


def _check_values(arrays: Mapping[str, np.ndarray], spec: ModelSpec) -> None:
    """Refuse values the model cannot mean: NaN/Inf in float inputs, a length outside ``[1, W]``.

    Raises:
        RequestError: naming the tensor, the offending rows and value, and the valid range.
    """
    for s in spec.inputs:
        a = arrays[s.name]
        if a.dtype.kind == "f":
            bad = ~np.isfinite(a)
            if bad.any():
                raise RequestError(
                    f"input {s.name!r} holds {int(bad.sum())} NaN or Inf value(s) in {_rows(bad)}: "
                    "only finite values have a meaning"
                )
    bound = length_bound(spec)
    if bound is not None:
        n = arrays[LENGTH_INPUT]
        bad = (n < 1) | (n > bound)
        if bad.any():
            value = int(n[bad].flat[0])
            raise RequestError(
                f"input {LENGTH_INPUT!r} = {value} in {_rows(bad)}: must be in [1, {bound}], "
                f"the valid samples of a {bound}-sample {SIGNAL_INPUT!r} row"
            )


def _check_request(arrays: Mapping[str, np.ndarray | None], spec: ModelSpec) -> int:
    """Validate one request's inputs (names, dtypes, shapes, batch, values); return its batch size.

    Raises:
        RequestError: the first problem found, naming the tensor.
    """
    batch = None
    for s in spec.inputs:
        a = arrays.get(s.name)
        if a is None:
            raise RequestError(f"missing input {s.name!r}")
        if a.dtype != s.dtype:
            raise RequestError(f"input {s.name!r} has dtype {a.dtype}, expected {s.dtype} ({s.data_type})")
        shape_ok = a.ndim == len(s.dims) + 1 and all(d == -1 or d == x for d, x in zip(s.dims, a.shape[1:], strict=True))
        if not shape_ok:
            raise RequestError(f"input {s.name!r} has shape {list(a.shape)}, expected [batch, {', '.join(map(str, s.dims))}]")
        if batch is None:
            batch = int(a.shape[0])
        elif a.shape[0] != batch:
            raise RequestError(f"input {s.name!r} has batch {a.shape[0]}, other inputs have {batch}")
    if not batch or batch > spec.max_batch_size:
        raise RequestError(f"batch size {batch} outside 1..max_batch_size={spec.max_batch_size}")
    _check_values(arrays, spec)  # type: ignore[arg-type] - every input is present here
    return batch


def run_batched(
    session, requests: Sequence[Mapping[str, np.ndarray | None]], *, spec: ModelSpec
) -> list[dict[str, np.ndarray] | RequestError]:
    """Run many requests as one batch: one concatenate per input, one ``session.run``.

    Args:
        session: an ``onnxruntime.InferenceSession``.
        requests: per request ``{input name: [b_i, ...dims] array}`` (``None`` = missing).
        spec: the model config's tensor specs.

    Returns:
        One entry per request, in order: ``{output name: [b_i, ...] array}`` (views of
        the batched result), or the :class:`RequestError` that request gets.
    """
    results: list[dict[str, np.ndarray] | RequestError | None] = [None] * len(requests)
    good: list[int] = []
    sizes: list[int] = []
    for i, arrays in enumerate(requests):
        try:
            sizes.append(_check_request(arrays, spec))
            good.append(i)
        except RequestError as exc:
            results[i] = exc
    if good:
        if len(good) == 1:
            feed = {s.name: requests[good[0]][s.name] for s in spec.inputs}
        else:
            feed = {s.name: np.concatenate([requests[i][s.name] for i in good], axis=0) for s in spec.inputs}
        names = [s.name for s in spec.outputs]
        try:
            outputs = session.run(names, feed)
        except Exception as exc:  # noqa: BLE001 - ORT's own error types
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            error = RequestError(f"ONNX Runtime failed on a batch of {sum(sizes)}: {detail}", internal=True)
            for i in good:
                results[i] = error
            return results  # type: ignore[return-value]
        cuts = np.cumsum(sizes)[:-1]
        pieces = [np.split(out, cuts, axis=0) for out in outputs]
        for k, i in enumerate(good):
            results[i] = {name: pieces[j][k] for j, name in enumerate(names)}
    return results  # type: ignore[return-value]


def _triton_error(message: str, error: Exception):
    """``pb_utils.TritonError`` with code INVALID_ARG (the caller's fault) or INTERNAL.

    A python backend without error codes gets the plain error, which reaches the client as INTERNAL.
    """
    internal = getattr(error, "internal", True)
    code = getattr(pb_utils.TritonError, "INTERNAL" if internal else "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    """The python-backend entry points (``initialize``, ``execute``, ``finalize``)."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read the config, open ``model.onnx`` beside this file and check they match.

        Raises:
            ValueError: the config and ``model.onnx`` disagree (the model fails to load).
            FileNotFoundError: no ``model.onnx`` beside this file.
        """
        config = json.loads(args["model_config"])
        self.name = config.get("name", args.get("model_name", "model"))
        self.spec = parse_model_config(config, to_numpy=pb_utils.triton_string_to_numpy)
        path = Path(__file__).with_name(MODEL_FILENAME)
        if not path.is_file():
            path = Path(args["model_repository"]) / args["model_version"] / MODEL_FILENAME
        if not path.is_file():
            raise FileNotFoundError(f"model {self.name!r}: no {MODEL_FILENAME} beside {__file__}")
        threads_text = self.spec.parameters.get(THREADS_PARAMETER, "").strip()
        try:
            threads = int(threads_text) if threads_text else default_threads()
        except ValueError:
            raise ValueError(f"model {self.name!r}: parameter {THREADS_PARAMETER}={threads_text!r} is not an integer") from None
        self.session = make_session(path, intra_op_threads=threads)
        check_against_session(self.spec, self.session, model=self.name)
        warning = unverified_warning(self.name, self.spec.parameters.get(VERIFIED_CLASSES_PARAMETER, ""))
        if warning:
            pb_utils.Logger.log_warn(warning)
        self._input_names = [s.name for s in self.spec.inputs]

    def execute(self, requests: list) -> list:
        """One ``session.run`` for all ``requests``; one response per request."""
        get = pb_utils.get_input_tensor_by_name
        feeds = []
        for request in requests:
            arrays = {}
            for name in self._input_names:
                tensor = get(request, name)
                arrays[name] = None if tensor is None else tensor.as_numpy()
            feeds.append(arrays)
        responses = []
        for result in run_batched(self.session, feeds, spec=self.spec):
            if isinstance(result, Exception):
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_triton_error(f"model {self.name!r}: {result}", result)))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, a) for n, a in result.items()]))
        return responses

    def finalize(self) -> None:
        """Release the ONNX Runtime session."""
        self.session = None
