"""``ser stream``: play a file or piped PCM into a live call and print the emotion updates as they come.

Its options and handler; the handler imports the client when run.
"""

from __future__ import annotations

import argparse
import sys

from client.client_options import DEFAULT_GRPC_URL, DEFAULT_TIMEOUT_S
from client.stream_service import STREAM_MODEL
from ser.arg_types import non_negative_float, positive_float, positive_int


def cmd_stream(args: argparse.Namespace) -> int:
    """`ser stream FILE|-`: one live call, updates on stdout as they arrive, segments at the end."""
    from client.errors import ConfigError
    from client.stream import StreamSession
    from client.stream_play import (
        file_chunks,
        format_update,
        play_call,
        raw_chunks,
        result_json,
        update_json,
    )

    if args.source == "-":
        if args.rate is None:
            raise ConfigError("-: raw PCM from stdin needs --rate (Hz) and --format")
        rate, chunks = args.rate, raw_chunks(sys.stdin.buffer, sample_rate=args.rate, sample_format=args.format,
                                             chunk_ms=args.chunk_ms)
    else:
        rate, chunks = file_chunks(args.source, chunk_ms=args.chunk_ms)

    def show(update) -> None:
        print(update_json(update) if args.json else format_update(update), flush=True)

    with StreamSession(args.url, model=args.model, timeout_s=args.timeout_s) as session:
        result = play_call(session, chunks, sample_rate=rate, speed=args.speed, hop_ms=args.hop_ms,
                           vad=False if args.no_vad else None, on_update=show)
    if args.json:
        print(result_json(result), flush=True)
    else:
        print(f"call {result.call_id}: {result.duration_s:.2f} s, last label {result.label or '-'}")
        for s in result.segments:
            print(f"  {s.start_s:7.2f}-{s.end_s:7.2f} s  {s.label}")
    return 0


def add_parsers(sub) -> None:
    """Add ``stream`` to ``sub`` (the ``ser`` subcommands)."""
    st = sub.add_parser("stream", help="play a file or piped PCM into a live call (ser-stream) and print the updates as they come")
    st.add_argument("source", metavar="FILE|-", help="an audio file, or - for raw mono PCM on stdin (--rate, --format)")
    st.add_argument("--url", default=DEFAULT_GRPC_URL, help=f"the server's gRPC address (default: {DEFAULT_GRPC_URL})")
    st.add_argument("--model", default=STREAM_MODEL, help=f"the streaming model (default: {STREAM_MODEL})")
    st.add_argument("--rate", type=positive_int, default=None, help="stdin: the PCM's sample rate, Hz")
    st.add_argument("--format", choices=["s16le", "f32le"], default="s16le", help="stdin: sample layout (default: s16le)")
    st.add_argument("--chunk-ms", type=positive_int, default=100, help="audio per chunk sent, ms (default: 100)")
    st.add_argument("--speed", type=non_negative_float, default=1.0,
                    help="1 plays in real time, 4 four times faster, 0 as fast as possible (default: 1)")
    st.add_argument("--hop-ms", type=positive_int, default=None, help="time between updates, ms (default: the model's)")
    st.add_argument("--no-vad", action="store_true", help="classify every window, speech or not")
    st.add_argument("--json", action="store_true", help="one JSON line per update, then one for the result")
    st.add_argument("--timeout-s", type=positive_float, default=DEFAULT_TIMEOUT_S,
                    help=f"how long to wait for the result after the last chunk, s (default: {DEFAULT_TIMEOUT_S:g})")
    st.set_defaults(func=cmd_stream)
