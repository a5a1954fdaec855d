"""The fp32 reference's answers to the gate's batches, computed once per export rather than once per check.

An export compares every variant with the fp32 ONNX file on the same windows: fp32 against itself
(alone vs batched), each int8 preset it tries, fp16, and each CPU class it verifies. The reference's
answers to the mixed batches are the same every time, and on a large model each pass over hundreds
of windows takes minutes, so :func:`reference_outputs` keeps the last few (the host's windows and an
emulated class's subset of them alternate while presets are tried). The key is the file (its
content's sha256: a rewritten file is run again), the thread count and the batches' bytes (sha256),
so a different window set or model is never answered from the cache. The file is hashed once while
its name, size, modification time and inode stay the same (a 1.2 GB fp32 file takes a few seconds;
one pass of its inference over the gate's windows takes minutes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from export.recipe import sha256_file

#: ``(waveform [b, W] float32, num_samples [b, 1] int64)``: one batch.
Batch = tuple[np.ndarray, np.ndarray]
#: ``(logits [b, C] float32, probabilities [b, C] float32)`` of one batch.
Outputs = tuple[np.ndarray, np.ndarray]

#: Window sets kept: outputs are small (``[n, C]``), the batches themselves are not kept.
KEPT = 4
_kept: dict[tuple, list[Outputs]] = {}
_hashed: dict[tuple, str] = {}


def _file_sha256(path: Path) -> str:
    """The file's content sha256, hashed again only when its name, size, mtime or inode changed."""
    stat = path.stat()
    stamp = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if stamp not in _hashed:
        _hashed[stamp] = sha256_file(path)
    return _hashed[stamp]


def _key(path: Path, threads: int, batches: Sequence[Batch]) -> tuple:
    digest = hashlib.sha256()
    for waveform, num_samples in batches:
        for array in (waveform, num_samples):
            a = np.ascontiguousarray(array)
            digest.update(f"{a.dtype}{a.shape}".encode())
            digest.update(a.data)
    return _file_sha256(path), threads, digest.hexdigest()


def reference_outputs(path: Path, batches: Sequence[Batch], *, threads: int,
                      run: Callable[[Path, Sequence[Batch]], list[Outputs]]) -> list[Outputs]:
    """The reference's outputs for ``batches``: ``run(path, batches)`` the first time, the kept ones after.

    Args:
        path: the reference ``.onnx``.
        batches: the batches it answers, in order.
        threads: ONNX Runtime intra-op threads the outputs were computed with (part of the key).
        run: computes the outputs (:func:`export.parity.run_outputs` with ``threads``).

    Returns:
        One ``(logits, probabilities)`` per batch; copies, so a caller may change them.
    """
    key = _key(Path(path), threads, batches)
    outputs = _kept.pop(key, None)
    if outputs is None:
        outputs = run(Path(path), batches)
    _kept[key] = outputs  # the most recently used last
    while len(_kept) > KEPT:
        del _kept[next(iter(_kept))]
    return [(lg.copy(), pr.copy()) for lg, pr in outputs]


def forget() -> None:
    """Drop the kept outputs and file hashes."""
    _kept.clear()
    _hashed.clear()
