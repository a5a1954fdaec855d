"""``ser batch``'s pieces without a server: sources, shards, the config, the output folder, the decoding stage.

Hostile inputs first: a missing folder, a folder without audio, an unknown URI scheme, a bad
shard, a config that cannot work, a Parquet part cut short by a kill, corrupt audio.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from client.audio import AudioConfig
from client.errors import ConfigError
from deploy.bulk.config import BulkConfig
from deploy.bulk.job import check_cpus, model_instances, pool_size
from deploy.bulk.sources import in_shard, list_sources, parse_shard, read_source
from deploy.bulk.stages import decode_batch
from tests.helpers import ser


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "in"
    (root / "a" / "b").mkdir(parents=True)
    t = np.arange(12_000) / 16_000
    for name in ("one.wav", "a/two.flac", "a/b/three.wav"):
        sf.write(root / name, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16_000)
    (root / "a" / "notes.txt").write_text("not audio")
    (root / "a" / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    return root


def test_folders_globs_files_and_file_uris_list_the_same_audio(folder):
    pytest.importorskip("pyarrow", reason="the ray extra is not installed")
    expected = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".wav", ".flac"))
    assert list_sources([str(folder)]) == expected
    assert list_sources([f"{folder}/**/*.wav", str(folder / "a" / "two.flac")]) == expected
    assert list_sources([f"file://{folder}"]) == sorted(f"file://{p}" for p in expected)
    assert read_source(f"file://{folder}/one.wav") == (folder / "one.wav").read_bytes()


@pytest.mark.parametrize("source, reason", [
    ("{tmp}/missing", "no such file or folder"),
    ("{tmp}/empty", "no audio files there"),
    ("{tmp}/*.nothing", "no audio files there"),
    ("file://{tmp}/missing/", "no such object or prefix"),
    ("nosuchscheme://bucket/x", "no filesystem reads this scheme"),
])
def test_a_source_that_names_no_audio_is_a_config_error_naming_it(tmp_path, source, reason):
    pytest.importorskip("pyarrow", reason="the ray extra is not installed")
    (tmp_path / "empty").mkdir()
    text = source.format(tmp=tmp_path)
    with pytest.raises(ConfigError, match=reason) as info:
        list_sources([text])
    assert text in str(info.value)


def test_shards_split_the_sources_into_disjoint_parts_that_cover_them():
    sources = [f"s3://bucket/clip_{i}.wav" for i in range(200)]
    parts = [[s for s in sources if in_shard(s, index=i, count=4)] for i in range(4)]
    assert sorted(sum(parts, [])) == sorted(sources) and all(parts)
    assert parse_shard("3/16") == (3, 16)


@pytest.mark.parametrize("text", ["3", "16/16", "-1/4", "a/b", "2/0", ""])
def test_a_bad_shard_is_a_config_error(text):
    with pytest.raises(ConfigError, match="shard="):
        parse_shard(text)


@pytest.mark.parametrize("options, field", [
    ({"sources": ()}, "sources"), ({"out": ""}, "out"), ({"protocol": "udp"}, "protocol"), ({"actors": 0}, "actors"),
    ({"files_per_batch": 0}, "files_per_batch"), ({"actor_cpus": 0}, "actor_cpus"), ({"timeout_s": 0}, "timeout_s"),
    ({"shard": (4, 4)}, "shard"), ({"num_cpus": 0}, "num_cpus"),
])
def test_the_config_checks_itself(options, field):
    with pytest.raises(ConfigError, match=field):
        BulkConfig(**{"sources": ("x",), "out": "o", "url": "127.0.0.1:8001", **options})


def test_the_pool_is_sized_from_the_servers_capacity_unless_given():
    config = BulkConfig(sources=("x",), out="o", url="a:1,b:1")
    assert model_instances({"instance_group": [{"count": 2}, {"count": 1}]}) == 3
    assert model_instances({}) == 1
    assert pool_size(config, instances=3, endpoints=2) == 12
    assert pool_size(BulkConfig(sources=("x",), out="o", url="a:1", actors=5), instances=3, endpoints=2) == 5


def test_a_pool_that_leaves_no_cpu_for_decoding_is_refused():
    check_cpus(2.0, actors=4, actor_cpus=0.25)
    with pytest.raises(ConfigError, match="has 1 CPUs: 4 client actors"):
        check_cpus(1.0, actors=4, actor_cpus=0.25)


def test_a_part_cut_short_by_a_kill_is_removed_and_its_files_counted_as_not_done(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="the ray extra is not installed")
    import pyarrow.parquet as pq

    from deploy.bulk.output import done_sources

    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"source": ["a.wav", "b.wav"]}), out / "good.parquet")
    whole = (out / "good.parquet").read_bytes()
    (out / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    assert done_sources(str(out)) == {"a.wav", "b.wav"}
    assert not (out / "cut.parquet").exists()
    assert done_sources(str(tmp_path / "never-written")) == set()
    with pytest.raises(ConfigError, match="not a folder"):
        done_sources(str(out / "good.parquet"))


def test_decoding_turns_each_bad_file_into_its_own_error_row(folder):
    sources = np.array([str(folder / "one.wav"), str(folder / "a" / "bad.wav"), str(folder / "gone.wav")], dtype=object)
    out = decode_batch({"source": sources}, audio=AudioConfig(), window_samples=16_000, hop_samples=8_000)
    assert list(out["windows"]) == [1, 0, 0] and out["duration_s"][0] == pytest.approx(0.75)
    assert np.frombuffer(out["waveforms"][0], dtype=np.float32).shape == (16_000,)
    assert out["error_type"][0] == "" and all(out["error_type"][1:])
    assert all(str(s) in e for s, e in zip(sources[1:], out["error"][1:], strict=True))


def test_ser_batch_names_a_missing_source_in_one_line(tmp_path):
    proc = ser("batch", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {tmp_path / 'missing'}: no such file or folder"], proc.stderr
