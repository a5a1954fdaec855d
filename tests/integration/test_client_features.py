"""Client features against the real session server.

Top-k, the async twin, every audio layout, long-audio windowing, directory mode's
output formats, and transport options passed through.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time

import numpy as np
import pytest
import soundfile as sf

from client.audio import AudioConfig, aggregate, resample
from client.batch import find_audio, predict_files
from client.errors import AudioTooLongError, ConfigError
from client.triton_client import AsyncSerClient, SerClient, TransportOptions, parse_classification
from tests.helpers import RAVDESS8, server_url

PROTOCOLS = ("grpc", "http")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_top_k_from_the_classification_extension_agrees_with_the_probabilities(triton_server, serving_clips, protocol):
    with SerClient(server_url(triton_server, protocol), model="ser_fp32", protocol=protocol) as client:
        plain = client.classify(serving_clips["long"])
        pred = client.classify(serving_clips["long"], top_k=3)
        w = pred.window_probabilities.shape[0]
        logits, _ = client.infer_windows(np.zeros((1, 16_000), np.float32) + 0.1, [16_000])  # warm path still works
        with pytest.raises(ConfigError, match="top_k"):
            client.classify(serving_clips["short"], top_k=9)
    assert logits.shape == (1, 8)
    assert pred.label == plain.label and np.allclose(pred.window_probabilities, plain.window_probabilities, atol=1e-6)
    assert len(pred.window_top_k) == w == 4 and all(len(row) == 3 for row in pred.window_top_k)
    for row, probs in zip(pred.window_top_k, pred.window_probabilities, strict=True):
        assert [lab for lab, _ in row] == [RAVDESS8[i] for i in np.argsort(-probs, kind="stable")[:3]]
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)  # logits, best first
    best3 = sorted(pred.probabilities.items(), key=lambda kv: -kv[1])[:3]
    assert [lab for lab, _ in pred.top_k] == [lab for lab, _ in best3] and pred.top_k[0][0] == pred.label


def test_classification_strings_parse_with_colons_in_labels():
    assert parse_classification([b"1.5:3:sad", b"-0.25:0:a:b"]) == (("sad", 1.5), ("a:b", -0.25))
    from client.errors import ContractError

    with pytest.raises(ContractError, match="score:index:label"):
        parse_classification([b"nonsense"])


async def _settled(client: AsyncSerClient, quiet_s: float = 0.3):
    last = await client.statistics()
    for _ in range(15):
        await asyncio.sleep(quiet_s)
        now = await client.statistics()
        if now == last:
            break
        last = now
    return last


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_async_client_keeps_n_requests_in_flight_so_the_server_batches(triton_server, serving_clips, protocol):
    rng = np.random.default_rng(8)
    clips = [(0.3 * rng.standard_normal(16_000)).astype(np.float32) for _ in range(24)]

    async def run():
        async with AsyncSerClient(server_url(triton_server, protocol), model="ser_int8", protocol=protocol) as client:
            one = await client.classify(serving_clips["long"], top_k=2)
            before = await _settled(client)
            results = await client.classify_many(clips + [serving_clips["empty"]], concurrency=24, sample_rate=16_000)
            after = await _settled(client)
        await client.close()  # twice is safe
        return one, results, before, after

    one, results, before, after = asyncio.run(run())
    with SerClient(server_url(triton_server, protocol), model="ser_int8", protocol=protocol) as sync:
        ref = sync.classify(serving_clips["long"])
    assert one.label == ref.label and np.abs(one.window_probabilities - ref.window_probabilities).max() < 1e-3
    assert len(one.top_k) == 2 and len(one.window_top_k) == 4
    assert [r.index for r in results] == list(range(25)) and all(r.ok for r in results[:24])
    assert not results[24].ok and "0 bytes" in str(results[24].error)
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == 24 and executions < inferences, (inferences, executions)


def _voice(seconds: float, sr: int) -> np.ndarray:
    rng = np.random.default_rng(21)
    t = np.arange(int(seconds * sr)) / sr
    pitch = 170 * (1 + 0.15 * np.sin(2 * np.pi * 2.5 * t))
    y = 0.4 * np.sin(2 * np.pi * np.cumsum(pitch) / sr) + 0.2 * np.sin(2 * np.pi * np.cumsum(2.7 * pitch) / sr)
    return (y + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_every_format_channel_layout_and_rate_gives_the_label_of_the_16k_mono_original(triton_server, tmp_path):
    y = _voice(0.9, 16_000)
    original = tmp_path / "original.wav"
    sf.write(original, y, 16_000, subtype="FLOAT")
    variants = {}
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        variants[f"wav-{subtype}"] = (tmp_path / f"mono-{subtype}.wav", y, 16_000, {"subtype": subtype})
    for channels in (2, 6):
        variants[f"wav-{channels}ch"] = (tmp_path / f"{channels}ch.wav", np.repeat(y[:, None], channels, 1), 16_000, {"subtype": "PCM_16"})
    for rate in (8_000, 22_050, 44_100, 48_000):
        up = resample(y, orig_sr=16_000, target_sr=rate)
        variants[f"wav-{rate}"] = (tmp_path / f"r{rate}.wav", np.stack([up, up], 1), rate, {"subtype": "FLOAT"})
    variants["flac-24"] = (tmp_path / "x.flac", y, 16_000, {"subtype": "PCM_24"})
    variants["ogg-vorbis"] = (tmp_path / "x.ogg", y, 16_000, {"subtype": "VORBIS"})
    if "MP3" in sf.available_formats():
        variants["mp3"] = (tmp_path / "x.mp3", resample(y, orig_sr=16_000, target_sr=44_100), 44_100, {"format": "MP3"})
    for path, data, rate, kw in variants.values():
        sf.write(path, data, rate, **kw)
    tolerance = {"wav-PCM_U8": 0.03, "wav-8000": 0.05, "ogg-vorbis": 0.03, "mp3": 0.05}
    with SerClient(triton_server.grpc_url, model="ser_fp32") as client:
        ref = client.classify(original)
        results = list(client.classify_many([v[0] for v in variants.values()], concurrency=4))
    ref_p = np.array(list(ref.probabilities.values()))
    margin = float(np.sort(ref_p)[-1] - np.sort(ref_p)[-2])
    report = {}
    for name, result in zip(variants, results, strict=True):
        assert result.ok, f"{name}: {result.error}"
        delta = float(np.abs(np.array(list(result.prediction.probabilities.values())) - ref_p).max())
        report[name] = round(delta, 5)
        assert delta <= tolerance.get(name, 5e-3), (name, delta)
        if margin > 2 * tolerance.get(name, 5e-3):
            assert result.prediction.label == ref.label, name
    print(f"\nmax |Δp| vs the 16 kHz mono original (margin {margin:.4f}): {report}")


def test_long_audio_is_cut_into_documented_windows_whose_results_are_kept_and_combined(triton_server, tmp_path):
    y = _voice(3.3, 44_100)
    path = tmp_path / "long.wav"
    sf.write(path, np.stack([y, 0.5 * y], 1), 44_100, subtype="PCM_16")
    with SerClient(triton_server.grpc_url, model="ser_fp32") as client:
        pred = client.classify(path)
        y16 = resample(np.asarray(sf.read(path, dtype="float32")[0].mean(1)), orig_sr=44_100, target_sr=16_000)
        one_by_one = [client.infer_windows(y16[None, s : s + 16_000], [16_000])[1][0] for s in pred.window_offsets]
    # 52 800 samples at 16 kHz, W = 16 000, hop 8 000: starts every hop, plus one aligned to the end
    assert list(pred.window_offsets) == [0, 8_000, 16_000, 24_000, 32_000, 36_800]
    assert list(pred.window_num_samples) == [16_000] * 6 and pred.num_windows == 6
    assert np.abs(np.stack(one_by_one) - pred.window_probabilities).max() < 1e-4
    combined = aggregate(pred.window_probabilities, pred.window_num_samples)
    assert np.allclose(list(pred.probabilities.values()), combined, atol=1e-6)
    assert pred.preprocess_s > 0 and pred.infer_s > 0 and pred.latency_s >= pred.preprocess_s + pred.infer_s - 1e-6


def test_a_file_over_the_maximum_duration_is_refused_without_being_decoded(triton_server, serving_clips, monkeypatch):
    def no_full_read(*args, **kwargs):
        raise AssertionError("the whole file was decoded")

    with SerClient(triton_server.grpc_url, audio=AudioConfig(max_duration_s=3.0)) as client:
        monkeypatch.setattr(sf, "read", no_full_read)
        with pytest.raises(AudioTooLongError, match=r"very_long.flac.*6.2 s > 3 s"):
            client.classify(serving_clips["very_long"])


def test_directory_mode_writes_csv_with_a_column_per_label_and_error_rows(triton_server, serving_clips, tmp_path):
    folder = tmp_path / "in"
    (folder / "deep").mkdir(parents=True)
    for key in ("short", "long", "garbage"):
        (folder / "deep" / serving_clips[key].name).write_bytes(serving_clips[key].read_bytes())
    out = tmp_path / "out.csv"
    with SerClient(triton_server.grpc_url) as client:
        summary = predict_files(client, find_audio([folder]), output=out, concurrency=2, top_k=2)
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == [str(folder / "deep" / n) for n in ("garbage.wav", "long.wav", "short.wav")]
    assert [r["ok"] for r in rows] == ["False", "True", "True"] and summary.failed == 1 and summary.ok == 2
    assert summary.clips_per_s == pytest.approx(2 / summary.elapsed_s)  # the throughput counts classified files only
    assert rows[0]["error_type"] == "AudioDecodeError" and "garbage.wav" in rows[0]["error"]
    for r in rows[1:]:
        probs = {lab: float(r[f"p_{lab}"]) for lab in RAVDESS8}
        assert r["label"] == max(probs, key=probs.get) and abs(sum(probs.values()) - 1) < 1e-4
        assert r["top_k"].split(";")[0].startswith(r["label"] + ":")


def _rows_of(out, fmt: str) -> list[dict]:
    if fmt == "csv":
        return [{**r, "ok": r["ok"] == "True"} for r in csv.DictReader(out.open(newline=""))]
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_classifies_again_the_files_whose_rows_record_failures_leaving_one_row_per_file(
    triton_server, serving_clips, tmp_path, fmt
):
    folder = tmp_path / "in"
    folder.mkdir()
    a, b, late = folder / "a.wav", folder / "b.wav", folder / "late.wav"
    a.write_bytes(serving_clips["short"].read_bytes())
    b.write_bytes(serving_clips["long"].read_bytes())
    files = [a, late, b]  # late.wav does not exist yet: its row records an AudioDecodeError
    out = tmp_path / f"rows.{fmt}"
    with SerClient(triton_server.grpc_url) as client:
        first = predict_files(client, files, output=out)
        assert (first.ok, first.failed) == (2, 1)
        rows = _rows_of(out, fmt)
        assert [r["ok"] for r in rows] == [True, False, True] and rows[1]["error_type"] == "AudioDecodeError"
        with open(out, "a", encoding="utf-8", newline="") as fh:  # a second copy of a's row, as two runs would write
            fh.write(out.read_text().splitlines()[1 if fmt == "csv" else 0] + "\n")
        late.write_bytes(serving_clips["short"].read_bytes())  # the failure is gone
        again = predict_files(client, files, output=out, resume=True)
    assert (again.skipped, again.ok, again.failed) == (2, 1, 0)
    final = _rows_of(out, fmt)
    assert sorted(r["file"] for r in final) == sorted(str(f) for f in files)  # one row per file
    assert all(r["ok"] for r in final) and final[-1]["file"] == str(late)  # the latest result replaced the failure
    assert {r["file"]: r["label"] for r in final if r["file"] != str(late)} == {r["file"]: r["label"] for r in rows if r["ok"]}


def test_transport_options_reach_the_tritonclient_constructors_and_every_call(triton_server, serving_clips, tmp_path, monkeypatch):
    import tritonclient.grpc as grpcclient

    seen: list[tuple[str, dict]] = []

    class Recording(grpcclient.InferenceServerClient):
        def __init__(self, url, **kw):
            seen.append(("init", kw))
            super().__init__(url, **kw)

        def infer(self, *args, **kw):
            seen.append(("infer", kw))
            return super().infer(*args, **kw)

        def is_server_live(self, **kw):
            seen.append(("live", kw))
            return super().is_server_live(**kw)

    monkeypatch.setattr(grpcclient, "InferenceServerClient", Recording)
    options = TransportOptions(headers={"x-request-source": "tests", "authorization": "Bearer t0ken"}, request_timeout_s=7.5)
    with SerClient(triton_server.grpc_url, transport=options) as client:
        client.classify(serving_clips["short"])
    kinds = {k: kw for k, kw in seen}
    # A loopback address skips any proxy in the environment (client_options.GRPC_NO_PROXY).
    assert kinds["init"] == {"ssl": False, "channel_args": [("grpc.enable_http_proxy", 0)]}
    for call in ("live", "infer"):
        assert kinds[call]["headers"] == {"x-request-source": "tests", "authorization": "Bearer t0ken"}
        assert kinds[call]["client_timeout"] == 7.5

    ca, key, chain = (tmp_path / n for n in ("ca.pem", "key.pem", "chain.pem"))
    for f in (ca, key, chain):
        f.write_text("-----BEGIN CERTIFICATE-----\n")
    tls = TransportOptions(ssl=True, root_certificates=ca, private_key=key, certificate_chain=chain,
                           connection_timeout_s=2, network_timeout_s=9)
    assert tls.grpc_client_kwargs() == {"ssl": True, "root_certificates": str(ca), "private_key": str(key), "certificate_chain": str(chain)}
    assert tls.http_client_kwargs(timeout_s=30) == {
        "connection_timeout": 2, "network_timeout": 9, "ssl": True, "insecure": False,
        "ssl_options": {"ca_certs": str(ca), "keyfile": str(key), "certfile": str(chain)},
    }
    assert TransportOptions().http_client_kwargs(timeout_s=30) == {"connection_timeout": 30, "network_timeout": 30}
    assert TransportOptions(ssl=True, insecure=True).ssl_context().verify_mode.name == "CERT_NONE"


def test_the_cli_classifies_a_directory_concurrently_into_jsonl_with_a_progress_bar(triton_server, serving_clips, tmp_path):
    from tests.helpers import ser

    folder = tmp_path / "in"
    folder.mkdir()
    for key in ("short", "long", "empty"):
        (folder / serving_clips[key].name).write_bytes(serving_clips[key].read_bytes())
    out = tmp_path / "rows.jsonl"
    t0 = time.perf_counter()
    proc = ser("predict", str(folder), "--url", triton_server.grpc_url, "--concurrency", "3", "--output", str(out),
               "--top-k", "2", "--progress", "--header", "x-tenant=tests", "--retries", "1")
    assert proc.returncode == 1, proc.stderr  # one file failed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["ok"] for r in rows] == [False, True, True] and rows[0]["error_type"] == "AudioDecodeError"
    assert len(rows[1]["top_k"]) == 2 and "predict" in proc.stderr and "3/3" in proc.stderr
    assert "error: 1 of 3 files failed" in proc.stderr and time.perf_counter() - t0 < 60
    resumed = ser("predict", str(folder), "--url", triton_server.grpc_url, "--output", str(out), "--resume")
    assert resumed.returncode == 1 and "error: 1 of 3 files failed" in resumed.stderr  # the empty file, classified again
    assert f"error: {folder / 'empty.wav'}: cannot decode audio" in resumed.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == [*rows[1:], rows[0]]  # its row is the latest


def test_the_client_benchmark_prints_preprocessing_served_latency_and_directory_throughput(triton_server):
    from client.bench import ClientBenchConfig, run_client_bench

    lines: list[str] = []
    with SerClient(triton_server.grpc_url) as client:
        figures = run_client_bench(client, ClientBenchConfig(reps=2, clips=4, concurrencies=(1, 4)), print_fn=lines.append)
    assert figures["preprocess_ms"] > 0 and figures["served_ms"] > 0 and set(figures["directory"]) == {1, 4}
    assert figures["windows_per_clip"] == 4  # 2.5 s in 1 s windows, hop 0.5 s: 0, 0.5, 1.0, 1.5 s
    assert any("preprocessing is" in ln for ln in lines) and any("concurrency 4" in ln for ln in lines)
