"""The synthetic corpus: deterministic, and in RAVDESS's exact on-disk layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from client.errors import ConfigError
from training.synth import synthesize_corpus
from training.synth_specs import RAVDESS_EMOTIONS

SMALL = dict(actors=2, emotions=("neutral", "sad", "angry"), statements=(1, 2), repetitions=(1,), intensities=(1, 2))


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    return synthesize_corpus(tmp_path_factory.mktemp("synth") / "a", sample_rate=16_000, seed=3, **SMALL).root


def test_same_seed_gives_byte_identical_files(small_corpus, tmp_path):
    again = synthesize_corpus(tmp_path / "b", sample_rate=16_000, seed=3, **SMALL).root
    assert _digests(again) == _digests(small_corpus)


def test_another_seed_gives_different_audio(small_corpus, tmp_path):
    other = synthesize_corpus(tmp_path / "c", sample_rate=16_000, seed=4, **SMALL).root
    a, b = _digests(small_corpus), _digests(other)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a)


def test_files_follow_the_exact_ravdess_naming_and_folders(small_corpus):
    names = set(_digests(small_corpus))
    expected = set()
    for actor in (1, 2):
        for emo in ("neutral", "sad", "angry"):
            code = RAVDESS_EMOTIONS.index(emo) + 1
            for intensity in ((1,) if emo == "neutral" else (1, 2)):  # neutral has no strong intensity
                for statement in (1, 2):
                    expected.add(f"Actor_{actor:02d}/03-01-{code:02d}-{intensity:02d}-{statement:02d}-01-{actor:02d}.wav")
    assert names == expected


def test_files_are_16_bit_pcm_at_the_requested_rate_with_quiet_non_zero_edges(small_corpus):
    for path in sorted(small_corpus.rglob("*.wav")):
        info = sf.info(str(path))
        assert (info.subtype, info.channels, info.samplerate) == ("PCM_16", 1, 16_000)
        assert 1.3 <= info.duration <= 3.7, path.name
        y, _ = sf.read(str(path), dtype="float32")
        head = y[: int(0.08 * 16_000)]
        assert np.any(head != 0), "leading near-silence must not be digital zero"
        assert np.sqrt(np.mean(head**2)) < 0.01 < np.sqrt(np.mean(y**2))


def test_a_smaller_corpus_holds_the_same_clips_as_a_bigger_one(small_corpus, tmp_path):
    one = synthesize_corpus(tmp_path / "d", sample_rate=16_000, seed=3, actors=(2,), emotions=("sad",),
                            statements=(2,), repetitions=(1,), intensities=(2,)).root
    name = "Actor_02/03-01-04-02-02-01-02.wav"
    assert _digests(one) == {name: _digests(small_corpus)[name]}


def test_default_counts_match_ravdess_speech_per_actor(tmp_path):
    from training.synth_specs import SynthConfig, ravdess_clip_specs

    specs = ravdess_clip_specs(SynthConfig(actors=24))
    assert len(specs) == 1440  # 24 actors x 60 speech clips, as RAVDESS
    assert {s.actor % 2 for s in specs} == {0, 1}


@pytest.mark.parametrize(
    "bad",
    [dict(actors=0), dict(actors=25), dict(actors=(3, 3)), dict(emotions=("bored",)), dict(emotions=()),
     dict(statements=(3,)), dict(repetitions=()), dict(intensities=(0,)), dict(layout="tess"), dict(sample_rate=100)],
)
def test_bad_synth_options_raise_config_error_naming_the_value(bad, tmp_path):
    with pytest.raises(ConfigError) as err:
        synthesize_corpus(tmp_path / "x", **bad)
    key = next(iter(bad))
    assert key in str(err.value)
    assert not (tmp_path / "x").exists()


# --- CREMA-D layout --------------------------------------------------------------------

CREMA_SMALL = dict(layout="crema-d", actors=2, emotions=("neutral", "angry"), sentences=("DFA", "IEO"))


def test_crema_d_files_follow_the_exact_audiowav_naming_with_levels_only_on_ieo(tmp_path):
    summary = synthesize_corpus(tmp_path / "crema", seed=3, **CREMA_SMALL)
    names = set(_digests(summary.root))
    expected = {f"AudioWAV/{a}_{s}_{e}_XX.wav" for a in (1001, 1002) for s in ("DFA", "IEO") for e in ("NEU", "ANG")}
    expected -= {f"AudioWAV/{a}_IEO_ANG_XX.wav" for a in (1001, 1002)}  # IEO angry comes in LO, MD, HI instead
    expected |= {f"AudioWAV/{a}_IEO_ANG_{lvl}.wav" for a in (1001, 1002) for lvl in ("LO", "MD", "HI")}
    assert names == expected
    info = sf.info(str(summary.root / "AudioWAV/1001_DFA_ANG_XX.wav"))
    assert (info.subtype, info.samplerate) == ("PCM_16", 16_000), "CREMA-D ships 16 kHz; so does its twin by default"


def test_crema_d_is_deterministic_and_a_smaller_corpus_is_a_subset(tmp_path):
    big = _digests(synthesize_corpus(tmp_path / "a", seed=3, **CREMA_SMALL).root)
    one = _digests(synthesize_corpus(tmp_path / "b", seed=3, layout="crema-d", actors=(1002,), emotions=("angry",),
                                     sentences=("IEO",), levels=("HI",)).root)
    assert one == {"AudioWAV/1002_IEO_ANG_HI.wav": big["AudioWAV/1002_IEO_ANG_HI.wav"]}


def test_default_crema_d_counts_match_the_corpus_design():
    from training.synth_specs import SynthConfig, clip_specs

    specs = clip_specs(SynthConfig(layout="crema-d", actors=91, as_distributed=False))
    assert len(specs) == 91 * 82 == 7462  # 11 sentences x 6 emotions + IEO (5 emotions x 3 levels + neutral XX)
    assert {s.actor for s in specs} == set(range(1001, 1092))


def test_the_crema_d_twin_has_the_distributions_7442_clips_per_sentence_and_its_sentence_codes():
    from collections import Counter

    from training.corpus_codes import CREMA_D_SENTENCE_TEXTS
    from training.synth_specs import SynthConfig, clip_specs

    specs = clip_specs(SynthConfig(layout="crema-d", actors=91))
    assert len(specs) == 7442, "the CREMA-D README: 7,442 original clips from 91 actors"
    per_sentence = Counter(s.filename().split("_")[1] for s in specs)
    # Counted in the distribution's AudioWAV/ listing (12 sentences; 20 recordings never made).
    assert per_sentence == {"IEO": 1456, "TIE": 545, "IOM": 546, "IWW": 546, "TAI": 546, "MTI": 540, "IWL": 546,
                            "ITH": 540, "DFA": 546, "ITS": 545, "TSI": 546, "WSI": 540}
    assert CREMA_D_SENTENCE_TEXTS["WSI"] == "We'll stop in a couple of minutes"
    assert CREMA_D_SENTENCE_TEXTS["TIE"] == "That is exactly what happened"
    assert "KIT" not in CREMA_D_SENTENCE_TEXTS


def test_the_crema_d_twin_writes_the_documented_no_audio_clip_as_silence(tmp_path):
    root = synthesize_corpus(tmp_path / "c", layout="crema-d", actors=(1076,), emotions=("sad", "neutral"),
                             sentences=("MTI", "ITS")).root
    silent, _ = sf.read(str(root / "AudioWAV/1076_MTI_SAD_XX.wav"), dtype="float32")
    voiced, _ = sf.read(str(root / "AudioWAV/1076_MTI_NEU_XX.wav"), dtype="float32")
    assert 2.5 < silent.shape[0] / 16_000 < 2.6 and not silent.any()
    assert np.abs(voiced).max() > 0.01
    assert not (root / "AudioWAV/1076_ITS_NEU_XX.wav").exists(), "a recording the distribution lacks"
    assert (root / "AudioWAV/1076_ITS_SAD_XX.wav").exists()


@pytest.mark.parametrize(
    "bad", [dict(actors=92), dict(actors=(1, 2)), dict(emotions=("calm",)), dict(sentences=("XYZ",)), dict(levels=("XX",)),
            dict(sentences=("KIT",)), dict(as_distributed="yes")],
)
def test_bad_crema_d_options_raise_config_error_naming_the_value(bad, tmp_path):
    with pytest.raises(ConfigError) as err:
        synthesize_corpus(tmp_path / "x", layout="crema-d", **bad)
    assert next(iter(bad)) in str(err.value)
