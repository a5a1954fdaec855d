"""The live-call sweep's report: ``live-calls.md`` (the table and the headline) and ``live-calls.json``.

One row per number of concurrent callers (:meth:`loadtest.live_calls.LiveCallRun.row`): calls placed
and failed, update lag p50/p95/p99, update gap p50/p99, time to first emotion p50/p99 and END to the
segments p99, all in ms, exact (from every recorded time, not Locust's rounded histogram).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from loadtest.live_calls import LiveCallReport

#: The table's columns: (row key, heading).
COLUMNS = (
    ("users", "concurrent calls"), ("calls", "calls placed"), ("failed_calls", "failed calls"),
    ("update_lag_p50_ms", "update lag p50"), ("update_lag_p95_ms", "p95"), ("update_lag_p99_ms", "p99"),
    ("update_gap_p50_ms", "update gap p50"), ("update_gap_p99_ms", "p99"),
    ("first_emotion_p50_ms", "first emotion p50"), ("first_emotion_p99_ms", "p99"),
    ("end_to_segments_p99_ms", "END to segments p99"),
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:g}"
    return str(v)


def table_lines(report: LiveCallReport) -> list[str]:
    """The markdown table of the runs (what ``ser loadtest --live-calls`` prints, too)."""
    lines = ["| " + " | ".join(heading for _, heading in COLUMNS) + " |", "|" + "---:|" * len(COLUMNS)]
    for run in report.runs:
        row = run.row()
        lines.append("| " + " | ".join(_fmt(row[key]) for key, _ in COLUMNS) + " |")
    return lines


def write_live_report(report: LiveCallReport) -> dict:
    """Write ``live-calls.md`` and ``live-calls.json`` into ``config.out_dir``; returns (and records) the paths."""
    c = report.config
    assert c.live_calls is not None
    out = c.out_dir
    files = {"markdown": out / "live-calls.md", "json": out / "live-calls.json"}
    target = f"the local server on `{c.repository}`" if c.repository is not None else f"`{c.url}`"
    text = [
        f"# Live calls: `{report.stream_model}` on {target}", "",
        f"Each user is one caller placing calls back to back, cycling through {c.audio.generated_clips} generated speech clip(s), "
        f"{c.live_calls.chunk_ms} ms chunks each sent once spoken; {c.run_time_s} s measured per run"
        + (f" after a {c.warmup_s} s warm-up" if c.warmup_s else "")
        + f". The hop of `{report.stream_model}` is {report.hop_ms:g} ms: an update lag under it keeps pace with the call.",
        "",
        "Times in ms, exact percentiles of every record: update lag = the window's last sample spoken to its update; "
        "update gap = between two updates of a call; first emotion = START to the first labelled update; "
        "END to segments = END sent to the call's segments. Calls placed count the failed ones.",
        "", *table_lines(report), "",
    ]
    gates = [f"- {line}" for line in report.gate_lines()]
    text += [*gates, *([""] if gates else []), f"**{report.headline()}**", ""]
    files["markdown"].write_text("\n".join(text))
    doc = {
        "config": json.loads(json.dumps(asdict(c), default=str)),
        "stream_model": report.stream_model,
        "hop_ms": report.hop_ms,
        "runs": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.row().items()} for r in report.runs],
        "gate_failures": {f"u{r.users}": list(r.gate_failures) for r in report.runs if r.gate_failures},
        "most_held": report.most_held,
        "passed": report.passed,
        "headline": report.headline(),
    }
    files["json"].write_text(json.dumps(doc, indent=1) + "\n")
    report.files = files
    return files
