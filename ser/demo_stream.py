"""The demo's live call: one held-out clip streamed into ``ser-stream``, its updates printed as they arrive."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO


def print_streamed_call(url: str, path: Path, out: TextIO, *, speed: float = 0.0) -> None:
    """Play ``path`` into a live call on ``url``'s streaming model; print each update, then the segments.

    Args:
        url: the server's gRPC address.
        path: an audio file.
        out: where the lines go.
        speed: 1 plays in real time; 0 (the demo's default) sends as fast as possible.
    """
    from client.stream import StreamSession
    from client.stream_play import file_chunks, format_update, play_call

    rate, chunks = file_chunks(path, chunk_ms=100)
    with StreamSession(url) as session:
        result = play_call(session, chunks, sample_rate=rate, speed=speed,
                           on_update=lambda u: print(f"      {format_update(u)}", file=out, flush=True))
    segments = ", ".join(f"{s.label} {s.start_s:.2f}-{s.end_s:.2f} s" for s in result.segments)
    print(f"      segments: {segments}", file=out)
