"""PyTorch -> ONNX: the bundle's model graph with named tensors and a dynamic batch.

The exported graph is :class:`training.model.WaveformClassifier` (per-clip
normalisation and the attention mask in the graph)::

    waveform     FP32  [batch, W]   raw samples @ sample_rate, zero-padded past num_samples
    num_samples  INT64 [batch, 1]   valid samples per window (1..W; the graph clamps it into that range)
      -> logits        FP32 [batch, C]
      -> probabilities FP32 [batch, C]

Only the batch axis is dynamic; W is fixed to ``CheckpointInfo.window_samples``
so that Triton's dynamic batcher can merge requests of equal shape.

Exporter choice: the TorchScript exporter (``dynamo=False``). The dynamo exporter
needs ``onnxscript``, which the pinned environment does not ship; the TorchScript
graph of the tiny model exports in ~1 s, passes ``onnx.checker`` and matches
PyTorch to ~1e-8 (ONNX Runtime folds its leftover ``Constant``/``Shape`` nodes
when the session is created).

Attention is exported in its eager form (``MatMul``, additive mask, ``Softmax``),
whatever the model was trained with. The SDPA form that transformers picks by
default exports as ``Softmax`` -> ``IsNaN`` -> ``Where`` per layer, a guard for
fully masked rows that this graph never has (the mask hides padded keys only, and
``num_samples >= 1``): on xlsr-large those 48 extra nodes cost ~11 ms of a ~210 ms
int8 call (2 threads, VNNI Xeon). The two forms agree to ~1e-7 in the logits.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from client.contract import (
    INPUT_NAMES,
    INPUT_NUM_SAMPLES,
    INPUT_WAVEFORM,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
)
from client.errors import ConfigError
from export.errors import ExportError
from training.errors import CheckpointError

#: Name of the batch axis in the exported graph.
BATCH_AXIS = "batch"
#: Default ONNX opset: supported by onnxruntime >= 1.14 and Triton 23.x+ ORT backends.
DEFAULT_OPSET = 17
#: Opsets the TorchScript exporter of torch 2.x writes reliably.
SUPPORTED_OPSETS = range(14, 21)
#: Bumped whenever :func:`export_onnx` writes a different graph for the same model, so caches of
#: exported files (``ser bench``'s) are rebuilt: 2 = eager attention and the metadata below,
#: 3 = ``num_samples`` clamped to ``[1, W]`` in the graph.
EXPORT_REVISION = 3
#: Metadata written into every exported graph: what ONNX Runtime's attention fusion must be told
#: (``export.quantize``), since it cannot find these in a wav2vec2 graph by itself.
META_ATTENTION_HEADS = "ser.num_attention_heads"
META_HIDDEN_SIZE = "ser.hidden_size"
#: Protobuf's hard limit: larger models would need external data files.
PROTOBUF_LIMIT_BYTES = 2 * 1024**3

#: ONNX TensorProto element type -> Triton data type name.
ONNX_TO_TRITON = {1: "TYPE_FP32", 7: "TYPE_INT64", 10: "TYPE_FP16", 6: "TYPE_INT32", 11: "TYPE_FP64", 9: "TYPE_BOOL"}


@dataclass(frozen=True)
class OnnxExportConfig:
    """How the fp32 graph is exported.

    Attributes:
        opset: ONNX opset version (14..20).
        example_batch: batch size of the tracing example (> 1, so nothing
            specialises on batch 1).
        constant_folding: fold constant subgraphs at export time.
        eager_attention: export attention in its eager form (see the module
            docstring); ``False`` keeps the model's own implementation.
    """

    opset: int = DEFAULT_OPSET
    example_batch: int = 2
    constant_folding: bool = True
    eager_attention: bool = True

    def __post_init__(self) -> None:
        if self.opset not in SUPPORTED_OPSETS:
            raise ConfigError(
                f"opset={self.opset}: the TorchScript exporter is used with opsets "
                f"{SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
            )
        if self.example_batch < 2:
            raise ConfigError(f"example_batch={self.example_batch}: must be >= 2 so the batch axis is not specialised to 1")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: tensor name.
        data_type: Triton type name (``TYPE_FP32``, ``TYPE_INT64``...).
        shape: dims including the batch axis; ``-1`` for a dynamic (symbolic) dim.
    """

    name: str
    data_type: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class GraphSignature:
    """The named inputs and outputs of an ONNX graph, in graph order.

    Attributes:
        inputs: ``{name: TensorSpec}`` of the graph inputs (initializers excluded).
        outputs: ``{name: TensorSpec}`` of the graph outputs.
        opset: the default-domain opset version.
    """

    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    opset: int

    @property
    def window_samples(self) -> int:
        """W, the fixed width of ``waveform`` (``-1`` if the graph leaves it dynamic)."""
        return self.inputs[INPUT_WAVEFORM].shape[1]

    @property
    def num_labels(self) -> int:
        """C, the width of ``logits``."""
        return self.outputs[OUTPUT_LOGITS].shape[1]


