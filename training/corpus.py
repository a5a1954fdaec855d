"""Corpus readers: a directory tree in a real corpus's layout -> a list of :class:`Clip`.

What the file names encode (the RAVDESS ``MM-VV-EE-II-SS-RR-AA.wav`` and CREMA-D
``AudioWAV/AAAA_SSS_EMO_LVL.wav`` code tables, and their parsers) is in
:mod:`training.corpus_codes`; this module walks a tree and decides what to keep.

Only RAVDESS audio-only speech is read by default. Everything else found under the root
(song, video modalities, names that do not parse, non-audio files, second copies
of a recording) is counted and reported in one warning, never silently dropped; a
name that does not parse is reported with what exactly is wrong with it
(``unknown emotion code 'XYZ' ...``), and :func:`scan_corpora` returns the skipped
files with their reasons so training can record them.

The CREMA-D distribution's ``AudioWAV/`` holds 7442 clips (91 actors x 82 recordings, 20 of
them never made); ``AudioMP3/`` holds the same recordings as mp3 (the versions
played to raters, a few of them broken): a root holding both reads each recording
once, from its wav.

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
from typing import Callable, Mapping, Sequence

from client.errors import ConfigError
from training.corpus_codes import (
    CREMA6,
    CREMA_D_EMOTIONS,
    CREMA_D_LEVELS,
    CREMA_D_SENTENCES,
    RAVDESS8,
    RAVDESS_SONG_EMOTIONS,
    crema_d_fields,
    ravdess_fields,
)
from training.errors import CorpusError

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

_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".aac"}
_RAVDESS_NAME_REASON = "name not MM-VV-EE-II-SS-RR-AA.wav"
_CREMA_D_NAME_REASON = "name not AAAA_SSS_EMO_LVL.wav"


class CorpusWarning(UserWarning):
    """Files under a corpus root were skipped (the message counts them by reason)."""


@dataclass(frozen=True)
class Clip:
    """One labelled utterance.

    Attributes:
        path: absolute path of the audio file.
        actor: speaker id (1..24 for RAVDESS, 1001..1091 for CREMA-D: the ranges never collide).
        label: emotion name (see :data:`training.corpus_codes.RAVDESS8`, :data:`training.corpus_codes.CREMA6`).
        statement: statement code (RAVDESS 1, 2; CREMA-D 1..12, see :data:`training.corpus_codes.CREMA_D_SENTENCES`).
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


@dataclass(frozen=True)
class SkippedFile:
    """A file under a corpus root that is not used, and why.

    Attributes:
        path: absolute path.
        corpus: layout of the root it was found under.
        reason: the category it is counted under (``"song (vocal channel 02)"``,
            ``"name not AAAA_SSS_EMO_LVL.wav"``, ``"silent"``...).
        detail: what exactly is wrong (``"unknown emotion code 'XYZ' (expected ANG DIS FEA HAP NEU SAD)"``).
        defect: ``True`` for a broken or misnamed file of the corpus (fatal for a strict run);
            ``False`` for what is left out on purpose (song, video, non-audio files, second copies).
    """

    path: Path
    corpus: str
    reason: str
    detail: str = ""
    defect: bool = False

    def describe(self, root: Path | None = None) -> str:
        """``path (detail)``, the path relative to ``root`` when under it."""
        path = self.path
        if root is not None:
            try:
                path = self.path.relative_to(Path(root).resolve())
            except ValueError:
                pass
        return f"{path.as_posix()} ({self.detail})" if self.detail else path.as_posix()


@dataclass(frozen=True)
class CorpusScan:
    """What reading corpus roots found: the clips, and every skipped file with its reason."""

    clips: tuple[Clip, ...]
    skipped: tuple[SkippedFile, ...] = ()

#: A per-file classifier for :func:`_scan_tree`: ``(path) -> Clip`` or a skip (``reason``, ``detail``, ``defect``).
_FileRule = Callable[[Path], "Clip | tuple[str, str, bool]"]


