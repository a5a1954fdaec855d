"""The native and the portable runtime under the same load, side by side: ``python -m loadtest.runtime_compare``.

One model, the same Locust users and run time against each runtime's repository, the runtimes
alternating round by round (portable, native, then native, portable...) so that drift of a shared
host hits both alike. Each cell is the median over the rounds; the ratio column is native / portable
windows per second. Each runtime is served by :class:`deploy.local_triton.LocalTriton` as ``ser serve``
serves it (native models share one ONNX Runtime pool as wide as the usable CPUs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from client.option_values import arg_type, csv_positive_ints, positive_int
from loadtest.run_config import LoadTestConfig

RUNTIMES = ("portable", "native")


@dataclass(frozen=True)
class Cell:
    """One runtime at one user count, medians over the rounds.

    Attributes:
        runtime: ``portable`` or ``native``.
        users: concurrent Locust users.
        windows_per_s: successful windows per second (client side).
        p50_ms, p99_ms: request latency (ms, client side).
        failures: failed requests, summed over the rounds.
    """

    runtime: str
    users: int
    windows_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int


def compare(repositories: dict[str, Path], *, model: str, users: tuple[int, ...], run_time_s: int, rounds: int,
            out_dir: Path, log=print) -> list[Cell]:
    """Run every (runtime, users) cell ``rounds`` times, runtimes alternating; returns one :class:`Cell` each."""
    from deploy.local_triton import LocalTriton
    from loadtest.locust_run import run_locust

    runs: dict[tuple[str, int], list] = {}
    for r in range(rounds):
        order = RUNTIMES if r % 2 == 0 else RUNTIMES[::-1]
        for runtime in order:
            with LocalTriton(repositories[runtime], load_models=[model], startup_timeout_s=300) as server:
                config = LoadTestConfig(url=server.grpc_url, model=model, users=users, run_time_s=run_time_s,
                                        out_dir=out_dir)
                for n in users:
                    run = run_locust(config, scenario=f"{runtime}-r{r}", url=server.grpc_url, users=n,
                                     metrics=server.metrics_url, out_dir=out_dir / runtime, server_pid=server.pid)
                    runs.setdefault((runtime, n), []).append(run)
                    log(f"round {r + 1}/{rounds} {runtime:8s} u={n:<3d} {run.windows_per_s:8.1f} windows/s  "
                        f"p50 {run.p50_ms:g} ms  p99 {run.p99_ms:g} ms  failures {run.failures}")
    return [
        Cell(runtime=rt, users=n, windows_per_s=statistics.median(r.windows_per_s for r in rs),
             p50_ms=statistics.median(r.p50_ms for r in rs), p99_ms=statistics.median(r.p99_ms for r in rs),
             failures=sum(r.failures for r in rs))
        for (rt, n), rs in sorted(runs.items(), key=lambda kv: (kv[0][1], RUNTIMES.index(kv[0][0])))
    ]


def markdown(cells: list[Cell]) -> str:
    """The table: users, then per runtime windows/s, p50, p99, and native / portable windows/s."""
    lines = ["| users | portable windows/s | p50 / p99 ms | native windows/s | p50 / p99 ms | native / portable |",
             "|---|---|---|---|---|---|"]
    by = {(c.runtime, c.users): c for c in cells}
    for n in sorted({c.users for c in cells}):
        p, q = by[("portable", n)], by[("native", n)]
        lines.append(f"| {n} | {p.windows_per_s:.1f} | {p.p50_ms:g} / {p.p99_ms:g} | {q.windows_per_s:.1f} | "
                     f"{q.p50_ms:g} / {q.p99_ms:g} | {q.windows_per_s / p.windows_per_s:.2f}× |")
    failures = sum(c.failures for c in cells)
    lines.append("")
    lines.append(f"failed requests: {failures}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the comparison, print the table (exit 1 when a request failed)."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.runtime_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--portable", type=Path, default=Path("model_repository/portable"), help="portable repository")
    parser.add_argument("--native", type=Path, default=Path("model_repository/native"), help="native repository")
    parser.add_argument("--model", default="ser_int8", help="the model both serve (default: ser_int8)")
    parser.add_argument("--users", type=arg_type(csv_positive_ints), default=(1, 4, 16), help="user counts (default: 1,4,16)")
    parser.add_argument("--run-time", type=arg_type(positive_int), default=15, help="seconds per cell (default: 15)")
    parser.add_argument("--rounds", type=arg_type(positive_int), default=2, help="rounds, runtimes alternating (default: 2)")
    parser.add_argument("--out", type=Path, default=Path(".cache/runtime-compare"), help="Locust files go here")
    args = parser.parse_args(argv)
    cells = compare({"portable": args.portable, "native": args.native}, model=args.model, users=tuple(args.users),
                    run_time_s=args.run_time, rounds=args.rounds, out_dir=args.out,
                    log=lambda line: print(line, file=sys.stderr, flush=True))
    print(markdown(cells))
    return 1 if any(c.failures for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