def load_classifier(checkpoint: str | Path, *, window_s: float | None = None, audio_dir: str | Path | None = None):
    """Load a checkpoint and wrap it as the exported graph.

    Args:
        checkpoint: directory written by ``training.model.save_checkpoint``, or a Hugging
            Face audio-classification checkpoint (folder or hub name,
            :mod:`training.hf_import`), whose window W comes from ``window_s`` or the
            durations of the audio under ``audio_dir``.
        window_s: W in seconds (Hugging Face checkpoints only).
        audio_dir: choose W from these clips' durations (Hugging Face checkpoints only).

    Returns:
        ``(WaveformClassifier in eval mode, CheckpointInfo)``.

    Raises:
        CheckpointError: missing directory, unreadable config or weights, an unsupported model.
        ConfigError: a window option for a bundle checkpoint (its W is fixed), or none for a Hugging Face one.
    """
    from training.hf_import import (
        choose_window,
        inspect_checkpoint,
        is_bundle_checkpoint,
        load_hf_classifier,
    )
    from training.model import load_checkpoint

    path = Path(checkpoint)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: is a file, expected a checkpoint directory")
    if is_bundle_checkpoint(path):
        if window_s is not None or audio_dir is not None:
            raise ConfigError(f"{path}: a checkpoint written by ser train fixes its window W; "
                              "window_s/audio_dir choose W for Hugging Face checkpoints only")
        model, info = load_checkpoint(path)
        return info.classifier(model).eval(), info
    if path.is_dir() and not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: neither a checkpoint written by ser train (ser_checkpoint.json) nor a "
                              "Hugging Face checkpoint (config.json)")
    source = inspect_checkpoint(str(checkpoint))
    window, how = choose_window(window_s=window_s, audio_dir=audio_dir, sample_rate=source.inputs.sample_rate)
    return load_hf_classifier(source, window_samples=window, window_source=how)


@contextmanager
def attention_implementation(classifier, implementation: str | None):
    """Switch the wrapped transformers model to ``implementation`` inside the block.

    ``None``, or a model without ``set_attn_implementation``, leaves it alone. The
    model's own implementation is restored on exit, also after an error.
    """
    model = getattr(classifier, "model", None)
    setter = getattr(model, "set_attn_implementation", None)
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if implementation is None or setter is None or before in (None, implementation):
        yield
        return
    setter(implementation)
    try:
        yield
    finally:
        setter(before)


