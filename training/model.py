"""The model: Wav2Vec2ForSequenceClassification behind the bundle's tensor interface.

:class:`WaveformClassifier` is what is trained *and* what is exported, so the
per-clip normalisation and the attention mask are the same code in both:

    waveform [B, W] float32 (raw, 16 kHz), num_samples [B, 1] int64
      -> normalise over the valid samples (as Wav2Vec2FeatureExtractor does)
      -> attention mask from num_samples
      -> Wav2Vec2ForSequenceClassification
      -> logits [B, C] float32, probabilities [B, C] float32

Checkpoints are Hugging Face folders (``config.json`` + ``model.safetensors``)
plus ``ser_checkpoint.json`` (:class:`CheckpointInfo`): labels, rate, window.
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
from client.errors import CheckpointError, ConfigError

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
    """

    labels: tuple[str, ...]
    window_samples: int
    sample_rate: int = DEFAULT_SAMPLE_RATE
    hop_samples: int | None = None
    base: str = ""
    corpus: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def contract(self, *, variant: str = "fp32", source: str = "") -> ModelContract:
        """The serving contract of this checkpoint."""
        return ModelContract(
            labels=self.labels,
            window_samples=self.window_samples,
            sample_rate=self.sample_rate,
            hop_samples=self.hop_samples,
            variant=variant,
            source=source or self.base,
        )

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


def load_pretrained(name_or_path: str, *, labels):
    """Start from a pretrained wav2vec2 (hub name or local folder) with a new head for ``labels``."""
    from transformers import Wav2Vec2ForSequenceClassification

    labels = list(labels)
    try:
        return Wav2Vec2ForSequenceClassification.from_pretrained(
            name_or_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{name_or_path}: cannot load a wav2vec2 model: {str(exc).splitlines()[0]}") from None


def load_checkpoint(path: str | Path):
    """Load a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(model, info)``: a Wav2Vec2ForSequenceClassification in eval mode and its
        :class:`CheckpointInfo`.
    """
    from transformers import Wav2Vec2ForSequenceClassification

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    info = CheckpointInfo.load(path)
    try:
        model = Wav2Vec2ForSequenceClassification.from_pretrained(str(path))
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


class WaveformClassifier(nn.Module):
    """Raw windows in, class scores out; the graph that is trained and exported.

    Args:
        model: a ``Wav2Vec2ForSequenceClassification``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

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

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits [B, C], probabilities [B, C])``, both float32."""
        x, mask = self.normalize(waveform, num_samples)
        logits = self.model(input_values=x, attention_mask=mask).logits
        return logits, torch.softmax(logits, dim=-1)
