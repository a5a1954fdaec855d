"""``ser loadtest --compare-server-side``: real Locust, both audio paths, against the session's real server."""

from __future__ import annotations

import json
import math

import pytest


def test_the_clip_pool_holds_encoded_clips_the_audio_model_reads():
    import io

    import soundfile as sf

    from loadtest.clip_pool import build_clip_pool
    from loadtest.payload import AudioSourceConfig

    pool = build_clip_pool(AudioSourceConfig(generated_clips=3))
    assert len(pool) == 3 and pool.total_bytes > 3 * 44
    for name, data in pool.clips:
        info = sf.info(io.BytesIO(data))
        assert name.startswith("<generated") and info.format == "WAV" and info.duration > 1.0


@pytest.mark.slow
def test_both_paths_run_side_by_side_and_the_report_compares_them(triton_server, tmp_path):
    from loadtest.path_compare import compare_paths
    from loadtest.payload import AudioSourceConfig

    cmp = compare_paths(url=triton_server.grpc_url, metrics_url=triton_server.metrics_url, window_model="ser_fp32",
                        users=4, run_time_s=4, warmup_s=2, audio=AudioSourceConfig(generated_clips=4), out_dir=tmp_path)
    client, server = cmp.runs
    assert (client.path, server.path) == ("client-side", "server-side") and cmp.passed, cmp.headline()
    for r in cmp.runs:
        assert r.run.requests > 0 and r.run.failures == 0 and r.run.rps > 0 and r.window_batch >= 1.0
        assert r.run.stats_csv.is_file()
    assert math.isfinite(cmp.throughput_ratio) and math.isfinite(cmp.p99_ratio)
    doc = json.loads(cmp.files["json"].read_text())
    assert [r["path"] for r in doc["runs"]] == ["client-side", "server-side"] and doc["audio_model"] == "ser"
    text = cmp.files["markdown"].read_text()
    assert "| client-side | ser_fp32 | 4 |" in text and "| server-side | ser | 4 |" in text and "clips/s" in text
