"""The runners ``ser bench`` times: where each runs, why one cannot, and how each is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from client.errors import ConfigError
from export.bench.config import BenchConfig, import_training_model


def runner_device(runner: str, config: BenchConfig) -> str:
    """Where ``runner`` runs under ``config``."""
    kind = runner.partition(":")[0]
    if kind in ("torch-fp16", "ort-cuda-fp32"):
        return "cuda"
    if kind == "torch-fp32":
        return config.device
    return "cpu"


def runner_peak(runner: str, config: BenchConfig) -> str:
    """The key of the matmul peak a runner is compared with."""
    device = runner_device(runner, config)
    if device == "cpu":
        return "cpu-fp32"
    return "cuda-fp16" if runner == "torch-fp16" else "cuda-fp32"


def skip_reason(runner: str, config: BenchConfig) -> str:
    """Why ``runner`` cannot run on this host under ``config`` (empty: it can)."""
    kind = runner.partition(":")[0]
    if runner_device(runner, config) == "cuda":
        import torch

        if kind == "torch-fp16" and config.device != "cuda":
            return "needs --device cuda"
        if kind in ("torch-fp32", "torch-fp16") and not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        if kind == "ort-cuda-fp32":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {', '.join(ort.get_available_providers())})"
    if kind == "torch-int8-dynamic":
        import torch

        if not torch.backends.quantized.supported_engines or torch.backends.quantized.engine == "none":
            return "PyTorch has no quantized CPU engine on this host"
    return ""


@dataclass
class Prepared:
    """A runner ready to time: ``call(batch)`` returns a zero-argument callable."""

    device: str
    size_bytes: int | None
    make_call: Callable[[int], Callable[[], Any]]
    close: Callable[[], None] = lambda: None


def inputs(config: BenchConfig, batch: int):
    """Seeded inputs of one call: ``waveform`` ``[batch, W]`` float32 (σ 0.1) and ``num_samples`` ``[batch, 1]`` int64 = W."""
    import numpy as np

    rng = np.random.default_rng(config.seed + batch)
    waveform = (0.1 * rng.standard_normal((batch, config.window_samples))).astype(np.float32)
    num_samples = np.full((batch, 1), config.window_samples, dtype=np.int64)
    return waveform, num_samples


def ort_runner(path: Path, config: BenchConfig, *, cuda: bool = False) -> Prepared:
    """ONNX Runtime on ``path`` with the served session options (:func:`client.onnx_session.open_session`).

    Raises:
        RuntimeError: ``cuda`` and the CUDA execution provider did not load.
    """
    from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM
    from client.onnx_session import open_session

    providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if cuda else ("CPUExecutionProvider",)
    session = open_session(path, intra_op_threads=config.threads, providers=providers)
    if cuda and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"CUDAExecutionProvider did not load (session providers: {session.get_providers()})")

    def make_call(batch: int):
        waveform, num_samples = inputs(config, batch)
        feeds = {INPUT_WAVEFORM: waveform, INPUT_NUM_SAMPLES: num_samples}
        return lambda: session.run(None, feeds)

    holder = {"session": session}
    return Prepared("cuda" if cuda else "cpu", path.stat().st_size, make_call, close=holder.clear)


def state_bytes(module) -> int:
    """Bytes of every tensor in a module's state dict (quantized packed params included)."""
    import torch

    def size(obj) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, (tuple, list)):
            return sum(size(o) for o in obj)
        return 0

    return sum(size(v) for v in module.state_dict().values())


def torch_runner(classifier, runner: str, config: BenchConfig) -> Prepared:
    """PyTorch eager: fp32 (on ``config.device``), dynamic int8 of ``nn.Linear`` (CPU) or fp16 (CUDA)."""
    import copy

    import torch
    from torch import nn

    tm = import_training_model()
    device = runner_device(runner, config)
    if runner == "torch-fp32":
        module = classifier if device == "cpu" else copy.deepcopy(classifier).to(device)
    elif runner == "torch-int8-dynamic":
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices (moving to torchao)
            module = quantize_dynamic(classifier, {nn.Linear}, dtype=torch.qint8, inplace=False)
    elif runner == "torch-fp16":

        class HalfClassifier(nn.Module):
            """fp16 wav2vec2 behind the fp32 normalisation (fp16 sums over W samples could overflow)."""

            def __init__(self, model: nn.Module) -> None:
                super().__init__()
                self.model = model

            def forward(self, waveform, num_samples):
                x, mask = tm.WaveformClassifier.normalize(waveform, num_samples)
                logits = self.model(input_values=x.half(), attention_mask=mask).logits.float()
                return logits, torch.softmax(logits, dim=-1)

        module = HalfClassifier(copy.deepcopy(classifier.model).half()).to(device).eval()
    else:  # pragma: no cover - expand_runners rejects other names
        raise ConfigError(f"runner {runner!r}: not a PyTorch runner")
    module.eval()
    cuda = device == "cuda"

    def make_call(batch: int):
        waveform, num_samples = inputs(config, batch)
        x = torch.from_numpy(waveform).to(device)
        n = torch.from_numpy(num_samples).to(device)

        def call():
            with torch.inference_mode():
                out = module(x, n)
            if cuda:
                torch.cuda.synchronize()
            return out

        return call

    holder = {"module": module}

    def close() -> None:
        holder.clear()
        if cuda:
            torch.cuda.empty_cache()

    return Prepared(device, state_bytes(module), make_call, close=close)

