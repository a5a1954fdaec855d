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
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from client.errors import CorpusError

#: The ravdess8 class set, in emotion-code order (01..08).
RAVDESS8: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)
CLASS_SETS: dict[str, tuple[str, ...]] = {"ravdess8": RAVDESS8}

_RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.(wav|flac|ogg|mp4)$", re.IGNORECASE)
_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".aac"}


class CorpusWarning(UserWarning):
    """Files under a corpus root were skipped (the message counts them by reason)."""


@dataclass(frozen=True)
class Clip:
    """One labelled utterance.

    Attributes:
        path: absolute path of the audio file.
        actor: speaker id (1..24 for RAVDESS).
        label: emotion name (see :data:`RAVDESS8`).
        statement: statement code (1, 2).
        repetition: repetition code (1, 2).
        intensity: 1 normal, 2 strong.
        vocal_channel: 1 speech, 2 song.
        corpus: layout the clip was read from (``"ravdess"``).
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
        """RAVDESS convention: even actor numbers are female."""
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
    root = Path(root)
    if not root.exists():
        raise CorpusError(f"{root}: corpus directory does not exist")
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    clips: list[Clip] = []
    skipped: dict[str, list[str]] = {}

    def skip(reason: str, path: Path) -> None:
        skipped.setdefault(reason, []).append(str(path.relative_to(root)))

    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            skip("hidden file", path)
            continue
        if path.suffix.lower() not in _AUDIO_SUFFIXES:
            skip("not audio", path)
            continue
        f = parse_ravdess_name(path.name)
        if f is None:
            skip("name not MM-VV-EE-II-SS-RR-AA.wav", path)
            continue
        if f["modality"] != 3:
            skip("video modality (01/02)", path)
            continue
        if f["vocal_channel"] == 2 and not include_song:
            skip("song (vocal channel 02)", path)
            continue
        folder = re.fullmatch(r"Actor_(\d+)", path.parent.name)
        if folder and int(folder.group(1)) != f["actor"]:
            skip("actor in name differs from its Actor_XX folder", path)
            continue
        clips.append(Clip(
            path=path.resolve(), actor=f["actor"], label=RAVDESS8[f["emotion"] - 1], statement=f["statement"],
            repetition=f["repetition"], intensity=f["intensity"], vocal_channel=f["vocal_channel"],
        ))
    if skipped:
        total = sum(len(v) for v in skipped.values())
        parts = "; ".join(f"{len(v)} {reason} (e.g. {v[0]})" for reason, v in sorted(skipped.items()))
        warnings.warn(f"{root}: skipped {total} file(s): {parts}", CorpusWarning, stacklevel=2)
    if not clips:
        raise CorpusError(
            f"{root}: no RAVDESS audio-only speech clips found (expected Actor_XX/03-01-EE-II-SS-RR-AA.wav)"
        )
    return clips


def read_corpus(root: str | Path, *, layout: str = "ravdess") -> list[Clip]:
    """Read a corpus in the named layout (only ``"ravdess"`` so far)."""
    from client.errors import ConfigError

    if layout != "ravdess":
        raise ConfigError(f"layout={layout!r}: expected one of ['ravdess']")
    return read_ravdess(root)


def class_counts(clips: list[Clip]) -> Counter:
    """Clips per label."""
    return Counter(c.label for c in clips)
