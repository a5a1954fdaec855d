"""``ser demo``: the whole bundle end to end on the embedded default.

synthetic RAVDESS-layout corpus -> tiny wav2vec2 trained on an actor-held-out
split -> ONNX fp32 + dynamic int8 (parity-checked) -> Triton repositories
(portable: the python backend; native: Triton's own ONNX Runtime backend) -> the real tritonserver
on 127.0.0.1 -> held-out clips classified through the client over gRPC -> a
table and the held-out accuracy -> server stopped, nothing left behind.

Each step reuses its cached output in ``workdir`` when its inputs are unchanged
(the corpus when its recipe matches, the checkpoint when its config hash
matches), so a second run takes seconds plus the server.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from client.client_options import DEFAULT_MODEL, PROTOCOLS
from client.errors import ConfigError

#: The README section the opening note points to (tests/unit/test_demo_texts.py checks that it exists).
LIMITS_HEADING = "Limits: what is measured here and what is only expected"

HONESTY = (
    "Note: the demo model is a tiny wav2vec2 trained from scratch on a synthetic corpus. It knows only that\n"
    "corpus; it says nothing about real speech. Real results need a pretrained wav2vec2 checkpoint, the real\n"
    f"RAVDESS/CREMA-D corpora and a GPU (see README.md, section '{LIMITS_HEADING}')."
)

#: Where serving the native repository on GPU nodes is described.
DEPLOYMENT_DOC = "docs/deployment.md"


def next_steps(portable: Path, native: Path) -> str:
    """The demo's closing hint: what to run next on this host, and where the GPU-node repository is served from."""
    return (f"Next: `ser serve --repository {portable}` and `ser predict FILE.wav` (with the venv active: "
            f"`source .venv/bin/activate`, or `.venv/bin/ser`), or {DEPLOYMENT_DOC} to serve {native} on GPU nodes.")


@dataclass(frozen=True)
class DemoConfig:
    """Options of ``ser demo``.

    Attributes:
        workdir: where the corpus, checkpoint and exports are kept between runs.
        repository: model repository root; ``portable/`` and ``native/`` are written under it.
        fresh: rebuild every step instead of reusing cached outputs.
        protocol: ``grpc`` (default) or ``http`` for the classification calls.
        model: which served variant classifies (``ser_int8`` or ``ser_fp32``).
        concurrency: requests in flight while classifying (lets the dynamic batcher merge them).
        loadtest_users: Locust users of the closing load test.
        loadtest_s: its duration in seconds.
        max_steps: training steps (``None``: the demo recipe's; fewer for a quick check of the path).
        verify_cpu_classes: CPU classes the int8 model must also agree with fp32 on
            (``None``: ``avx2`` where it can be emulated here, see :mod:`export.isa_check`).
    """

    workdir: Path = Path(".cache/demo")
    repository: Path = Path("model_repository")
    fresh: bool = False
    protocol: str = "grpc"
    model: str = DEFAULT_MODEL
    concurrency: int = 8
    loadtest_users: int = 8
    loadtest_s: int = 5
    max_steps: int | None = None
    verify_cpu_classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps={self.max_steps}: must be >= 1")
        object.__setattr__(self, "workdir", Path(self.workdir))
        object.__setattr__(self, "repository", Path(self.repository))
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol={self.protocol!r}: expected one of {list(PROTOCOLS)}")
        from export.repository.names import model_name  # noqa: PLC0415 - when a demo is configured, not at --help

        served = tuple(model_name(v) for v in ("int8", "fp32"))
        if self.model not in served:
            raise ConfigError(f"model={self.model!r}: the demo serves {' and '.join(map(repr, served))}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency={self.concurrency}: must be >= 1")


