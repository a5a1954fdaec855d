"""Play audio into a live call as if someone were speaking it: chunks paced in real time (or faster).

What ``ser stream`` runs: a file (decoded, mixed to mono, sent at its own rate) or raw
PCM from a pipe (``s16le`` or ``f32le`` at a declared rate) is cut into chunks of
``chunk_ms`` and sent on a :class:`~client.stream.LiveCall`, chunk ``i`` once it has been spoken:
``(i + 1) * chunk_ms / speed`` after the call starts; updates are handed to a callback as they arrive.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np

from .audio import decode, to_mono
from .errors import ConfigError
from .stream import CallResult, StreamSession, Update

#: Raw PCM layouts read from a pipe: numpy dtype of each (little-endian, mono).
RAW_FORMATS = {"s16le": "<i2", "f32le": "<f4"}


def file_chunks(path: str | Path, *, chunk_ms: int) -> tuple[int, Iterator[np.ndarray]]:
    """``(sample_rate, chunks)`` of a decoded file: float32 mono chunks of ``chunk_ms`` at the file's rate."""
    data, rate = decode(Path(path))
    mono = to_mono(data)
    step = max(1, rate * chunk_ms // 1000)
    return rate, (mono[i:i + step] for i in range(0, mono.size, step))


def raw_chunks(stream: BinaryIO, *, sample_rate: int, sample_format: str, chunk_ms: int) -> Iterator[np.ndarray]:
    """Chunks of ``chunk_ms`` of raw mono PCM read from ``stream`` as it arrives (int16 or float32 arrays).

    Raises:
        ConfigError: an unknown ``sample_format``.
    """
    if sample_format not in RAW_FORMATS:
        raise ConfigError(f"format={sample_format!r}: expected one of {list(RAW_FORMATS)}")
    dtype = np.dtype(RAW_FORMATS[sample_format])
    size = max(1, sample_rate * chunk_ms // 1000) * dtype.itemsize
    pending = b""
    while True:
        data = stream.read(size - len(pending))
        if not data:
            break
        pending += data
        if len(pending) >= size:
            yield np.frombuffer(pending, dtype=dtype).astype(dtype.newbyteorder("="))
            pending = b""
    whole = len(pending) // dtype.itemsize * dtype.itemsize
    if whole:
        yield np.frombuffer(pending[:whole], dtype=dtype).astype(dtype.newbyteorder("="))


def play_call(session: StreamSession, chunks: Iterable[np.ndarray], *, sample_rate: int, speed: float = 1.0,
              hop_ms: int | None = None, vad: bool | None = None,
              on_update: Callable[[Update], None] = lambda u: None) -> CallResult:
    """Send ``chunks`` as one call, paced at ``speed`` x real time (0: as fast as they come); return its result.

    Args:
        session: an open :class:`~client.stream.StreamSession`.
        chunks: mono int16 or float32 arrays at ``sample_rate``.
        sample_rate: Hz.
        speed: 1.0 plays in real time, 2.0 twice as fast, 0 without waiting.
        hop_ms: the call's hop, ms (None: the model's).
        vad: False turns the call's voice-activity gate off (None: the model's).
        on_update: called with each update, in order, as soon as it is read.
    """
    if speed < 0:
        raise ConfigError(f"speed={speed}: must be >= 0 (0: as fast as possible)")
    call = session.call(sample_rate=sample_rate, hop_ms=hop_ms, vad=vad)
    started = time.monotonic()
    sent_s = 0.0
    shown = 0
    try:
        for chunk in chunks:
            sent_s += chunk.size / sample_rate
            if speed > 0:  # a chunk leaves once it has been spoken
                time.sleep(max(0.0, started + sent_s / speed - time.monotonic()))
            call.send(chunk)
            for update in call.poll():
                on_update(update)
                shown += 1
        result = call.end()
    except BaseException:
        call.cancel()
        raise
    for update in result.updates[shown:]:
        on_update(update)
    return result


def format_update(update: Update) -> str:
    """One line per update: the window, the held label, the newest raw best class and the gate."""
    span = f"{update.start_s:7.2f}-{update.end_s:7.2f} s"
    if not update.speech:
        return f"{span}  {'-':<10}  no speech (speech frames {update.speech_ratio:.0%})"
    best = max(update.scores, key=update.scores.get)
    return f"{span}  {update.label:<10}  raw {best} {update.scores[best]:.2f}  (speech frames {update.speech_ratio:.0%})"


def update_json(update: Update) -> str:
    """One JSON line per update (``received_s`` left out: it is this process's clock)."""
    return json.dumps({"event": "update", "call_id": update.call_id, "start_s": update.start_s, "end_s": update.end_s,
                       "speech": update.speech, "speech_ratio": round(update.speech_ratio, 4), "label": update.label,
                       "scores": update.scores, "smoothed": update.smoothed})


def result_json(result: CallResult) -> str:
    """The END line: label, duration and segments."""
    return json.dumps({"event": "end", "call_id": result.call_id, "label": result.label, "duration_s": result.duration_s,
                       "segments": [{"label": s.label, "start_s": s.start_s, "end_s": s.end_s} for s in result.segments]})


__all__ = ["RAW_FORMATS", "file_chunks", "format_update", "play_call", "raw_chunks", "result_json", "update_json"]