def export_onnx(
    classifier,
    path: str | Path,
    *,
    window_samples: int,
    config: OnnxExportConfig = OnnxExportConfig(),
) -> GraphSignature:
    """Export a :class:`~training.model.WaveformClassifier` to one ONNX file and check it.

    Args:
        classifier: the wrapped model, in eval mode.
        path: output ``.onnx`` file (a single file: weights are embedded).
        window_samples: W, the fixed width of ``waveform`` (samples).
        config: exporter options.

    Returns:
        The checked :class:`GraphSignature` of the written file.

    Raises:
        ExportError: the exporter failed, the graph fails ``onnx.checker`` or lacks
            the bundle's named tensors / dynamic batch axis.
    """
    import torch

    if window_samples <= 0:
        raise ConfigError(f"window_samples={window_samples}: must be positive")
    path = Path(path)
    gen = torch.Generator().manual_seed(0)
    batch = config.example_batch
    waveform = torch.randn(batch, window_samples, generator=gen)
    num_samples = torch.tensor([[window_samples - i * (window_samples // (2 * batch))] for i in range(batch)], dtype=torch.int64)
    dynamic_axes = {name: {0: BATCH_AXIS} for name in (*INPUT_NAMES, *OUTPUT_NAMES)}
    classifier = classifier.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings(), \
                attention_implementation(classifier, "eager" if config.eager_attention else None):
            warnings.simplefilter("ignore")  # TracerWarnings on the HF model's python-side shape checks
            torch.onnx.export(
                classifier,
                (waveform, num_samples),
                str(path),
                dynamo=False,
                opset_version=config.opset,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
                do_constant_folding=config.constant_folding,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many unrelated types
        raise ExportError(f"{path}: torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    model_config = getattr(getattr(classifier, "model", None), "config", None)
    if model_config is not None:
        append_metadata(path, {META_ATTENTION_HEADS: str(model_config.num_attention_heads),
                               META_HIDDEN_SIZE: str(model_config.hidden_size)})
    num_labels = int(model_config.num_labels) if model_config is not None else -1
    return check_graph(path, window_samples=window_samples, num_labels=num_labels)


def append_metadata(path: str | Path, entries: Mapping[str, str]) -> None:
    """Add ``metadata_props`` to an ONNX file without loading it.

    A protobuf parser merges concatenated messages (repeated fields are appended), so
    a serialized ``ModelProto`` holding only the new entries, appended to the file,
    is read back as the same model with those entries: no 1.2 GB load and rewrite.
    """
    import onnx

    extra = onnx.ModelProto()
    for key, value in entries.items():
        extra.metadata_props.add(key=key, value=value)
    with open(path, "ab") as f:
        f.write(extra.SerializeToString())


def read_metadata(model) -> dict[str, str]:
    """``metadata_props`` of a loaded ``onnx.ModelProto`` as a dict (the last entry of a key wins)."""
    return {p.key: p.value for p in model.metadata_props}


def read_signature(path: str | Path) -> GraphSignature:
    """Read the inputs/outputs of an ONNX file (weights are not loaded into memory twice).

    Raises:
        ExportError: the file is missing or not an ONNX model.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX model: {exc}") from None

    def spec(value) -> TensorSpec:
        t = value.type.tensor_type
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(value.name, ONNX_TO_TRITON.get(t.elem_type, f"ONNX_ELEM_{t.elem_type}"), dims)

    initializers = {i.name for i in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), -1)
    return GraphSignature(
        inputs={v.name: spec(v) for v in model.graph.input if v.name not in initializers},
        outputs={v.name: spec(v) for v in model.graph.output},
        opset=int(opset),
    )


def check_graph(path: str | Path, *, window_samples: int, num_labels: int = -1) -> GraphSignature:
    """Validate an exported file: ``onnx.checker``, tensor names, dtypes and shapes.

    Args:
        path: the ``.onnx`` file.
        window_samples: expected W.
        num_labels: expected C (``-1``: do not check).

    Returns:
        The file's :class:`GraphSignature`.

    Raises:
        ExportError: listing every deviation from the bundle's interface.
    """
    import onnx

    path = Path(path)
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - ValidationError and I/O errors
        raise ExportError(f"{path}: onnx.checker rejects the model: {str(exc).splitlines()[0]}") from None
    sig = read_signature(path)
    want = {
        INPUT_WAVEFORM: ("TYPE_FP32", (-1, window_samples)),
        INPUT_NUM_SAMPLES: ("TYPE_INT64", (-1, 1)),
        OUTPUT_LOGITS: ("TYPE_FP32", (-1, num_labels)),
        OUTPUT_PROBABILITIES: ("TYPE_FP32", (-1, num_labels)),
    }
    problems = []
    if tuple(sig.inputs) != INPUT_NAMES:
        problems.append(f"inputs are {list(sig.inputs)}, expected {list(INPUT_NAMES)}")
    if tuple(sig.outputs) != OUTPUT_NAMES:
        problems.append(f"outputs are {list(sig.outputs)}, expected {list(OUTPUT_NAMES)}")
    for name, (dtype, shape) in want.items():
        got = sig.inputs.get(name) or sig.outputs.get(name)
        if got is None:
            continue
        if got.data_type != dtype:
            problems.append(f"{name} is {got.data_type}, expected {dtype}")
        width = shape[1]
        ok = len(got.shape) == 2 and got.shape[0] == -1 and (got.shape[1] == width if width != -1 else got.shape[1] > 0)
        if not ok:
            problems.append(
                f"{name} has shape {list(got.shape)}, expected [batch, {width if width != -1 else 'C'}] "
                "(-1 = dynamic: only the batch axis may be)"
            )
    if problems:
        raise ExportError(f"{path}: graph does not have the bundle's interface: " + "; ".join(problems))
    size = path.stat().st_size
    if size >= PROTOBUF_LIMIT_BYTES:
        raise ExportError(f"{path}: {size} bytes exceeds protobuf's 2 GiB single-file limit")
    return sig
