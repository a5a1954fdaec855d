"""Corpora as they ship: misnamed, broken, silent and overlong files are named, skipped and recorded, or fatal with strict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import files_named
from training.corpus import CorpusWarning, read_crema_d, read_ravdess, scan_corpus
from training.corpus_codes import crema_d_name_problem, ravdess_name_problem
from training.errors import UnusableClipsError
from training.screen import DecodeCache, ScreenConfig, decode_cache, screen_clips

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, problem", [
    ("1001_DFA_XYZ_XX.wav", "unknown emotion code 'XYZ' (expected one of ANG DIS FEA HAP NEU SAD)"),
    ("1001_KIT_ANG_XX.wav", "unknown sentence code 'KIT'"),
    ("1040_ITH_SAD_X.wav", "unknown level code 'X' (expected one of LO MD HI XX)"),
    ("1092_DFA_ANG_XX.wav", "actor 1092 outside CREMA-D's 1001..1091"),
    ("10a1_DFA_ANG_XX.wav", "actor '10a1' is not a four-digit id"),
    ("1001_DFA_ANG.wav", "3 field(s), expected 4: AAAA_SSS_EMO_LVL"),
    ("1001_DFA_ANG_XX.ogg", "suffix '.ogg' is not a CREMA-D file type"),
])
def test_a_crema_d_name_that_does_not_parse_says_exactly_what_is_wrong(name, problem):
    assert problem in crema_d_name_problem(name)


@pytest.mark.parametrize("name", ["1001_IEO_ANG_HI.wav", "1091_WSI_NEU_XX.mp3", "1064_TIE_SAD_XX.wav"])
def test_valid_crema_d_names_have_no_problem(name):
    assert crema_d_name_problem(name) is None


@pytest.mark.parametrize("name, problem", [
    ("03-01-09-01-01-01-03.wav", "unknown emotion code '09' (expected 01..08)"),
    ("04-01-01-01-01-01-01.wav", "unknown modality code '04' (expected 01 full-AV, 02 video-only, 03 audio-only)"),
    ("03-01-01-01-01-01-25.wav", "unknown actor code '25' (expected 01..24)"),
    ("03-01-01-01-01-01.wav", "6 field(s), expected 7"),
    ("03-01-1-01-01-01-01.wav", "emotion '1' is not a two-digit code"),
])
def test_a_ravdess_name_that_does_not_parse_says_exactly_what_is_wrong(name, problem):
    assert problem in ravdess_name_problem(name)


def test_the_reader_warning_and_the_scan_carry_each_bad_names_reason(tmp_path):
    root = files_named(tmp_path, ["AudioWAV/1001_DFA_ANG_XX.wav", "AudioWAV/1001_DFA_XYZ_XX.wav", "AudioWAV/1001_KIT_ANG_XX.wav"])
    with pytest.warns(CorpusWarning) as caught:
        scan = scan_corpus(root, layout="crema-d")
    assert [c.path.name for c in scan.clips] == ["1001_DFA_ANG_XX.wav"]
    details = {s.path.name: (s.reason, s.detail, s.defect) for s in scan.skipped}
    assert details["1001_DFA_XYZ_XX.wav"][0] == "name not AAAA_SSS_EMO_LVL.wav"
    assert "unknown emotion code 'XYZ'" in details["1001_DFA_XYZ_XX.wav"][1] and details["1001_DFA_XYZ_XX.wav"][2]
    msg = str(caught[0].message)
    assert "2 name not AAAA_SSS_EMO_LVL.wav" in msg and "unknown emotion code 'XYZ'" in msg and "'KIT'" in msg


def test_ravdess_recordings_its_documentation_rules_out_are_skipped_as_defects(tmp_path):
    root = files_named(tmp_path, [
        "Actor_01/03-01-05-01-01-01-01.wav",  # fine
        "Actor_01/03-01-01-02-01-01-01.wav",  # strong neutral: RAVDESS has none
        "Actor_01/03-02-08-01-01-01-01.wav",  # surprised song: songs have no disgust or surprise
        "Actor_01/03-01-05-01-01-01-02.wav",  # actor 02 in Actor_01
    ])
    with pytest.warns(CorpusWarning):
        scan = scan_corpus(root, layout="ravdess", include_song=True)
    assert [c.path.name for c in scan.clips] == ["03-01-05-01-01-01-01.wav"]
    reasons = {s.path.name: s.detail for s in scan.skipped if s.defect}
    assert "neutral has normal intensity only" in reasons["03-01-01-02-01-01-01.wav"]
    assert "songs are neutral, calm, happy, sad, angry, fearful" in reasons["03-02-08-01-01-01-01.wav"]
    assert "actor 02 in Actor_01" in reasons["03-01-05-01-01-01-02.wav"]


def test_a_crema_d_root_with_wav_and_mp3_copies_reads_each_recording_once_from_its_wav(tmp_path):
    names = ["1001_DFA_ANG_XX", "1001_DFA_SAD_XX"]
    root = files_named(tmp_path, [f"AudioWAV/{n}.wav" for n in names] + [f"AudioMP3/{n}.mp3" for n in names]
                  + ["VideoFlash/1001_DFA_ANG_XX.flv", "VideoDemographics.csv"])
    with pytest.warns(CorpusWarning, match="2 second copy of a recording"):
        clips = read_crema_d(root)
    assert sorted(c.path.relative_to(root.resolve()).as_posix() for c in clips) == [f"AudioWAV/{n}.wav" for n in names]


def test_a_ravdess_tree_unpacked_twice_reads_each_recording_once(tmp_path):
    names = ["Actor_01/03-01-05-01-01-01-01.wav", "Actor_01/03-01-04-01-01-01-01.wav"]
    root = files_named(tmp_path, names + [f"audio_speech_actors_01-24/{n}" for n in names])
    with pytest.warns(CorpusWarning, match="2 second copy"):
        clips = read_ravdess(root)
    assert sorted(c.path.relative_to(root.resolve()).as_posix() for c in clips) == sorted(names)


# --- broken audio: a synthetic CREMA-D as distributed, plus the kinds of damage real copies show ------------------

BROKEN = {
    "AudioWAV/1001_DFA_ANG_XX.wav": "cannot decode",          # 0 bytes
    "AudioWAV/1002_DFA_SAD_XX.wav": "silent",                 # no audio, as 1076_MTI_SAD_XX
    "AudioWAV/1003_DFA_ANG_XX.wav": "cannot decode",          # a git-lfs pointer named .wav
    "AudioWAV/1004_IEO_ANG_MD.wav": "too long for the corpus",  # a minute of takes, as 1064_IEO_DIS_MD.mp3
    "AudioWAV/1001_WSI_SAD_XX.wav": "too short for the corpus",  # a 0.3 s fragment
}
BAD_NAME = "AudioWAV/1002_DFA_XYZ_XX.wav"


@pytest.fixture(scope="module")
def broken_crema(tmp_path_factory) -> Path:
    """4 actors x 10 clips (angry, sad; DFA, IEO, WSI) with :data:`BROKEN` damaged and one badly named copy."""
    from training.synth import synthesize_corpus

    root = synthesize_corpus(tmp_path_factory.mktemp("broken") / "crema", layout="crema-d", actors=4,
                             emotions=("angry", "sad"), sentences=("DFA", "IEO", "WSI"), seed=1).root
    shutil.copy(root / "AudioWAV/1002_DFA_ANG_XX.wav", root / BAD_NAME)
    (root / "AudioWAV/1001_DFA_ANG_XX.wav").write_bytes(b"")
    sf.write(str(root / "AudioWAV/1002_DFA_SAD_XX.wav"), np.zeros(40_000, np.float32), 16_000, subtype="PCM_16")
    (root / "AudioWAV/1003_DFA_ANG_XX.wav").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:2759bb80\nsize 82260\n")
    takes = [sf.read(str(p), dtype="float32")[0] for p in sorted((root / "AudioWAV").glob("1004_*.wav"))]
    sf.write(str(root / "AudioWAV/1004_IEO_ANG_MD.wav"), np.concatenate(takes * 3), 16_000, subtype="PCM_16")
    y, _ = sf.read(str(root / "AudioWAV/1001_WSI_SAD_XX.wav"), dtype="float32")
    start = int(np.argmax(np.abs(y)))
    sf.write(str(root / "AudioWAV/1001_WSI_SAD_XX.wav"), y[max(0, start - 2400): start + 2400], 16_000, subtype="PCM_16")
    return root


def test_the_screen_names_each_unusable_clip_and_its_reason(broken_crema):
    with pytest.warns(CorpusWarning):
        clips = read_crema_d(broken_crema)
    screened = screen_clips(clips)
    got = {s.path.relative_to(broken_crema.resolve()).as_posix(): s.reason for s in screened.skipped}
    assert got == BROKEN
    details = {s.path.name: s.detail for s in screened.skipped}
    assert "0 bytes" in details["1001_DFA_ANG_XX.wav"]
    assert "git-lfs pointer" in details["1003_DFA_ANG_XX.wav"]
    assert "median" in details["1004_IEO_ANG_MD.wav"]
    assert len(screened.audio) == len(clips) - len(BROKEN)
    assert 1.3 < screened.median_s["crema-d"] < 3.7


def test_decoding_is_cached_per_file_and_a_changed_file_is_decoded_again(broken_crema, tmp_path):
    shutil.copytree(broken_crema, tmp_path / "c")
    with pytest.warns(CorpusWarning):
        clips = read_crema_d(tmp_path / "c")
    cache = DecodeCache()
    first = screen_clips(clips, cache=cache)
    assert cache.decodes == len(clips)
    again = screen_clips(clips, cache=cache)
    assert cache.decodes == len(clips) and again.skipped == first.skipped
    fixed = tmp_path / "c" / "AudioWAV/1001_DFA_ANG_XX.wav"  # the 0-byte clip, repaired
    shutil.copy(broken_crema / "AudioWAV/1002_DFA_ANG_XX.wav", fixed)
    third = screen_clips(clips, cache=cache)
    assert cache.decodes == len(clips) + 1
    assert fixed.resolve() in third.audio and len(third.skipped) == len(first.skipped) - 1


def test_screen_thresholds_are_checked():
    from client.errors import ConfigError

    for bad in (dict(silence_dbfs=3.0), dict(duration_factor=1.0), dict(sample_rate=0)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ScreenConfig(**bad)


def _config(corpus: Path, out: Path, **more):
    from training.training_recipes import TEST

    return TEST.config(corpus=corpus, layout="crema-d", class_set="crema6", out=out, max_steps=4, batch_size=8,
                       window_s=1.0, **more)


def test_training_skips_the_broken_clips_records_them_in_split_json_and_goes_on(broken_crema, tmp_path):
    from training.train import train

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(_config(broken_crema, tmp_path / "run"), progress=False)
    doc = json.loads(result.manifest.read_text())
    recorded = {s["path"]: s["reason"] for s in doc["skipped"]}
    assert recorded == {**BROKEN, BAD_NAME: "name not AAAA_SSS_EMO_LVL.wav"}
    assert doc["skipped_counts"] == {"cannot decode": 2, "silent": 1, "too long for the corpus": 1,
                                     "too short for the corpus": 1, "name not AAAA_SSS_EMO_LVL.wav": 1}
    used = {c["path"] for c in doc["clips"]}
    assert not used & set(recorded) and len(used) == 40 - len(BROKEN)
    assert result.steps == 4 and result.labels == ("angry", "sad")
    audio_warnings = [w for w in caught if issubclass(w.category, CorpusWarning) and "as unusable" in str(w.message)]
    assert len(audio_warnings) == 1
    msg = str(audio_warnings[0].message)
    for reason in ("2 cannot decode", "1 silent", "1 too long for the corpus", "1 too short for the corpus"):
        assert reason in msg, msg
    assert len(result.metrics["skipped"]) == len(BROKEN) + 1


def test_cross_validation_reports_the_broken_clips_once_and_records_them_in_every_fold(broken_crema, tmp_path):
    from training.cv import run_cv

    with warnings.catch_warnings(record=True) as caught, decode_cache() as cache:
        warnings.simplefilter("always")
        cv = run_cv(_config(broken_crema, tmp_path / "cv", folds=2, val_actors=0), progress=False)
    assert len(cv.folds) == 2
    for fold in cv.folds:
        assert {s["path"] for s in json.loads(fold.manifest.read_text())["skipped"]} == {*BROKEN, BAD_NAME}
    assert len([w for w in caught if "as unusable" in str(w.message)]) == 1
    assert cache.decodes == 40, "every clip decoded once for both folds"


def test_strict_training_stops_with_a_typed_error_listing_the_unusable_files(broken_crema, tmp_path):
    from training.train import train

    with pytest.warns(CorpusWarning), pytest.raises(UnusableClipsError, match="1002_DFA_XYZ_XX.wav") as err:
        train(_config(broken_crema, tmp_path / "strict", strict=True), progress=False)
    assert "unknown emotion code 'XYZ'" in str(err.value), "a misnamed file stops a strict run before decoding"
    assert not (tmp_path / "strict" / "model.safetensors").exists()
    shutil.copytree(broken_crema, tmp_path / "c")
    (tmp_path / "c" / BAD_NAME).unlink()
    with pytest.raises(UnusableClipsError) as err:
        train(_config(tmp_path / "c", tmp_path / "strict2", strict=True), progress=False)
    assert len(err.value.skipped) == len(BROKEN)
    assert "1001_DFA_ANG_XX.wav (cannot decode: file is 0 bytes)" in str(err.value)
    recorded = json.loads((tmp_path / "strict2" / "split.json").read_text())["skipped_counts"]
    assert sum(recorded.values()) == len(BROKEN)


def test_strict_refuses_a_cached_run_that_skipped_clips(broken_crema, tmp_path):
    from training.train import train

    shutil.copytree(broken_crema, tmp_path / "c")
    (tmp_path / "c" / BAD_NAME).unlink()
    with pytest.warns(CorpusWarning):
        train(_config(tmp_path / "c", tmp_path / "run"), progress=False)
    with pytest.raises(UnusableClipsError, match="as recorded in"):
        train(_config(tmp_path / "c", tmp_path / "run", strict=True), progress=False)


def test_ser_train_strict_is_one_error_line_and_non_zero(broken_crema, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ser", "train", "--corpus", str(broken_crema), "--layout", "crema-d", "--class-set",
         "crema6", "--out", str(tmp_path / "o"), "--max-steps", "1", "--strict"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "unusable file(s)" in errors[0] and "Traceback" not in proc.stderr, proc.stderr
