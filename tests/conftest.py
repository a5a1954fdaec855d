"""Shared, session-scoped fixtures: small, seeded artifacts built once per run.

Sections are owned by parts of the bundle; each builds on real code paths
(no mocks of Triton, ONNX Runtime or the model).
"""

from __future__ import annotations

from pathlib import Path

import pytest

RAVDESS8 = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    """A scratch folder shared by the whole test session."""
    return tmp_path_factory.mktemp("ser")


# --- models -------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(session_dir) -> Path:
    """An *untrained* tiny wav2vec2 checkpoint (8 RAVDESS labels, 1 s windows at 16 kHz).

    Good for export parity and serving mechanics; not for accuracy claims.
    """
    from training.model import CheckpointInfo, new_model, save_checkpoint

    out = session_dir / "tiny-untrained"
    model = new_model("tiny", labels=RAVDESS8, seed=0)
    info = CheckpointInfo(labels=RAVDESS8, window_samples=16_000, hop_samples=8_000, base="tiny", corpus="none")
    return save_checkpoint(model, out, info)