def _step(out: TextIO, n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", file=out, flush=True)


def _corpus(config: DemoConfig, out: TextIO) -> Path:
    """Synthesise the demo corpus unless the same recipe already wrote it."""
    import shutil

    from training.synth import synthesize_corpus
    from training.training_recipes import DEMO

    corpus = config.workdir / "corpus"
    stamp = config.workdir / "corpus.synth.json"  # beside, not inside: the reader would list it as skipped
    wanted = json.dumps({"layout": "ravdess", **DEMO.synth}, sort_keys=True)
    if not config.fresh and stamp.is_file() and stamp.read_text() == wanted:
        print(f"      reusing {corpus}", file=out)
        return corpus
    if corpus.exists():
        shutil.rmtree(corpus)
    stamp.unlink(missing_ok=True)
    summary = synthesize_corpus(corpus, layout="ravdess", progress=True, **DEMO.synth)
    stamp.write_text(wanted)
    print(f"      {summary}", file=out)
    return corpus


def run_demo(config: DemoConfig = DemoConfig(), *, out: TextIO = sys.stdout) -> int:
    """Run the demo; returns the process exit code (0 when every held-out clip was classified)."""
    from training.folds import read_manifest
    from training.train import train
    from training.training_recipes import DEMO

    total = 7
    t_all = time.perf_counter()
    print(HONESTY + "\n", file=out)

    _step(out, 1, total, f"synthetic RAVDESS-layout corpus -> {config.workdir / 'corpus'}")
    corpus = _corpus(config, out)

    _step(out, 2, total, "fine-tune a tiny Wav2Vec2ForSequenceClassification (actor-held-out split)")
    steps = {} if config.max_steps is None else {"max_steps": config.max_steps}
    result = train(DEMO.config(corpus=corpus, out=config.workdir / "checkpoint", cache=not config.fresh, **steps),
                   progress=True)
    print(f"      {result}", file=out)

    from export.cpu_class import cpu_class
    from export.isa_check import emulator_command

    classes = config.verify_cpu_classes
    if classes is None:
        classes = ("avx2",) if emulator_command("avx2") is not None else ()
    checked = ", ".join(dict.fromkeys([cpu_class(), *classes]))
    _step(out, 3, total, f"export ONNX fp32 + dynamic int8, parity-checked against PyTorch (int8 on CPU classes: {checked})")
    from export.pipeline import export_checkpoint

    exported = export_checkpoint(result.checkpoint, config.workdir / "export", variants=("fp32", "int8"),
                                 verify_cpu_classes=classes)
    print(f"      {exported}", file=out)

    _step(out, 4, total, f"write Triton repositories under {config.repository}/ (portable: served below; native: "
                              "`ser serve --runtime native`, and the NGC container on GPU nodes)")
    from export.repository import write_repository

    portable = config.repository / "portable"
    write_repository(config.workdir / "export", portable, runtime="portable", variants=("fp32", "int8"), stream_model=True)
    write_repository(config.workdir / "export", config.repository / "native", runtime="native", variants=("fp32", "int8"))
    print(f"      {portable}: " + ", ".join(sorted(p.name for p in portable.iterdir() if p.is_dir())), file=out)

    _step(out, 5, total, "start the real tritonserver (nvidia-pytriton's binary) on 127.0.0.1")
    from client.triton_client import SerClient
    from deploy.local_triton import LocalTriton

    split = read_manifest(result.manifest)
    clips = list(split.test)
    server = LocalTriton(portable)
    with server:
        print(f"      ready in {server.startup_s:.1f} s: gRPC {server.grpc_url}, HTTP {server.http_url}, "
              f"metrics {server.metrics_url}", file=out)
        _step(out, 6, total, f"classify {len(clips)} held-out clips (actors {list(split.actors('test'))}) "
                  f"with {config.model} over {config.protocol}, {config.concurrency} in flight")
        url = server.grpc_url if config.protocol == "grpc" else server.http_url
        rows, errors = [], []
        with SerClient(url, model=config.model, protocol=config.protocol) as client:
            t0 = time.perf_counter()
            for res in client.classify_many([c.path for c in clips], concurrency=config.concurrency):
                clip = clips[res.index]
                if res.ok:
                    p = res.prediction
                    rows.append((clip.path.resolve().relative_to(corpus.resolve()), clip.label, p.label, p.confidence, p.latency_s))
                else:
                    errors.append(f"{clip.path}: {res.error}")
            wall = time.perf_counter() - t0
            stats = client.statistics()
        print(f"      one clip as a live call on ser-stream ({clips[0].path.name}), updates as they arrive:", file=out)
        from ser.demo_stream import print_streamed_call

        print_streamed_call(server.grpc_url, clips[0].path, out)
        _step(out, 7, total, f"short Locust load test: {config.loadtest_users} users for {config.loadtest_s} s on {config.model}")
        report = _loadtest(config, server, result.manifest)
    leftovers = server.stub_pids() + [str(p) for p in server.shm_regions()]

    _print_table(rows, out)
    correct = sum(1 for r in rows if r[1] == r[2])
    accuracy = correct / len(rows) if rows else 0.0
    print(f"\nheld-out accuracy: {correct}/{len(rows)} = {accuracy:.1%} (chance {1 / len(result.labels):.1%}; "
          f"training reported {result.test_accuracy:.1%} in process)", file=out)
    print(f"served {len(rows)} clips in {wall:.2f} s ({len(rows) / wall:.1f} clips/s); server batching: "
          f"{stats.inference_count} inferences in {stats.execution_count} executions "
          f"(mean batch {stats.mean_batch_size:.2f})", file=out)
    print(f"load test: {report.headline()}\n           report: {config.workdir / 'loadtest' / 'loadtest.md'}", file=out)
    print(f"server stopped (exit {server.returncode}); "
          + ("no process or /dev/shm region left behind" if not leftovers else f"LEFT BEHIND: {leftovers}"), file=out)
    print(f"done in {time.perf_counter() - t_all:.0f} s. {next_steps(portable, config.repository / 'native')}", file=out)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 0 if not errors and not leftovers and report.passed else 1


def _loadtest(config: DemoConfig, server, manifest: Path):
    """A few seconds of Locust against the running demo server, on the held-out clips; no failure allowed."""
    from loadtest.gates import Thresholds
    from loadtest.payload import AudioSourceConfig
    from loadtest.run_config import LoadTestConfig
    from loadtest.runner import run_loadtest

    url = server.grpc_url if config.protocol == "grpc" else server.http_url
    return run_loadtest(LoadTestConfig(
        url=url, metrics_url=server.metrics_url, model=config.model, protocol=config.protocol,
        users=(config.loadtest_users,), run_time_s=config.loadtest_s, compare_users=config.loadtest_users,
        audio=AudioSourceConfig(manifest=manifest, partition="test"),
        thresholds=Thresholds(max_failure_ratio=0.0), out_dir=config.workdir / "loadtest",
    ))


def _print_table(rows: list[tuple], out: TextIO) -> None:
    header = ("file", "true", "predicted", "confidence", "latency ms")
    width = max([len(str(r[0])) for r in rows] + [len(header[0])])
    print(f"\n{header[0]:<{width}}  {header[1]:<9} {header[2]:<9} {header[3]:>10} {header[4]:>10}", file=out)
    for path, true, pred, conf, lat in rows:
        mark = " " if true == pred else "x"
        print(f"{str(path):<{width}}  {true:<9} {pred:<9} {conf:>10.3f} {lat * 1000:>10.1f} {mark}", file=out)


__all__ = ["DemoConfig", "run_demo", "HONESTY", "next_steps"]
