"""``ser bench``: model shapes x runners x batch sizes, side by side in one process.

What a cell measures: one forward pass of the bundle's graph
(:class:`training.model.WaveformClassifier`: in-graph normalisation + mask +
Wav2Vec2ForSequenceClassification, random weights, 8 labels) on a batch of
``B`` windows of ``W = round(clip_seconds * sample_rate)`` samples, all valid.
Inputs are prepared once (on the runner's device for PyTorch CUDA runners;
ONNX Runtime's CUDA runner is fed numpy arrays, so its host-to-device copy is
timed). After ``warmup`` untimed calls, ``repeat`` calls (or as many as fit in
``budget_s``) are timed one by one (:mod:`client.timing`); CUDA runners
synchronise inside the timed call.

Runners:

=====================  ======  ================================================
``ort-fp32``           CPU     ONNX Runtime, the exported fp32 graph (the reference)
``ort-int8:<preset>``  CPU     ONNX Runtime, ``quantize_dynamic`` with an
                               :data:`export.quantize.QUANTIZATION_PRESETS` preset
                               (``ort-int8``: every preset; ``ort-int8:default``: the default)
``torch-fp32``         device  PyTorch eager, fp32 (``--device cuda``: on the GPU)
``torch-int8-dynamic`` CPU     ``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear``
                               (qint8): the peer a PyTorch user would reach for
``torch-fp16``         CUDA    PyTorch eager, fp16 weights/activations (normalisation in fp32)
``ort-cuda-fp32``      CUDA    ONNX Runtime's CUDAExecutionProvider, fp32 graph
=====================  ======  ================================================

A runner this host cannot run (no CUDA, ``--device cpu`` for a GPU runner, no
CUDAExecutionProvider) gets a *skipped* cell with the reason; a runner that
raises gets a *failed* cell with the error: every requested cell is in the table.

Columns: file size (ONNX file; PyTorch: bytes of the state dict's tensors),
latency median / p95 (ms), clips/s (``B / median``), speed-up vs ``ort-fp32`` of
the same shape and batch (:func:`~export.bench.results.speedup`), achieved GFLOP/s
(FLOPs counted analytically by :mod:`export.bench.flops` / median) and its
percentage of a matrix-multiply peak measured in the same run with the same
thread count (CPU: fp32 ``torch.mm``, also the yardstick of int8 cells, which can
pass 100 % since VNNI int8 does 4x the multiply-adds of fp32; CUDA: fp32 and
fp16 ``torch.mm``). Threads are pinned (``torch.set_num_threads``, the ONNX Runtime
sessions of :func:`client.onnx_session.open_session`) and printed.

ONNX files are exported once per ``(shape, W, seed, labels)`` into ``workdir``
(default ``.cache/bench``) and quantized once per preset; later runs reuse them
(:mod:`export.bench.onnx_cache`). The xlsr-large fp32 graph is ~1.27 GB: a single
file (protobuf's limit is 2 GiB).

Hosts without ``soundfile``/``soxr`` (a GPU box with only torch and ORT) can run
it: the bench decodes no audio, and the audio contract imports them only to decode.
From a source checkout: ``PYTHONPATH=. python3 -m ser bench --help``.

One job per module: :mod:`~export.bench.config` (options), :mod:`~export.bench.runners`
(what is timed), :mod:`~export.bench.onnx_cache` (the ONNX files),
:mod:`~export.bench.host` (CPU, versions, peaks), :mod:`~export.bench.run` (the run),
:mod:`~export.bench.results` (cells and tables), :mod:`~export.bench.flops` (FLOP counts).
"""

from export.bench.config import BenchConfig
from export.bench.results import BenchResult, Cell, speedup
from export.bench.run import run_bench

__all__ = ["BenchConfig", "BenchResult", "Cell", "run_bench", "speedup"]
