"""What ``ser bench`` measures: the runner names, the defaults and :class:`BenchConfig`."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from client.errors import ConfigError
from export.bench.flops import encoder_frames
from export.quantize import DEFAULT_PRESET, QUANTIZATION_PRESETS

#: Runner kinds (``ort-int8`` takes ``:<preset>``).
RUNNER_KINDS = ("ort-fp32", "ort-int8", "torch-fp32", "torch-int8-dynamic", "torch-fp16", "ort-cuda-fp32")
#: The default runner list: every kind, every int8 preset (GPU runners skip themselves on a CPU host).
DEFAULT_RUNNERS = RUNNER_KINDS
DEFAULT_SHAPES = ("tiny", "base", "xlsr-large")
DEFAULT_BATCH_SIZES = (1, 8)
DEFAULT_CLIP_SECONDS = 2.5
DEFAULT_SAMPLE_RATE = 16_000
DEFAULT_WARMUP = 2
DEFAULT_REPEAT = 10
DEFAULT_WORKDIR = Path(".cache/bench")
#: With a time budget: at least this many timed calls per cell, whatever the budget.
MIN_TIMED_RUNS = 5
#: With a time budget and no ``repeat``: at most this many timed calls per cell.
MAX_TIMED_RUNS = 10_000
DEVICES = ("cpu", "cuda")
META_FILENAME = "bench_meta.json"
BENCH_FORMAT = 1



def available_cpus() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def expand_runners(runners: Sequence[str]) -> tuple[str, ...]:
    """Resolve runner names: ``ort-int8`` -> one ``ort-int8:<preset>`` per preset, ``:default`` -> the default preset.

    Raises:
        ConfigError: an unknown runner or preset (the message lists the known ones).
    """
    out: list[str] = []
    for raw in runners:
        name = str(raw).strip()
        kind, _, preset = name.partition(":")
        if kind not in RUNNER_KINDS:
            raise ConfigError(f"runner {name!r}: unknown; choose from {list(RUNNER_KINDS)} (ort-int8 takes :<preset>)")
        if kind == "ort-int8":
            if not preset:
                names = list(QUANTIZATION_PRESETS)
            elif preset == "default":
                names = [DEFAULT_PRESET]
            elif preset in QUANTIZATION_PRESETS:
                names = [preset]
            else:
                raise ConfigError(f"runner {name!r}: unknown quantization preset {preset!r}; choose from {sorted(QUANTIZATION_PRESETS)} or 'default'")
            expanded = [f"ort-int8:{p}" for p in names]
        elif preset:
            raise ConfigError(f"runner {name!r}: only ort-int8 takes a ':<preset>' suffix")
        else:
            expanded = [kind]
        out.extend(r for r in expanded if r not in out)
    if not out:
        raise ConfigError("runners=(): name at least one runner, e.g. 'ort-fp32'")
    return tuple(out)


@dataclass(frozen=True)
class BenchConfig:
    """What ``ser bench`` measures and how.

    Attributes:
        shapes: model shapes (keys of ``training.model.MODEL_PRESETS``), random weights.
        runners: runner names (see the module docstring); expanded on construction
            (``ort-int8`` -> every preset).
        batch_sizes: clips per forward pass, each >= 1.
        clip_seconds: window length (s); ``W = round(clip_seconds * sample_rate)``.
        sample_rate: Hz.
        warmup: untimed calls per cell (>= 0).
        repeat: timed calls per cell (>= 1); ``None``: 10, or, with ``budget_s``,
            as many as fit (at most 10 000).
        budget_s: time budget of a cell's timed calls (s); at least 5 calls are timed.
        threads: CPU threads for PyTorch and ONNX Runtime (``None``: every core this
            process may use).
        device: ``"cpu"`` or ``"cuda"``: where ``torch-fp32`` runs; GPU-only runners
            are skipped with ``"cpu"``.
        workdir: where ONNX files are exported and cached.
        seed: seed of the random weights and inputs.
        num_labels: classes of the classification head.
        measure_peak: measure the matrix-multiply peak(s) (off: no % of peak).
        json_out: write the result as JSON here.
        markdown_out: write the result as markdown here.
        progress: print one line per cell as it completes.
        interleave: load every runner of a shape, then time the runners of each batch
            size in rounds, one call each per round (drift of the machine's speed hits
            them alike, so ratios hold); ``False``: one runner after another, each
            freed before the next is built (less memory).
    """

    shapes: tuple[str, ...] = DEFAULT_SHAPES
    runners: tuple[str, ...] = DEFAULT_RUNNERS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    clip_seconds: float = DEFAULT_CLIP_SECONDS
    sample_rate: int = DEFAULT_SAMPLE_RATE
    warmup: int = DEFAULT_WARMUP
    repeat: int | None = None
    budget_s: float | None = None
    threads: int | None = None
    device: str = "cpu"
    workdir: Path = DEFAULT_WORKDIR
    seed: int = 0
    num_labels: int = 8
    measure_peak: bool = True
    json_out: Path | None = None
    markdown_out: Path | None = None
    progress: bool = True
    interleave: bool = True

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        shapes = (self.shapes,) if isinstance(self.shapes, str) else tuple(self.shapes)
        known = known_shapes()
        if not shapes:
            raise ConfigError(f"shapes=(): name at least one model shape from {list(known)}")
        for s in shapes:
            if s not in known:
                raise ConfigError(f"shape {s!r}: unknown; choose from {list(known)}")
        set_("shapes", tuple(dict.fromkeys(shapes)))
        runners = (self.runners,) if isinstance(self.runners, str) else tuple(self.runners)
        set_("runners", expand_runners(runners))
        sizes = (self.batch_sizes,) if isinstance(self.batch_sizes, int) else tuple(self.batch_sizes)
        if not sizes:
            raise ConfigError("batch_sizes=(): name at least one batch size >= 1")
        for b in sizes:
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise ConfigError(f"batch size {b!r}: must be an integer >= 1")
        set_("batch_sizes", tuple(dict.fromkeys(sizes)))
        if not isinstance(self.sample_rate, int) or self.sample_rate < 1:
            raise ConfigError(f"sample_rate={self.sample_rate!r}: must be a positive integer (Hz)")
        if not (isinstance(self.clip_seconds, (int, float)) and self.clip_seconds > 0):
            raise ConfigError(f"clip_seconds={self.clip_seconds!r}: must be > 0")
        if self.warmup < 0:
            raise ConfigError(f"warmup={self.warmup}: must be >= 0")
        if self.repeat is not None and self.repeat < 1:
            raise ConfigError(f"repeat={self.repeat}: must be >= 1")
        if self.budget_s is not None and not self.budget_s > 0:
            raise ConfigError(f"budget_s={self.budget_s}: must be > 0 (or None: a fixed repeat count)")
        if self.threads is None:
            set_("threads", available_cpus())
        elif isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads={self.threads!r}: must be an integer >= 1")
        if self.device not in DEVICES:
            raise ConfigError(f"device={self.device!r}: expected one of {list(DEVICES)}")
        if self.num_labels < 2:
            raise ConfigError(f"num_labels={self.num_labels}: must be >= 2")
        set_("workdir", Path(self.workdir))
        for name in ("json_out", "markdown_out"):
            if getattr(self, name) is not None:
                set_(name, Path(getattr(self, name)))
        # The window must give the conv feature encoder at least one frame (checked per shape).
        for s in self.shapes:
            cfg = shape_config(s)
            try:
                encoder_frames(self.window_samples, conv_kernel=cfg["conv_kernel"], conv_stride=cfg["conv_stride"])
            except ConfigError:
                raise ConfigError(
                    f"clip_seconds={self.clip_seconds} at {self.sample_rate} Hz (W={self.window_samples}): "
                    f"too short for shape {s!r}'s conv feature encoder"
                ) from None

    @property
    def window_samples(self) -> int:
        """W, samples per clip."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def timed_runs(self) -> tuple[int, int]:
        """``(at least, at most)`` timed calls per cell."""
        if self.budget_s is None:
            n = DEFAULT_REPEAT if self.repeat is None else self.repeat
            return n, n
        most = MAX_TIMED_RUNS if self.repeat is None else self.repeat
        return min(MIN_TIMED_RUNS, most), most

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, tuple):
                d[k] = list(v)
        d["window_samples"] = self.window_samples
        return d



def import_training_model():
    """Import ``training.model`` (torch, transformers) only when a model is built."""
    return importlib.import_module("training.model")


def known_shapes() -> tuple[str, ...]:
    """The model shapes the bench can build (``training.model.MODEL_PRESETS``)."""
    return tuple(import_training_model().MODEL_PRESETS)


def shape_config(shape: str) -> dict[str, Any]:
    """The preset of ``shape`` with Wav2Vec2Config's defaults for the fields it leaves out."""
    from export.bench.flops import WAV2VEC2_DEFAULTS

    return {**WAV2VEC2_DEFAULTS, **import_training_model().MODEL_PRESETS[shape]}

