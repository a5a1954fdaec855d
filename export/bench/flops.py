"""Analytic FLOP count of the bundle's wav2vec2 classifier, from its config.

Convention (the one of ``torch.utils.flop_counter.FlopCounterMode`` and of GEMM
peak figures): only matrix multiplies and convolutions are counted, one
multiply-add = 2 FLOPs. Element-wise work (normalisation, LayerNorm/GroupNorm,
GELU, softmax, masking, weight-norm of the positional conv, bias adds) is left
out: on the shapes benchmarked it is well under 1 % of the total.

For one clip of ``W`` samples (batch ``B`` multiplies everything)::

    feature encoder, layer i (C_0 = 1, T_0 = W):
        T_i = floor((T_{i-1} - k_i) / s_i) + 1
        F   = 2 * C_{i-1} * C_i * k_i * T_i
    feature projection (Linear C_last -> H, per frame):   2 * T * C_last * H
    positional conv (Conv1d H -> H, kernel K, G groups, padding K//2):
        L = T + 2 * (K // 2) - K + 1        (T + 1 for an even K; the extra frame is dropped after)
        F = 2 * L * H * (H / G) * K
    transformer layer (x N), with T frames, hidden H, FFN width I:
        Q, K, V, output projections:         4 * 2 * T * H * H
        attention scores Q K^T (all heads):  2 * T * T * H
        attention-weighted sum of V:         2 * T * T * H
        feed-forward H -> I -> H:            2 * 2 * T * H * I
    projector (Linear H -> P, per frame):    2 * T * H * P
    classifier (Linear P -> C, after mean pooling): 2 * P * C

where ``T = T_last`` of the encoder. The xlsr-large shape at W = 40 000
(2.5 s @ 16 kHz) has T = 124 frames and ~91 GFLOP per clip, ~84 % of it in the
transformer. This module imports nothing heavy (no torch, no transformers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from client.errors import ConfigError

#: Wav2Vec2Config defaults used when a config (or a preset dict) leaves a field out.
WAV2VEC2_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    conv_dim=(512, 512, 512, 512, 512, 512, 512),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    classifier_proj_size=256,
    num_labels=2,
)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward pass, by part.

    Attributes:
        batch: clips in the batch.
        window_samples: W, samples per clip.
        frames: T, transformer frames per clip.
        parts: ``{part: FLOPs}`` for the whole batch (``feature_encoder``,
            ``feature_projection``, ``positional_conv``, ``attention_projections``,
            ``attention_scores``, ``attention_values``, ``feed_forward``,
            ``projector``, ``classifier``).
    """

    batch: int
    window_samples: int
    frames: int
    parts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """FLOPs of the whole batch."""
        return int(sum(self.parts.values()))

    @property
    def per_clip(self) -> float:
        """FLOPs per clip."""
        return self.total / self.batch

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "batch": self.batch,
            "window_samples": self.window_samples,
            "frames": self.frames,
            "total": self.total,
            "parts": dict(self.parts),
        }


def _get(config: Any, name: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(name, WAV2VEC2_DEFAULTS[name])
    return getattr(config, name, WAV2VEC2_DEFAULTS[name])


def encoder_frames(window_samples: int, *, conv_kernel, conv_stride) -> list[int]:
    """Output length of each feature-encoder conv layer for ``window_samples`` input samples.

    Raises:
        ConfigError: the window is too short to give one frame.
    """
    if len(conv_kernel) != len(conv_stride):
        raise ConfigError(f"conv_kernel={list(conv_kernel)} and conv_stride={list(conv_stride)}: need one stride per kernel")
    lengths, t = [], int(window_samples)
    for k, s in zip(conv_kernel, conv_stride, strict=True):
        t = (t - int(k)) // int(s) + 1
        if t < 1:
            raise ConfigError(f"window_samples={window_samples}: too short for the conv feature encoder (needs at least one frame)")
        lengths.append(t)
    return lengths


def count_flops(config: Any, *, window_samples: int, batch: int = 1) -> FlopCount:
    """Count the matmul/conv FLOPs of one forward pass (see the module docstring).

    Args:
        config: a ``Wav2Vec2Config`` or a mapping with its fields (missing
            fields take Wav2Vec2Config's defaults, as ``MODEL_PRESETS`` entries do).
        window_samples: W, samples per clip.
        batch: clips per forward pass.

    Returns:
        The :class:`FlopCount` of the batch.

    Raises:
        ConfigError: ``batch < 1`` or a window too short for one frame.
    """
    if batch < 1:
        raise ConfigError(f"batch={batch}: must be >= 1")
    conv_dim = [int(c) for c in _get(config, "conv_dim")]
    kernels = [int(k) for k in _get(config, "conv_kernel")]
    strides = [int(s) for s in _get(config, "conv_stride")]
    lengths = encoder_frames(window_samples, conv_kernel=kernels, conv_stride=strides)
    if len(conv_dim) != len(kernels):
        raise ConfigError(f"conv_dim={conv_dim} and conv_kernel={kernels}: need one kernel per conv layer")
    h = int(_get(config, "hidden_size"))
    n_layers = int(_get(config, "num_hidden_layers"))
    inter = int(_get(config, "intermediate_size"))
    pos_k = int(_get(config, "num_conv_pos_embeddings"))
    pos_g = int(_get(config, "num_conv_pos_embedding_groups"))
    proj = int(_get(config, "classifier_proj_size"))
    labels = int(_get(config, "num_labels"))
    t = lengths[-1]

    encoder, c_in = 0, 1
    for c_out, k, t_i in zip(conv_dim, kernels, lengths, strict=True):
        encoder += 2 * c_in * c_out * k * t_i
        c_in = c_out
    pos_len = t + 2 * (pos_k // 2) - pos_k + 1
    parts = {
        "feature_encoder": encoder,
        "feature_projection": 2 * t * conv_dim[-1] * h,
        "positional_conv": 2 * pos_len * h * (h // pos_g) * pos_k,
        "attention_projections": n_layers * 4 * 2 * t * h * h,
        "attention_scores": n_layers * 2 * t * t * h,
        "attention_values": n_layers * 2 * t * t * h,
        "feed_forward": n_layers * 2 * 2 * t * h * inter,
        "projector": 2 * t * h * proj,
        "classifier": 2 * proj * labels,
    }
    return FlopCount(batch=batch, window_samples=int(window_samples), frames=t, parts={k: v * batch for k, v in parts.items()})
