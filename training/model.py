"""The model: a Hugging Face audio classifier behind the bundle's tensor interface.

:class:`WaveformClassifier` is what is trained *and* what is exported, so the
per-clip normalisation and the attention mask are the same code in both:

    waveform [B, W] float32 (raw, 16 kHz), num_samples [B, 1] int64
      -> normalise over the valid samples (as Wav2Vec2FeatureExtractor does)
      -> attention mask from num_samples
      -> Wav2Vec2ForSequenceClassification (or HuBERT, WavLM, Data2VecAudio: any
         ``AutoModelForAudioClassification`` that reads raw ``input_values``)
      -> logits [B, C] float32, probabilities [B, C] float32

Models whose feature extractor was configured without attention masks
(``return_attention_mask: false``, e.g. wav2vec2-base with its group-normed conv
layer) are fed as they were trained: the zero-padded window, normalised as a
whole when ``do_normalize`` is set, and no mask. Models configured without
``do_normalize`` get the raw samples.

Checkpoints are Hugging Face folders (``config.json`` + ``model.safetensors``)
plus ``ser_checkpoint.json`` (:class:`CheckpointInfo`): labels, rate, window, and
how the input is prepared.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from client.audio import NORM_EPS
from client.contract import DEFAULT_SAMPLE_RATE, ModelContract
from client.errors import ConfigError
from training.errors import CheckpointError

CHECKPOINT_INFO = "ser_checkpoint.json"

#: Named model shapes. ``tiny`` trains on a CPU in a minute; ``base`` and
#: ``xlsr-large`` are the shapes of facebook/wav2vec2-base and
#: facebook/wav2vec2-large-xlsr-53 (random weights unless a checkpoint is given).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32, 32, 32, 32, 32, 32, 32),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        classifier_proj_size=64,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
    ),
    "base": dict(  # facebook/wav2vec2-base
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        classifier_proj_size=256,
    ),
    "xlsr-large": dict(  # facebook/wav2vec2-large-xlsr-53
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        feat_extract_activation="gelu",
        classifier_proj_size=256,
    ),
}


@dataclass(frozen=True)
class CheckpointInfo:
    """What the bundle records beside a Hugging Face checkpoint.

    Attributes:
        labels: class names in logit order.
        window_samples: W at ``sample_rate`` (samples).
        sample_rate: Hz.
        hop_samples: window step for long audio (samples).
        base: the preset or hub name/path the model started from.
        corpus: description of the training data (layout, path, class set).
        extra: anything else worth keeping (split manifest path, metrics).
        normalize: per-window zero mean / unit variance in the graph (the feature
            extractor's ``do_normalize``).
        attention_mask: the model takes an attention mask (the feature extractor's
            ``return_attention_mask``); without one it gets the zero-padded window as is.
        contract_extra: string parameters recorded in the serving contract (where the
            model and its window came from).
    """

    labels: tuple[str, ...]
    window_samples: int
    sample_rate: int = DEFAULT_SAMPLE_RATE
    hop_samples: int | None = None
    base: str = ""
    corpus: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    normalize: bool = True
    attention_mask: bool = True
    contract_extra: dict[str, str] = field(default_factory=dict)

    def contract(self, *, variant: str = "fp32", source: str = "") -> ModelContract:
        """The serving contract of this checkpoint."""
        return ModelContract(
            labels=self.labels,
            window_samples=self.window_samples,
            sample_rate=self.sample_rate,
            hop_samples=self.hop_samples,
            variant=variant,
            source=source or self.base,
            extra=dict(self.contract_extra),
        )

    @property
    def regression(self) -> bool:
        """Whether the head is a regression head (named values, no softmax)."""
        return self.contract_extra.get("problem_type") == "regression"

    def classifier(self, model) -> "WaveformClassifier":
        """``model`` wrapped as this checkpoint's input preparation and head say."""
        return WaveformClassifier(model, normalize=self.normalize, attention_mask=self.attention_mask,
                                  regression=self.regression)

    def save(self, directory: Path) -> Path:
        """Write ``ser_checkpoint.json`` into ``directory``."""
        path = Path(directory) / CHECKPOINT_INFO
        d = asdict(self)
        d["labels"] = list(self.labels)
        path.write_text(json.dumps(d, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path) -> "CheckpointInfo":
        """Read ``ser_checkpoint.json`` from ``directory``."""
        path = Path(directory) / CHECKPOINT_INFO
        if not path.is_file():
            raise CheckpointError(f"{directory}: no {CHECKPOINT_INFO} (not a checkpoint written by `ser train`)")
        try:
            d = json.loads(path.read_text())
            return cls(**{**d, "labels": tuple(d["labels"])})
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: malformed: {exc}") from None


def build_config(preset: str, *, labels: tuple[str, ...] | list[str]):
    """A ``Wav2Vec2Config`` of a named shape with a classification head for ``labels``."""
    from transformers import Wav2Vec2Config

    if preset not in MODEL_PRESETS:
        raise ConfigError(f"model preset {preset!r}: expected one of {sorted(MODEL_PRESETS)}")
    labels = list(labels)
    return Wav2Vec2Config(
        **MODEL_PRESETS[preset],
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )


def new_model(preset: str, *, labels, seed: int = 0):
    """A randomly initialised Wav2Vec2ForSequenceClassification of a named shape."""
    from transformers import Wav2Vec2ForSequenceClassification

    torch.manual_seed(seed)
    return Wav2Vec2ForSequenceClassification(build_config(preset, labels=labels)).eval()


def load_checkpoint(path: str | Path):
    """Load a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(model, info)``: a Wav2Vec2ForSequenceClassification in eval mode and its
        :class:`CheckpointInfo`.
    """
    from transformers import AutoModelForAudioClassification

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    info = CheckpointInfo.load(path)
    try:
        model = AutoModelForAudioClassification.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot load model weights: {str(exc).splitlines()[0]}") from None
    if model.config.num_labels != len(info.labels):
        raise CheckpointError(
            f"{path}: config has {model.config.num_labels} labels but {CHECKPOINT_INFO} lists {len(info.labels)}"
        )
    return model.eval(), info


def save_checkpoint(model, directory: str | Path, info: CheckpointInfo) -> Path:
    """Save model weights (safetensors) and :class:`CheckpointInfo` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    info.save(directory)
    return directory


class FrameMaskedConvStack(nn.Module):
    """A stack of positional convolutions that re-zeroes padded frames between its layers.

    Data2VecAudio's relative positional embedding is several conv layers in a row. Its
    encoder zeroes the padded frames before the first one, but from the second layer
    on the padded frames hold ``LayerNorm(conv(0) + bias)``, which leaks into the last
    valid frames: a zero-padded clip with its mask is then answered differently from
    the clip alone (as ``transformers.pipeline`` answers it). Zeroing the frames the encoder
    zeroed (all-zero rows of the input) after every layer is what each layer's own
    zero padding does to the clip alone, so the two answers agree. A model without
    padded frames (no mask) sees no change.

    Args:
        stack: the model's ``pos_conv_embed``; its ``layers`` act on ``[B, D, T]``.
    """

    def __init__(self, stack: nn.Module) -> None:
        super().__init__()
        self.layers = stack.layers

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` float32 -> ``[B, T, D]`` float32."""
        keep = (hidden_states != 0).any(dim=-1, keepdim=True).transpose(1, 2).to(hidden_states.dtype)
        x = hidden_states.transpose(1, 2)
        for layer in self.layers:
            x = layer(x) * keep
        return x.transpose(1, 2)


def _mask_stacked_positional_convs(model: nn.Module) -> None:
    """Replace every multi-layer ``pos_conv_embed`` of ``model`` by a :class:`FrameMaskedConvStack`."""
    for parent in list(model.modules()):
        stack = getattr(parent, "pos_conv_embed", None)
        if isinstance(stack, nn.Module) and not isinstance(stack, FrameMaskedConvStack) \
                and isinstance(getattr(stack, "layers", None), nn.ModuleList) and len(stack.layers) > 1:
            parent.pos_conv_embed = FrameMaskedConvStack(stack)


class WaveformClassifier(nn.Module):
    """Raw windows in, class scores out; the graph that is trained and exported.

    Args:
        model: a ``...ForSequenceClassification`` reading raw ``input_values``
            (wav2vec2, HuBERT, WavLM, Data2VecAudio).
        normalize: zero mean / unit variance per window (``do_normalize``): over the
            valid samples when the model takes a mask, over the whole zero-padded
            window when it does not (what its feature extractor does to a padded batch).
        attention_mask: pass the mask derived from ``num_samples`` (``return_attention_mask``).
        regression: a regression head: the second output is the head's values as they
            are (``problem_type: "regression"``), not a softmax.
    """

    def __init__(self, model: nn.Module, *, normalize: bool = True, attention_mask: bool = True,
                 regression: bool = False) -> None:
        super().__init__()
        _mask_stacked_positional_convs(model)
        self.model = model
        self.use_normalization = bool(normalize)
        self.use_attention_mask = bool(attention_mask)
        self.regression = bool(regression)

    @staticmethod
    def normalize(waveform: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-window zero mean / unit variance over valid samples; padding stays 0.

        ``num_samples`` is clamped to ``[1, W]`` first: the exported graph runs where nothing
        validates it (Triton's native onnxruntime backend), and a row with no valid sample
        would leave every attention key masked. The served python model refuses such values.

        Args:
            waveform: ``[B, W]`` float32.
            num_samples: ``[B, 1]`` int64 (valid samples, 1..W; clamped into that range).

        Returns:
            ``(normalised [B, W] float32, mask [B, W] int64)``.
        """
        width = waveform.shape[1]
        positions = torch.arange(width, device=waveform.device).unsqueeze(0)
        valid = positions < num_samples.reshape(-1, 1).clamp(min=1, max=width)
        validf = valid.to(waveform.dtype)
        count = validf.sum(dim=1, keepdim=True).clamp(min=1.0)
        mean = (waveform * validf).sum(dim=1, keepdim=True) / count
        centred = (waveform - mean) * validf
        var = (centred * centred).sum(dim=1, keepdim=True) / count
        normalised = centred / torch.sqrt(var + NORM_EPS)
        return normalised, valid.to(torch.int64)

    @staticmethod
    def normalize_padded(waveform: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        """Zero the samples past ``num_samples``, then zero mean / unit variance over the whole window.

        What a feature extractor without attention masks does to a zero-padded clip.
        ``[B, W]`` float32 -> ``[B, W]`` float32.
        """
        positions = torch.arange(waveform.shape[1], device=waveform.device).unsqueeze(0)
        x = waveform * (positions < num_samples.reshape(-1, 1)).to(waveform.dtype)
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(dim=1, keepdim=True)
        return centred / torch.sqrt(var + NORM_EPS)

    def prepare(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(input_values [B, W] float32, attention_mask [B, W] int64 or None)`` as the model was trained."""
        if self.use_attention_mask:
            x, mask = self.normalize(waveform, num_samples)
            if not self.use_normalization:
                x = waveform * mask.to(waveform.dtype)
            return x, mask
        if self.use_normalization:
            return self.normalize_padded(waveform, num_samples), None
        positions = torch.arange(waveform.shape[1], device=waveform.device).unsqueeze(0)
        return waveform * (positions < num_samples.reshape(-1, 1)).to(waveform.dtype), None

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits [B, C], probabilities [B, C])``, both float32.

        For a regression head the second output carries the values themselves (the
        interface keeps its tensor names; the contract's ``problem_type`` says how to read it).

        A window holding a NaN or Inf sample answers NaN in every output, and is zeroed before the
        model sees it: a server that runs the graph on whatever arrives (Triton's ONNX Runtime
        backend checks no values) then gives that window alone an answer no caller can mistake,
        and an int8 graph, which quantizes a whole batch with one scale, is not thrown off for the
        other windows by it.
        """
        finite = torch.isfinite(waveform)
        window_ok = finite.all(dim=1, keepdim=True)
        waveform = torch.where(finite, waveform, torch.zeros_like(waveform))
        x, mask = self.prepare(waveform, num_samples)
        logits = self.model(input_values=x, attention_mask=mask).logits
        logits = torch.where(window_ok, logits, torch.full_like(logits, float("nan")))
        if self.regression:
            return logits, logits * 1.0
        return logits, torch.softmax(logits, dim=-1)
