"""Client benchmark: preprocessing cost against served latency, and directory-mode throughput.

``python -m client.bench --url HOST:PORT`` (or ``ser bench-client``, which can also start the
local server) prints:

* preprocessing of one 2.5 s clip, 44.1 kHz stereo wav bytes -> decode -> mono -> 16 kHz
  (soxr HQ) -> fixed windows, in this one thread (ms per clip, clips/s);
* the served end-to-end latency of the same clip (``SerClient.classify``: preprocessing +
  requests), and preprocessing as a share of it;
* clips/s of directory mode (:func:`client.batch.predict_files`) over N generated clips at
  each concurrency.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .client_options import DEFAULT_MODEL
from .errors import ConfigError
from .option_values import arg_type, csv_ints, positive_int

if TYPE_CHECKING:  # argparse users (ser --help) must not pay for numpy, soxr or tritonclient
    from .sync_client import SerClient


@dataclass(frozen=True)
class ClientBenchConfig:
    """What :func:`run_client_bench` measures.

    Attributes:
        clip_s: clip length, seconds (2.5 as in the reference project).
        sample_rate: rate of the generated wav, Hz.
        channels: channels of the generated wav.
        reps: timed repetitions of preprocessing and of the served call (medians reported).
        clips: files generated for directory mode.
        concurrencies: directory-mode concurrencies to compare.
    """

    clip_s: float = 2.5
    sample_rate: int = 44_100
    channels: int = 2
    reps: int = 30
    clips: int = 64
    concurrencies: tuple[int, ...] = (1, 8)

    def __post_init__(self) -> None:
        if not self.clip_s > 0 or self.sample_rate <= 0 or self.channels <= 0:
            raise ConfigError(f"clip_s={self.clip_s}, sample_rate={self.sample_rate}, channels={self.channels}: must be positive")
        if self.reps < 1 or self.clips < 1 or not self.concurrencies or min(self.concurrencies) < 1:
            raise ConfigError(f"reps={self.reps}, clips={self.clips}, concurrencies={self.concurrencies}: need >= 1")


def make_clip(config: ClientBenchConfig, *, seed: int = 0) -> bytes:
    """A voiced clip as wav bytes (PCM_16) at ``config.sample_rate`` with ``config.channels`` channels."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(config.clip_s * config.sample_rate)) / config.sample_rate
    f0 = 140 + 40 * rng.random()
    y = 0.3 * np.sin(2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / config.sample_rate)
    data = np.stack([y * (1 - 0.1 * c) for c in range(config.channels)], 1) + 0.005 * rng.standard_normal((t.size, config.channels))
    buf = io.BytesIO()
    sf.write(buf, data.astype(np.float32), config.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def preprocessing_ms(clip: bytes, *, window_samples: int, hop_samples: int, reps: int) -> float:
    """Median ms of bytes -> 16 kHz mono -> windows, in this thread."""
    from .audio import AudioConfig, load_audio, make_windows
    from .timing import percentile, time_calls

    def preprocess() -> None:
        y = load_audio(clip, config=AudioConfig(sample_rate=16_000))
        make_windows(y, window_samples=window_samples, hop_samples=hop_samples)

    return percentile(time_calls(preprocess, warmup=2, runs=reps), 50)


def run_client_bench(client: SerClient, config: ClientBenchConfig = ClientBenchConfig(), *, print_fn=print) -> dict:
    """Measure and print; returns the figures as a dict. ``client`` must be open."""
    from .audio import load_audio, make_windows
    from .batch import predict_files
    from .timing import percentile, time_calls

    assert client.contract is not None, "client must be open"
    clip = make_clip(config)
    c = client.contract
    pre = preprocessing_ms(clip, window_samples=c.window_samples, hop_samples=c.hop_samples, reps=config.reps)
    client.classify(clip, name="warm-up")
    served_ms = percentile(time_calls(lambda: client.classify(clip, name="bench"), runs=config.reps), 50)
    figures = {
        "model": client.model, "protocol": client.protocol, "window_s": c.window_seconds,
        "windows_per_clip": len(make_windows(load_audio(clip), window_samples=c.window_samples, hop_samples=c.hop_samples)),
        "preprocess_ms": round(pre, 3), "preprocess_clips_per_s": round(1e3 / pre, 1),
        "served_ms": round(served_ms, 3), "preprocess_share": round(pre / served_ms, 4), "directory": {},
    }
    print_fn(f"{client.model} over {client.protocol} at {client.url}; clip {config.clip_s:g} s, "
             f"{config.sample_rate} Hz x {config.channels} ch, {figures['windows_per_clip']} window(s) of {c.window_seconds:g} s")
    print_fn(f"preprocessing (decode, mono, 16 kHz, windows; one thread): {pre:.2f} ms/clip = {1e3 / pre:.0f} clips/s")
    print_fn(f"served end to end (classify, median of {config.reps}): {served_ms:.2f} ms/clip; "
             f"preprocessing is {100 * pre / served_ms:.1f} % of it")
    with tempfile.TemporaryDirectory(prefix="ser-bench-") as tmp:
        files = []
        for i in range(config.clips):
            path = Path(tmp) / f"clip_{i:03d}.wav"
            path.write_bytes(make_clip(config, seed=i))
            files.append(path)
        for n in config.concurrencies:
            summary = predict_files(client, files, output=Path(tmp) / f"out-{n}.jsonl", concurrency=n)
            figures["directory"][n] = round(summary.clips_per_s, 1)
            print_fn(f"directory mode, {config.clips} clips, concurrency {n}: {summary.clips_per_s:.1f} clips/s "
                     f"({summary.elapsed_s:.2f} s, {summary.failed} failed)")
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options (shared by ``python -m client.bench`` and ``ser bench-client``)."""
    parser.add_argument("--url", default=None, help="server HOST:PORT, or several (HOST:PORT,HOST:PORT or dns:///NAME:PORT) to balance over (default: the protocol's local default)")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default: {DEFAULT_MODEL})")
    parser.add_argument("--reps", type=arg_type(positive_int), default=ClientBenchConfig.reps)
    parser.add_argument("--clips", type=arg_type(positive_int), default=ClientBenchConfig.clips,
                        help=f"files for directory mode (default: {ClientBenchConfig.clips})")
    default_conc = ",".join(map(str, ClientBenchConfig.concurrencies))
    parser.add_argument("--concurrency", type=arg_type(csv_ints), default=default_conc,
                        help=f"comma-separated concurrencies (default: {default_conc})")
    return parser


def config_from_args(args: argparse.Namespace) -> ClientBenchConfig:
    """A :class:`ClientBenchConfig` from parsed :func:`add_arguments` options."""
    return ClientBenchConfig(reps=args.reps, clips=args.clips, concurrencies=tuple(args.concurrency))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m client.bench``: against a running server."""
    from .sync_client import SerClient

    args = add_arguments(argparse.ArgumentParser(prog=f"python -m {__package__}.bench", description=__doc__.splitlines()[0])).parse_args(argv)
    with SerClient(args.url, model=args.model, protocol=args.protocol) as client:
        run_client_bench(client, config_from_args(args))
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    from .errors import SerError

    try:
        sys.exit(main())
    except SerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
