"""Reading RAVDESS-layout trees, and actor-held-out splits pinned by a manifest."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from client.errors import ConfigError, CorpusError
from training.corpus import CorpusWarning, parse_ravdess_name, read_ravdess
from training.folds import actor_split, read_manifest, write_manifest

SPEECH = [
    "Actor_01/03-01-01-01-01-01-01.wav",  # neutral
    "Actor_01/03-01-05-02-02-01-01.wav",  # angry, strong
    "Actor_02/03-01-04-01-01-02-02.wav",  # sad
    "Actor_02/03-01-08-02-02-02-02.wav",  # surprised
    "Actor_03/03-01-02-01-01-01-03.wav",  # calm
]
SKIPPED = [
    "Actor_01/03-02-03-01-01-01-01.wav",  # song (vocal channel 02)
    "Actor_02/01-01-03-01-01-01-02.mp4",  # audio-video modality
    "Actor_02/02-01-03-01-01-01-02.wav",  # video-only modality
    "Actor_03/03-01-09-01-01-01-03.wav",  # emotion code out of range
    "Actor_03/recording.wav",             # malformed name
    "Actor_03/notes.txt",                 # not audio
    "README.md",                          # not audio
]


def _tree(root: Path, names: list[str]) -> Path:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"RIFF")  # the reader goes by names; decoding happens later
    return root


def test_reader_labels_speech_clips_from_their_file_names(tmp_path):
    root = _tree(tmp_path, SPEECH)
    clips = read_ravdess(root)
    got = {(c.path.relative_to(root.resolve()).as_posix(), c.actor, c.label, c.intensity, c.statement, c.repetition)
           for c in clips}
    assert got == {
        (SPEECH[0], 1, "neutral", 1, 1, 1),
        (SPEECH[1], 1, "angry", 2, 2, 1),
        (SPEECH[2], 2, "sad", 1, 1, 2),
        (SPEECH[3], 2, "surprised", 2, 2, 2),
        (SPEECH[4], 3, "calm", 1, 1, 1),
    }
    assert [c.female for c in clips] == [False, False, True, True, False]


def test_reader_skips_song_video_malformed_and_non_audio_with_one_warning(tmp_path):
    root = _tree(tmp_path, SPEECH + SKIPPED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clips = read_ravdess(root)
    assert len(clips) == len(SPEECH)
    ours = [w for w in caught if issubclass(w.category, CorpusWarning)]
    assert len(ours) == 1
    msg = str(ours[0].message)
    assert f"skipped {len(SKIPPED)} file(s)" in msg
    for reason in ("1 song", "2 video modality", "2 not audio", "2 name not"):
        assert reason in msg, msg


def test_reader_includes_song_on_request(tmp_path):
    root = _tree(tmp_path, SPEECH + SKIPPED[:1])
    clips = read_ravdess(root, include_song=True)
    assert len(clips) == len(SPEECH) + 1
    assert {c.vocal_channel for c in clips} == {1, 2}


def test_reader_reads_a_synthetic_corpus_completely(synth_corpus_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorpusWarning)
        clips = read_ravdess(synth_corpus_dir)
    assert len(clips) == 6 * 4 * 8
    assert {c.label for c in clips} == {"happy", "sad", "angry", "fearful"}


def test_missing_root_empty_root_and_nothing_usable_raise_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        read_ravdess(tmp_path / "nope")
    with pytest.raises(CorpusError, match="no RAVDESS"):
        read_ravdess(tmp_path)
    _tree(tmp_path, SKIPPED)
    with pytest.warns(CorpusWarning), pytest.raises(CorpusError, match="no RAVDESS"):
        read_ravdess(tmp_path)


@pytest.mark.parametrize("name", ["03-01-01-01-01-01-01.WAV", "01-02-08-02-02-02-24.wav"])
def test_name_parser_accepts_valid_codes(name):
    assert parse_ravdess_name(name) is not None


@pytest.mark.parametrize("name", ["03-01-01-01-01-01.wav", "04-01-01-01-01-01-01.wav", "03-01-01-03-01-01-01.wav",
                                  "3-1-1-1-1-1-1.wav", "03-01-01-01-01-01-01.wav.bak"])
def test_name_parser_rejects_malformed_names(name):
    assert parse_ravdess_name(name) is None


# --- folds ---------------------------------------------------------------------------


def _corpus(tmp_path: Path, actors: int = 8) -> Path:
    names = [f"Actor_{a:02d}/03-01-{e:02d}-01-01-01-{a:02d}.wav" for a in range(1, actors + 1) for e in (1, 3, 4, 5)]
    return _tree(tmp_path / "corpus", names)


def test_no_actor_is_in_two_partitions(tmp_path):
    clips = read_ravdess(_corpus(tmp_path))
    split = actor_split(clips, test_actors=2, val_actors=1, seed=0)
    parts = [set(split.actors(p)) for p in ("train", "val", "test")]
    assert [len(p) for p in parts] == [5, 1, 2]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert sum(len(p) for p in split) == len(clips)
    assert {a % 2 for a in split.actors("test")} == {0, 1}, "two test actors: one male, one female"


def test_manifest_reproduces_for_the_same_seed_and_round_trips(tmp_path):
    root = _corpus(tmp_path)
    clips = read_ravdess(root)
    a = write_manifest(actor_split(clips, test_fraction=0.25, seed=7), tmp_path / "a.json", root=root)
    b = write_manifest(actor_split(list(reversed(clips)), test_fraction=0.25, seed=7), tmp_path / "b.json", root=root)
    assert a.read_text() == b.read_text()
    back = read_manifest(a)
    assert back.actors("test") == actor_split(clips, test_fraction=0.25, seed=7).actors("test")
    assert all(c.path.is_file() for part in back for c in part)
    assert '"path": "Actor_01/' in a.read_text(), "paths are relative to the corpus root"


def test_another_seed_can_draw_other_test_actors(tmp_path):
    clips = read_ravdess(_corpus(tmp_path))
    draws = {actor_split(clips, test_actors=2, seed=s).actors("test") for s in range(6)}
    assert len(draws) > 1


@pytest.mark.parametrize("bad", [dict(test_actors=0), dict(test_actors=7, val_actors=1),
                                 dict(test_fraction=1.5), dict(test_actors=2, test_fraction=0.2), dict(val_actors=-1)])
def test_impossible_splits_raise_config_error(bad, tmp_path):
    clips = read_ravdess(_corpus(tmp_path))
    with pytest.raises(ConfigError):
        actor_split(clips, **bad)


def test_a_missing_or_malformed_manifest_raises_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="no such split manifest"):
        read_manifest(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"clips": [{"path": "x.wav"}]}')
    with pytest.raises(CorpusError, match="malformed"):
        read_manifest(bad, root=tmp_path)
