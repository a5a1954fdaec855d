"""The training objective: cross-entropy over the classifier's logits, optionally class-weighted.

:class:`ClassifierWithLoss` is the module the HF Trainer optimises (a
``WaveformClassifier`` plus the loss, returning what the Trainer expects);
:func:`class_weights` gives inverse-frequency weights for it. Importing this module
imports torch; :func:`training.train.train` imports it only when it trains.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ClassifierWithLoss(nn.Module):
    """``WaveformClassifier`` + cross-entropy, returning what the Trainer expects.

    Args:
        classifier: a ``training.model.WaveformClassifier`` (kept as ``self.classifier``,
            so the Trainer's state dicts name its weights ``classifier.*``).
        class_weights: ``[C]`` weights of the cross-entropy (float32), or ``None`` for unweighted.
    """

    def __init__(self, classifier, *, class_weights=None):
        super().__init__()
        self.classifier = classifier
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32), persistent=False)

    def forward(self, waveform, num_samples, labels=None):
        """``{"logits": [B, C]}``, plus ``"loss"`` (scalar) when ``labels [B]`` int64 are given."""
        logits, _ = self.classifier(waveform, num_samples)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(logits.float(), labels, weight=self.class_weights)
        return out


def class_weights(label_ids, num_classes: int):
    """Inverse-frequency weights ``n / (C * count_c)`` (``[C]`` float32; 0 for absent classes)."""
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=num_classes).astype(np.float64)
    w = np.divide(counts.sum(), num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return w.astype(np.float32)