def _scan_tree(root: str | Path, rule: _FileRule, *, layout: str, nothing: str) -> CorpusScan:
    """Walk ``root`` (any depth), keep what ``rule`` accepts and one file per recording; warn once about the rest.

    Two files of one recording (the same name stem, e.g. ``AudioWAV/x.wav`` and
    ``AudioMP3/x.mp3``, or a RAVDESS tree unpacked twice) give one clip: the wav if
    there is one, else the first path in sorted order.

    Raises:
        CorpusError: ``root`` is missing or not a directory, or no clip remains
            (``nothing`` says what was expected).
    """
    root = Path(root)
    if not root.exists():
        raise CorpusError(f"{root}: corpus directory does not exist")
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    by_stem: dict[str, list[Clip]] = {}
    skipped: list[SkippedFile] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            got: Clip | tuple[str, str, bool] = ("hidden file", "", False)
        elif path.suffix.lower() not in _AUDIO_SUFFIXES:
            got = ("not audio", "", False)
        else:
            got = rule(path)
        if isinstance(got, Clip):
            by_stem.setdefault(path.stem, []).append(got)
        else:
            reason, detail, defect = got
            skipped.append(SkippedFile(path.resolve(), layout, reason, detail, defect))
    clips: list[Clip] = []
    for copies in by_stem.values():
        keep = min(copies, key=lambda c: (c.path.suffix.lower() != ".wav", str(c.path)))
        clips.append(keep)
        skipped += [SkippedFile(c.path, layout, "second copy of a recording", f"read from {keep.path.relative_to(root.resolve())}")
                    for c in copies if c is not keep]
    clips.sort(key=lambda c: str(c.path))
    warn_skipped(root, skipped)
    if not clips:
        raise CorpusError(f"{root}: {nothing}")
    return CorpusScan(clips=tuple(clips), skipped=tuple(skipped))


def summarize_skipped(skipped: Sequence[SkippedFile], *, root: Path | None = None, examples: int = 3) -> str:
    """One line: how many files were skipped, counted by reason, with up to ``examples`` files (and details) each."""
    groups: dict[str, list[SkippedFile]] = {}
    for s in skipped:
        groups.setdefault(s.reason, []).append(s)
    parts = []
    for reason, group in sorted(groups.items()):
        shown = ", ".join(s.describe(root) for s in group[:examples])
        more = f", +{len(group) - examples} more" if len(group) > examples else ""
        parts.append(f"{len(group)} {reason} (e.g. {shown}{more})")
    return f"skipped {len(skipped)} file(s): " + "; ".join(parts)


def warn_skipped(root: str | Path, skipped: Sequence[SkippedFile]) -> None:
    """One :class:`CorpusWarning` counting ``skipped`` by reason (nothing when empty)."""
    if skipped:
        warnings.warn(f"{root}: {summarize_skipped(skipped, root=Path(root))}", CorpusWarning, stacklevel=3)


def _ravdess_rule(*, include_song: bool) -> _FileRule:
    def rule(path: Path) -> Clip | tuple[str, str, bool]:
        f = ravdess_fields(path.name)
        if isinstance(f, str):
            return _RAVDESS_NAME_REASON, f, True
        emotion = RAVDESS8[f["emotion"] - 1]
        if f["modality"] != 3:
            return "video modality (01/02)", "", False
        if f["vocal_channel"] == 2 and not include_song:
            return "song (vocal channel 02)", "", False
        if emotion == "neutral" and f["intensity"] == 2:
            return "no such RAVDESS recording", "intensity 02 (strong) with emotion 01 (neutral): neutral has normal intensity only", True
        if f["vocal_channel"] == 2 and emotion not in RAVDESS_SONG_EMOTIONS:
            return ("no such RAVDESS recording",
                    f"song with emotion {f['emotion']:02d} ({emotion}): songs are {', '.join(RAVDESS_SONG_EMOTIONS)}", True)
        folder = re.fullmatch(r"Actor_(\d+)", path.parent.name)
        if folder and int(folder.group(1)) != f["actor"]:
            return ("actor in name differs from its Actor_XX folder",
                    f"actor {f['actor']:02d} in {path.parent.name}", True)
        return Clip(
            path=path.resolve(), actor=f["actor"], label=emotion, statement=f["statement"],
            repetition=f["repetition"], intensity=f["intensity"], vocal_channel=f["vocal_channel"],
        )

    return rule


def _crema_d_rule(path: Path) -> Clip | tuple[str, str, bool]:
    f = crema_d_fields(path.name)
    if isinstance(f, str):
        return _CREMA_D_NAME_REASON, f, True
    return Clip(
        path=path.resolve(), actor=int(f["actor"]), label=CREMA_D_EMOTIONS[str(f["emotion"])],
        statement=CREMA_D_SENTENCES.index(str(f["sentence"])) + 1, repetition=1,
        intensity=CREMA_D_LEVELS.index(str(f["level"])), corpus="crema-d",
    )


