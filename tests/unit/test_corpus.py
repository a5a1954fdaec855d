"""Reading RAVDESS-layout trees, and actor-held-out splits pinned by a manifest."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from client.errors import ConfigError
from tests.helpers import files_named
from training.corpus import CorpusWarning, read_ravdess
from training.corpus_codes import parse_ravdess_name
from training.errors import CorpusError
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


def test_reader_labels_speech_clips_from_their_file_names(tmp_path):
    root = files_named(tmp_path, SPEECH)
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
    root = files_named(tmp_path, SPEECH + SKIPPED)
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
    root = files_named(tmp_path, SPEECH + SKIPPED[:1])
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
    files_named(tmp_path, SKIPPED)
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
    return files_named(tmp_path / "corpus", names)


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


# --- CREMA-D, class sets, combined corpora ----------------------------------------------

from training.corpus import (  # noqa: E402
    CLASS_SETS,
    apply_class_set,
    read_corpora,
    read_corpus,
    read_crema_d,
)
from training.corpus_codes import label_code, parse_crema_d_name  # noqa: E402
from training.folds import actor_kfold  # noqa: E402

CREMA = ["AudioWAV/1001_DFA_ANG_XX.wav", "AudioWAV/1001_IEO_HAP_HI.wav", "AudioWAV/1002_IEO_NEU_XX.wav",
         "AudioWAV/1091_TSI_SAD_XX.wav", "AudioWAV/1002_WSI_FEA_XX.wav", "AudioWAV/1002_MTI_DIS_XX.wav"]
CREMA_SKIPPED = [
    "AudioWAV/1001_DFA_SUR_XX.wav",   # no such emotion
    "AudioWAV/1092_DFA_ANG_XX.wav",   # actor out of range
    "AudioWAV/1001_ABC_ANG_XX.wav",   # no such sentence
    "AudioWAV/1001_DFA_ANG_ZZ.wav",   # no such level
    "AudioWAV/1001_DFA_ANG.wav",      # malformed
    "VideoDemographics.csv",          # not audio
]


def test_crema_d_reader_labels_clips_and_skips_the_rest_with_one_warning(tmp_path):
    root = files_named(tmp_path, CREMA + CREMA_SKIPPED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clips = read_crema_d(root)
    got = {(c.path.name, c.actor, c.label, c.statement, c.intensity, c.corpus) for c in clips}
    assert got == {
        ("1001_DFA_ANG_XX.wav", 1001, "angry", 9, 0, "crema-d"), ("1001_IEO_HAP_HI.wav", 1001, "happy", 1, 3, "crema-d"),
        ("1002_IEO_NEU_XX.wav", 1002, "neutral", 1, 0, "crema-d"), ("1091_TSI_SAD_XX.wav", 1091, "sad", 11, 0, "crema-d"),
        ("1002_WSI_FEA_XX.wav", 1002, "fearful", 12, 0, "crema-d"), ("1002_MTI_DIS_XX.wav", 1002, "disgust", 6, 0, "crema-d"),
    }
    ours = [w for w in caught if issubclass(w.category, CorpusWarning)]
    assert len(ours) == 1 and "skipped 6 file(s)" in str(ours[0].message)
    assert "5 name not AAAA_SSS_EMO_LVL.wav" in str(ours[0].message) and "1 not audio" in str(ours[0].message)


def test_crema_d_reader_reads_a_synthetic_corpus_completely(crema_corpus_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorpusWarning)
        clips = read_corpus(crema_corpus_dir, layout="crema-d")
    assert len(clips) == 6 * 24 and {c.actor for c in clips} == set(range(1001, 1007))


@pytest.mark.parametrize("name", ["1001_DFA_ANG_XX.wav", "1091_IEO_SAD_LO.wav"])
def test_crema_d_name_parser_accepts_valid_names(name):
    assert parse_crema_d_name(name) is not None


def test_class_sets_drop_or_merge_calm_and_take_surprised_only_from_ravdess(tmp_path):
    ravdess = read_ravdess(files_named(tmp_path / "r", SPEECH))  # neutral, angry, sad, surprised, calm
    crema = read_crema_d(files_named(tmp_path / "c", CREMA))
    both = read_corpora({"ravdess": tmp_path / "r", "crema-d": tmp_path / "c"})
    assert len(both) == len(ravdess) + len(crema)
    assert [c.label for c in apply_class_set(ravdess, "ravdess8")].count("calm") == 1
    assert "calm" not in {c.label for c in apply_class_set(ravdess, "ravdess7")}
    merged = apply_class_set(ravdess, "ravdess7", calm_as_neutral=True)
    assert len(merged) == 5 and [c.label for c in merged].count("neutral") == 2
    assert len(apply_class_set(both, "crema6")) == len(crema), "crema6 reads CREMA-D only"
    combined = apply_class_set(both, "combined7")
    assert len(combined) == len(both) - 1 and {c.corpus for c in combined if c.label == "surprised"} == {"ravdess"}
    assert CLASS_SETS["combined7"] == ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    assert (label_code("angry", corpus="ravdess"), label_code("angry", corpus="crema-d")) == ("05", "ANG")
    with pytest.raises(ConfigError, match="surprised"):
        label_code("surprised", corpus="crema-d")


def _two_corpora(tmp_path: Path) -> tuple[Path, Path]:
    r = _corpus(tmp_path, actors=10)
    c = files_named(tmp_path / "crema", [f"AudioWAV/{a}_DFA_{e}_XX.wav" for a in range(1001, 1016) for e in ("ANG", "SAD")])
    return r, c


def test_k_folds_test_every_actor_exactly_once_and_never_share_an_actor(tmp_path):
    r, c = _two_corpora(tmp_path)
    clips = read_corpora({"ravdess": r, "crema-d": c})
    folds = actor_kfold(clips, k=5, val_actors=1, seed=0)
    tested = [a for f in folds for a in f.actors("test")]
    assert sorted(tested) == sorted({c.actor for c in clips}), "each actor in exactly one test fold"
    for f in folds:
        parts = [set(f.actors(p)) for p in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert sum(len(p) for p in f) == len(clips)
        assert {cl.corpus for cl in f.test} == {"ravdess", "crema-d"}, "stratified: both corpora in every test fold"
        assert len(f.val) and {cl.corpus for cl in f.val} == {"ravdess", "crema-d"}
        ravdess_test = [a for a in f.actors("test") if a < 1000]
        assert len(ravdess_test) == 2  # 10 RAVDESS actors / 5 folds
        assert {a % 2 for a in ravdess_test} == {0, 1}, "each fold's two RAVDESS actors: one male, one female"


def test_fold_manifests_reproduce_for_the_same_seed_and_a_corpus_folds_the_same_alone(tmp_path):
    r, c = _two_corpora(tmp_path)
    roots = {"ravdess": r, "crema-d": c}
    both = read_corpora(roots)
    a = write_manifest(actor_kfold(both, k=5, seed=3)[2], tmp_path / "a.json", root=roots)
    b = write_manifest(actor_kfold(list(reversed(both)), k=5, seed=3)[2], tmp_path / "b.json", root=roots)
    assert a.read_text() == b.read_text()
    back = read_manifest(a)
    assert back.extra == {"fold": 2, "folds": 5} and all(cl.path.is_file() for part in back for cl in part)
    assert {cl.corpus for cl in back.test} == {"ravdess", "crema-d"}
    alone = actor_kfold(read_ravdess(r), k=5, seed=3)[2]
    assert alone.actors("test") == back.only("ravdess").actors("test")
    assert actor_kfold(both, k=5, seed=4)[2].actors("test") != back.actors("test")


@pytest.mark.parametrize("bad", [dict(k=1), dict(k=11), dict(k=5, val_actors=-1), dict(k=2, val_actors=5)])
def test_impossible_folds_raise_config_error(bad, tmp_path):
    with pytest.raises(ConfigError, match="k=|val_actors="):
        actor_kfold(read_ravdess(_corpus(tmp_path, actors=10)), **bad)


def test_an_unknown_layout_among_combined_corpora_raises_config_error(tmp_path):
    files_named(tmp_path / "a", SPEECH)
    with pytest.raises(ConfigError, match="layout='opera'"):
        read_corpora({"ravdess": tmp_path / "a", "opera": tmp_path / "a"})
