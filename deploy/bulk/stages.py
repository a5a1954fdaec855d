"""The two stages of a bulk job: decode-and-window (Ray tasks), and score (an actor pool of clients).

Both take and give column batches (``{column: numpy array}``), ``files_per_batch`` rows at a time.

* :func:`decode_batch` reads each source, decodes and windows it with the one audio contract
  (:func:`client.audio.load_audio`, :func:`client.audio.make_windows`); a file it cannot read or
  decode keeps its row, with ``error_type``/``error`` set and no windows;
* :class:`Scorer` is one client (:class:`client.triton_client.SerClient`, balancing over every
  server of the URL list) per Ray actor: it sends the windows of the batch's files together and
  aggregates each file's window probabilities (:func:`client.audio.aggregate`). A request the
  server refuses or does not answer in time is that file's error row; losing every server (after
  the retry policy) raises, so Ray runs the batch again on another actor.

The output rows follow :data:`SCHEMA`. Nothing here imports Ray.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from client.audio import AudioConfig, aggregate, load_audio, make_windows
from client.error_mapping import one_line
from client.errors import InferenceError, RequestTimeoutError, SerError, ServerUnavailableError

#: Columns of a decoded batch (between the stages; never written).
DECODED = ("source", "duration_s", "windows", "waveforms", "num_samples", "error_type", "error")


def schema():
    """The Parquet schema of an output row (pyarrow imported here).

    * ``source``: string, the file's path or URI (the row's key);
    * ``label``: string, the best class ("" for an error row or a regression head);
    * ``probabilities``: list<float32>, one per label in the order of ``batch.json``'s ``labels``
      (a regression head: its values); empty for an error row;
    * ``duration_s``: float64, the decoded clip's duration at the model's rate (0 for an error row);
    * ``windows``: int32, windows sent;
    * ``model``, ``model_version``: strings, what answered;
    * ``error_type``, ``error``: strings, "" unless the file failed (the exception's type, one line).
    """
    import pyarrow as pa

    return pa.schema([
        ("source", pa.string()), ("label", pa.string()), ("probabilities", pa.list_(pa.float32())),
        ("duration_s", pa.float64()), ("windows", pa.int32()), ("model", pa.string()),
        ("model_version", pa.string()), ("error_type", pa.string()), ("error", pa.string()),
    ])


def decode_batch(batch: dict[str, np.ndarray], *, audio: AudioConfig, window_samples: int, hop_samples: int) -> dict[str, np.ndarray]:
    """Read, decode and window each ``batch["source"]``; a failure is that row's error, never the batch's.

    Returns:
        The :data:`DECODED` columns: ``waveforms`` is each file's ``[k, W]`` float32 windows as bytes,
        ``num_samples`` its ``[k]`` int64 valid samples as bytes (empty for an error row).
    """
    from .sources import read_source

    out: dict[str, list[Any]] = {name: [] for name in DECODED}
    for source in (str(s) for s in batch["source"]):
        try:
            y = load_audio(read_source(source), config=audio, name=source)
            w = make_windows(y, window_samples=window_samples, hop_samples=hop_samples)
            row = (y.shape[0] / audio.sample_rate, len(w), w.waveforms.astype(np.float32).tobytes(),
                   w.num_samples.astype(np.int64).tobytes(), "", "")
        except SerError as exc:
            row = (0.0, 0, b"", b"", type(exc).__name__, one_line(exc))
        except Exception as exc:  # noqa: BLE001 - an unreadable object is its row's error (OSError, a codec's own)
            row = (0.0, 0, b"", b"", type(exc).__name__, f"{source}: {one_line(exc)}")
        for name, value in zip(DECODED, (source, *row), strict=True):
            out[name].append(value)
    return {
        "source": np.array(out["source"], dtype=object), "duration_s": np.array(out["duration_s"], dtype=np.float64),
        "windows": np.array(out["windows"], dtype=np.int32), "waveforms": np.array(out["waveforms"], dtype=object),
        "num_samples": np.array(out["num_samples"], dtype=object), "error_type": np.array(out["error_type"], dtype=object),
        "error": np.array(out["error"], dtype=object),
    }


class Scorer:
    """One client per actor; ``__call__`` scores a decoded batch (see the module's docstring).

    Args:
        url, model, protocol, model_version, timeout_s, retry: as :class:`client.triton_client.SerClient`.
    """

    def __init__(self, *, url: str, model: str, protocol: str, model_version: str, timeout_s: float, retry) -> None:
        from client.triton_client import SerClient

        self.client = SerClient(url, model=model, protocol=protocol, model_version=model_version,
                                timeout_s=timeout_s, retry=retry).open()
        assert self.client.contract is not None
        self.window = self.client.contract.window_samples
        self.labels = self.client.contract.labels
        self.regression = self.client.contract.regression
        self.version = model_version or max(self.client.versions(), key=lambda v: (len(v), v), default="")

    def __call__(self, batch: dict[str, np.ndarray]):
        """The output rows of a decoded batch, as a ``pyarrow.Table`` of :func:`schema`."""
        import pyarrow as pa

        n = len(batch["source"])
        probs: list[np.ndarray | None] = [None] * n
        errors = [(str(t), str(e)) for t, e in zip(batch["error_type"], batch["error"], strict=True)]
        todo = [i for i in range(n) if not errors[i][0]]
        windows = {i: self._windows(batch, i) for i in todo}
        try:
            if todo:
                self._score_together(todo, windows, probs)
        except (InferenceError, RequestTimeoutError):  # one file may spoil a shared request: score them one by one
            for i in todo:
                try:
                    self._score_together([i], windows, probs)
                except ServerUnavailableError:
                    raise
                except SerError as exc:
                    errors[i] = (type(exc).__name__, f"{batch['source'][i]}: {one_line(exc)}")
        rows = [self._row(batch, i, probs[i], errors[i]) for i in range(n)]
        return pa.Table.from_pylist(rows, schema=schema())

    def _windows(self, batch: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.frombuffer(batch["waveforms"][i], dtype=np.float32).reshape(-1, self.window)
        return x, np.frombuffer(batch["num_samples"][i], dtype=np.int64)

    def _score_together(self, rows: list[int], windows: dict, probs: list) -> None:
        x = np.concatenate([windows[i][0] for i in rows])
        counts = np.concatenate([windows[i][1] for i in rows])
        _, p = self.client.infer_windows(x, counts)
        start = 0
        for i in rows:
            k = windows[i][0].shape[0]
            probs[i] = aggregate(p[start:start + k], windows[i][1])
            start += k

    def _row(self, batch: dict[str, np.ndarray], i: int, p: np.ndarray | None, error: tuple[str, str]) -> dict[str, Any]:
        label = "" if p is None or self.regression else self.labels[int(np.argmax(p))]
        return {
            "source": str(batch["source"][i]), "label": label,
            "probabilities": [] if p is None else [float(v) for v in p],
            "duration_s": float(batch["duration_s"][i]), "windows": int(batch["windows"][i]) if p is not None else 0,
            "model": self.client.model, "model_version": self.version, "error_type": error[0], "error": error[1],
        }

    def __del__(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()


__all__ = ["DECODED", "Scorer", "decode_batch", "schema"]