_NOTHING = {
    "ravdess": "no RAVDESS audio-only speech clips found (expected Actor_XX/03-01-EE-II-SS-RR-AA.wav)",
    "crema-d": "no CREMA-D clips found (expected AudioWAV/1001_DFA_ANG_XX.wav)",
}


def scan_corpus(root: str | Path, *, layout: str = "ravdess", include_song: bool = False) -> CorpusScan:
    """Read a corpus in the named layout, keeping the skipped files and their reasons.

    Args:
        root: corpus root.
        layout: one of :data:`LAYOUTS`.
        include_song: RAVDESS only: also read vocal channel 02.

    Returns:
        :class:`CorpusScan`: clips sorted by path, and every skipped file.

    Raises:
        ConfigError: unknown layout, or ``include_song`` with CREMA-D.
        CorpusError: ``root`` is missing or not a directory, or no clip remains.

    Warns:
        CorpusWarning: once, counting the skipped files by reason, with examples.
    """
    if layout == "ravdess":
        return _scan_tree(root, _ravdess_rule(include_song=include_song), layout=layout, nothing=_NOTHING[layout])
    if layout == "crema-d":
        if include_song:
            raise ConfigError("include_song=True: CREMA-D has no song recordings (RAVDESS only)")
        return _scan_tree(root, _crema_d_rule, layout=layout, nothing=_NOTHING[layout])
    raise ConfigError(f"layout={layout!r}: expected one of {list(LAYOUTS)}")


def read_ravdess(root: str | Path, *, include_song: bool = False) -> list[Clip]:
    """Read a RAVDESS-layout tree (``Actor_XX/03-01-EE-II-SS-RR-AA.wav``; any depth).

    Args:
        root: corpus root.
        include_song: also read vocal channel 02.

    Returns:
        Clips sorted by path (deterministic order).

    Raises:
        CorpusError: ``root`` is missing or not a directory, or no clip remains.

    Warns:
        CorpusWarning: once, counting the skipped files by reason, with examples.
    """
    return list(scan_corpus(root, layout="ravdess", include_song=include_song).clips)


def read_crema_d(root: str | Path) -> list[Clip]:
    """Read a CREMA-D-layout tree (``AudioWAV/1001_DFA_ANG_XX.wav``; any depth).

    Args:
        root: corpus root (the folder holding ``AudioWAV/``, or ``AudioWAV/`` itself).

    Returns:
        Clips sorted by path; ``statement`` is the sentence's 1-based index in
        :data:`training.corpus_codes.CREMA_D_SENTENCES`, ``intensity`` the level's index in
        :data:`training.corpus_codes.CREMA_D_LEVELS`.

    Raises:
        CorpusError: ``root`` is missing or not a directory, or no clip remains.

    Warns:
        CorpusWarning: once, counting the skipped files by reason, with examples.
    """
    return list(scan_corpus(root, layout="crema-d").clips)


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
    return list(scan_corpus(root, layout=layout, include_song=include_song).clips)


def scan_corpora(roots: Mapping[str, str | Path], *, include_song: bool = False) -> CorpusScan:
    """Read several corpora (``{layout: root}``), keeping every skipped file and its reason.

    Raises:
        ConfigError: an unknown layout or no roots.
        CorpusError: a root that cannot be read, or actor ids that collide across corpora.
    """
    if not roots:
        raise ConfigError("roots={}: give at least one {layout: corpus root}")
    clips: list[Clip] = []
    skipped: list[SkippedFile] = []
    owner: dict[int, str] = {}
    for layout, root in roots.items():
        scan = scan_corpus(root, layout=layout, include_song=include_song and layout == "ravdess")
        clash = sorted({c.actor for c in scan.clips if owner.get(c.actor, layout) != layout})
        if clash:
            raise CorpusError(f"{root}: actor ids {clash[:5]} also occur in the {owner[clash[0]]} corpus")
        owner.update({c.actor: layout for c in scan.clips})
        clips += scan.clips
        skipped += scan.skipped
    return CorpusScan(clips=tuple(clips), skipped=tuple(skipped))


def read_corpora(roots: Mapping[str, str | Path], *, include_song: bool = False) -> list[Clip]:
    """Read several corpora (``{layout: root}``) into one list (combined corpora are two roots).

    Raises:
        ConfigError: an unknown layout or no roots.
        CorpusError: a root that cannot be read, or actor ids that collide across corpora.
    """
    return list(scan_corpora(roots, include_song=include_song).clips)


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



def class_counts(clips: list[Clip]) -> Counter:
    """Clips per label."""
    return Counter(c.label for c in clips)
