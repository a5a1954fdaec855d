"""Corpus readers: a directory tree in a real corpus's layout -> a list of :class:`Clip`.

RAVDESS file names carry every label (``MM-VV-EE-II-SS-RR-AA.wav``):

====  =========================================================
MM    modality: 01 audio-video, 02 video-only, 03 audio-only
VV    vocal channel: 01 speech, 02 song
EE    emotion: 01 neutral 02 calm 03 happy 04 sad 05 angry 06 fearful 07 disgust 08 surprised
II    intensity: 01 normal, 02 strong (neutral has only 01)
SS    statement: 01 "Kids are talking by the door", 02 "Dogs are sitting by the door"
RR    repetition: 01, 02
AA    actor: 01..24 (odd male, even female)
====  =========================================================

Only audio-only speech is read by default. Everything else found under the root
(song, video modalities, names that do not parse, non-audio files) is counted
and reported in one warning, never silently dropped.

CREMA-D file names (``AudioWAV/AAAA_SSS_EMO_LVL.wav``):

====  =========================================================
AAAA  actor: 1001..1091
SSS   sentence: DFA IEO IOM ITH ITS IWL IWW KIT MTI TAI TIE TSI
EMO   emotion: ANG DIS FEA HAP NEU SAD
LVL   level: LO MD HI (sentence IEO only), XX (unspecified)
====  =========================================================

Both corpora map their codes onto one vocabulary of emotion names (``"angry"``,
``"neutral"``...), so class sets (:data:`CLASS_SETS`) work across corpora:
``ravdess8``, ``ravdess7`` (calm dropped, or merged into neutral), ``crema6`` and
``combined7`` (RAVDESS7 + CREMA-D; "surprised" only comes from RAVDESS).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

from client.errors import ConfigError, CorpusError

#: The ravdess8 class set, in emotion-code order (01..08).
RAVDESS8: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)
#: CREMA-D emotion codes -> the shared emotion names.
CREMA_D_EMOTIONS: dict[str, str] = {
    "ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad",
}
#: The twelve CREMA-D sentences, in the corpus's order (``Clip.statement`` is the 1-based index).
CREMA_D_SENTENCES: tuple[str, ...] = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "KIT", "MTI", "TAI", "TIE", "TSI")
#: CREMA-D levels; ``Clip.intensity`` is the index (0 XX unspecified, 1 LO, 2 MD, 3 HI).
CREMA_D_LEVELS: tuple[str, ...] = ("XX", "LO", "MD", "HI")
CREMA6: tuple[str, ...] = ("angry", "disgust", "fearful", "happy", "neutral", "sad")  # CREMA-D code order
RAVDESS7: tuple[str, ...] = tuple(lab for lab in RAVDESS8 if lab != "calm")
#: Class sets by name; each tuple is the logit order of a model trained on it.
CLASS_SETS: dict[str, tuple[str, ...]] = {
    "ravdess8": RAVDESS8,
    "ravdess7": RAVDESS7,
    "crema6": CREMA6,
    "combined7": RAVDESS7,  # RAVDESS7 + CREMA-D: "surprised" only comes from RAVDESS
}
#: Which corpora each class set reads.
CLASS_SET_LAYOUTS: dict[str, tuple[str, ...]] = {
    "ravdess8": ("ravdess",), "ravdess7": ("ravdess",), "crema6": ("crema-d",), "combined7": ("ravdess", "crema-d"),
}
LAYOUTS: tuple[str, ...] = ("ravdess", "crema-d")

_RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.(wav|flac|ogg|mp4)$", re.IGNORECASE)
_CREMA_D_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.(wav|flac|mp3)$")
_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".aac"}


class CorpusWarning(UserWarning):
    """Files under a corpus root were skipped (the message counts them by reason)."""


@dataclass(frozen=True)
class Clip:
    """One labelled utterance.

    Attributes:
        path: absolute path of the audio file.
        actor: speaker id (1..24 for RAVDESS, 1001..1091 for CREMA-D: the ranges never collide).
        label: emotion name (see :data:`RAVDESS8`, :data:`CREMA6`).
        statement: statement code (RAVDESS 1, 2; CREMA-D 1..12, see :data:`CREMA_D_SENTENCES`).
        repetition: repetition code (RAVDESS 1, 2; CREMA-D 1).
        intensity: RAVDESS 1 normal, 2 strong; CREMA-D 0 XX, 1 LO, 2 MD, 3 HI.
        vocal_channel: 1 speech, 2 song.
        corpus: layout the clip was read from (``"ravdess"`` or ``"crema-d"``).
    """

    path: Path
    actor: int
    label: str
    statement: int
    repetition: int
    intensity: int
    vocal_channel: int = 1
    corpus: str = "ravdess"

    @property
    def female(self) -> bool:
        """RAVDESS convention: even actor numbers are female.

        Only a balancing heuristic for CREMA-D, whose speakers' sex is listed in
        ``VideoDemographics.csv`` (not read).
        """
        return self.actor % 2 == 0


def parse_ravdess_name(name: str) -> dict[str, int] | None:
    """Fields of a RAVDESS file name, or ``None`` if it is not one.

    Returns:
        ``{"modality", "vocal_channel", "emotion", "intensity", "statement",
        "repetition", "actor"}`` as ints, each within its code range.
    """
    m = _RAVDESS_NAME.match(name)
    if not m:
        return None
    keys = ("modality", "vocal_channel", "emotion", "intensity", "statement", "repetition", "actor")
    d = dict(zip(keys, (int(g) for g in m.groups()[:7]), strict=True))
    ranges = {"modality": (1, 3), "vocal_channel": (1, 2), "emotion": (1, 8), "intensity": (1, 2),
              "statement": (1, 2), "repetition": (1, 2), "actor": (1, 99)}
    if any(not lo <= d[k] <= hi for k, (lo, hi) in ranges.items()):
        return None
    return d


def parse_crema_d_name(name: str) -> dict[str, int | str] | None:
    """Fields of a CREMA-D file name (``1001_DFA_ANG_XX.wav``), or ``None`` if it is not one.

    Returns:
        ``{"actor": 1001..1091, "sentence": "DFA", "emotion": "ANG", "level": "XX"}``.
    """
    m = _CREMA_D_NAME.match(name)
    if not m:
        return None
    actor, sentence, emotion, level = int(m.group(1)), m.group(2), m.group(3), m.group(4)
    if not 1001 <= actor <= 1091 or sentence not in CREMA_D_SENTENCES or emotion not in CREMA_D_EMOTIONS:
        return None
    if level not in CREMA_D_LEVELS:
        return None
    return {"actor": actor, "sentence": sentence, "emotion": emotion, "level": level}


#: A per-file classifier for :func:`_read_tree`: ``(path) -> Clip`` or a skip reason (str).
_FileRule = Callable[[Path], "Clip | str"]


def _read_tree(root: str | Path, rule: _FileRule, *, nothing: str) -> list[Clip]:
    """Walk ``root`` (any depth), keep what ``rule`` accepts, warn once about the rest.

    Raises:
        CorpusError: ``root`` is missing or not a directory, or no clip remains
            (``nothing`` says what was expected).
    """
    root = Path(root)
    if not root.exists():
        raise CorpusError(f"{root}: corpus directory does not exist")
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    clips: list[Clip] = []
    skipped: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            got: Clip | str = "hidden file"
        elif path.suffix.lower() not in _AUDIO_SUFFIXES:
            got = "not audio"
        else:
            got = rule(path)
        if isinstance(got, str):
            skipped.setdefault(got, []).append(str(path.relative_to(root)))
        else:
            clips.append(got)
    if skipped:
        total = sum(len(v) for v in skipped.values())
        parts = "; ".join(f"{len(v)} {reason} (e.g. {v[0]})" for reason, v in sorted(skipped.items()))
        warnings.warn(f"{root}: skipped {total} file(s): {parts}", CorpusWarning, stacklevel=3)
    if not clips:
        raise CorpusError(f"{root}: {nothing}")
    return clips


def read_ravdess(root: str | Path, *, include_song: bool = False) -> list[Clip]:
    """Read a RAVDESS-layout tree (``Actor_XX/03-01-EE-II-SS-RR-AA.wav``; any depth).

    Args:
        root: corpus root.
        include_song: also read vocal channel 02 (song).

    Returns:
        Clips sorted by path (deterministic order).

    Raises:
        CorpusError: ``root`` is missing or not a directory, or no clip remains.

    Warns:
        CorpusWarning: once, counting the skipped files by reason, with examples.
    """

    def rule(path: Path) -> Clip | str:
        f = parse_ravdess_name(path.name)
        if f is None:
            return "name not MM-VV-EE-II-SS-RR-AA.wav"
        if f["modality"] != 3:
            return "video modality (01/02)"
        if f["vocal_channel"] == 2 and not include_song:
            return "song (vocal channel 02)"
        folder = re.fullmatch(r"Actor_(\d+)", path.parent.name)
        if folder and int(folder.group(1)) != f["actor"]:
            return "actor in name differs from its Actor_XX folder"
        return Clip(
            path=path.resolve(), actor=f["actor"], label=RAVDESS8[f["emotion"] - 1], statement=f["statement"],
            repetition=f["repetition"], intensity=f["intensity"], vocal_channel=f["vocal_channel"],
        )

    return _read_tree(root, rule,
                      nothing="no RAVDESS audio-only speech clips found (expected Actor_XX/03-01-EE-II-SS-RR-AA.wav)")


def read_crema_d(root: str | Path) -> list[Clip]:
    """Read a CREMA-D-layout tree (``AudioWAV/1001_DFA_ANG_XX.wav``; any depth).

    Args:
        root: corpus root (the folder holding ``AudioWAV/``, or ``AudioWAV/`` itself).

    Returns:
        Clips sorted by path; ``statement`` is the sentence's 1-based index in
        :data:`CREMA_D_SENTENCES`, ``intensity`` the level's index in :data:`CREMA_D_LEVELS`.

    Raises:
        CorpusError: ``root`` is missing or not a directory, or no clip remains.

    Warns:
        CorpusWarning: once, counting the skipped files by reason, with examples.
    """

    def rule(path: Path) -> Clip | str:
        f = parse_crema_d_name(path.name)
        if f is None:
            return "name not AAAA_SSS_EMO_LVL.wav"
        return Clip(
            path=path.resolve(), actor=int(f["actor"]), label=CREMA_D_EMOTIONS[str(f["emotion"])],
            statement=CREMA_D_SENTENCES.index(str(f["sentence"])) + 1, repetition=1,
            intensity=CREMA_D_LEVELS.index(str(f["level"])), corpus="crema-d",
        )

    return _read_tree(root, rule, nothing="no CREMA-D clips found (expected AudioWAV/1001_DFA_ANG_XX.wav)")


def read_corpus(root: str | Path, *, layout: str = "ravdess", include_song: bool = False) -> list[Clip]:
    """Read a corpus in the named layout (``"ravdess"`` or ``"crema-d"``).

    Args:
        root: corpus root.
        layout: one of :data:`LAYOUTS`.
        include_song: RAVDESS only: also read vocal channel 02.

    Raises:
        ConfigError: unknown layout, or ``include_song`` with CREMA-D.
        CorpusError: see :func:`read_ravdess` / :func:`read_crema_d`.
    """
    if layout == "ravdess":
        return read_ravdess(root, include_song=include_song)
    if layout == "crema-d":
        if include_song:
            raise ConfigError("include_song=True: CREMA-D has no song recordings (RAVDESS only)")
        return read_crema_d(root)
    raise ConfigError(f"layout={layout!r}: expected one of {list(LAYOUTS)}")


def read_corpora(roots: Mapping[str, str | Path], *, include_song: bool = False) -> list[Clip]:
    """Read several corpora (``{layout: root}``) into one list (combined corpora are two roots).

    Raises:
        ConfigError: an unknown layout or no roots.
        CorpusError: a root that cannot be read, or actor ids that collide across corpora.
    """
    if not roots:
        raise ConfigError("roots={}: give at least one {layout: corpus root}")
    clips: list[Clip] = []
    owner: dict[int, str] = {}
    for layout, root in roots.items():
        got = read_corpus(root, layout=layout, include_song=include_song and layout == "ravdess")
        clash = sorted({c.actor for c in got if owner.get(c.actor, layout) != layout})
        if clash:
            raise CorpusError(f"{root}: actor ids {clash[:5]} also occur in the {owner[clash[0]]} corpus")
        owner.update({c.actor: layout for c in got})
        clips += got
    return clips


def apply_class_set(clips: list[Clip], class_set: str, *, calm_as_neutral: bool = False) -> list[Clip]:
    """Keep (and relabel) the clips a class set uses.

    ``ravdess7``/``combined7`` drop calm, or relabel it neutral with
    ``calm_as_neutral``; ``combined7`` takes "surprised" only from RAVDESS (CREMA-D
    has none); ``crema6`` keeps CREMA-D's six emotions. Clips of corpora the class
    set does not read (see :data:`CLASS_SET_LAYOUTS`) are dropped.

    Raises:
        ConfigError: unknown class set, or ``calm_as_neutral`` with a set without calm merging.
    """
    if class_set not in CLASS_SETS:
        raise ConfigError(f"class_set={class_set!r}: expected one of {sorted(CLASS_SETS)}")
    if calm_as_neutral and class_set not in ("ravdess7", "combined7"):
        raise ConfigError(f"calm_as_neutral=True with class_set={class_set!r}: only ravdess7 and combined7 merge calm")
    keep, layouts = set(CLASS_SETS[class_set]), CLASS_SET_LAYOUTS[class_set]
    out = []
    for c in clips:
        if c.corpus not in layouts:
            continue
        if c.label == "calm" and calm_as_neutral:
            c = replace(c, label="neutral")
        if c.label in keep:
            out.append(c)
    return out


def label_code(label: str, *, corpus: str) -> str:
    """A corpus's own code for an emotion name (``"angry"`` -> ``"05"`` in RAVDESS, ``"ANG"`` in CREMA-D).

    Raises:
        ConfigError: the corpus has no such emotion (e.g. "surprised" in CREMA-D).
    """
    if corpus == "ravdess" and label in RAVDESS8:
        return f"{RAVDESS8.index(label) + 1:02d}"
    codes = {v: k for k, v in CREMA_D_EMOTIONS.items()}
    if corpus == "crema-d" and label in codes:
        return codes[label]
    raise ConfigError(f"label={label!r}: corpus {corpus!r} has no such emotion")


def class_counts(clips: list[Clip]) -> Counter:
    """Clips per label."""
    return Counter(c.label for c in clips)
