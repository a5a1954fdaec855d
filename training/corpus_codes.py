"""What the corpora's file names encode: the code tables of RAVDESS and CREMA-D, and their parsers.

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

CREMA-D file names (``AudioWAV/AAAA_SSS_EMO_LVL.wav``):

====  =========================================================
AAAA  actor: 1001..1091
SSS   sentence: IEO TIE IOM IWW TAI MTI IWL ITH DFA ITS TSI WSI (see :data:`CREMA_D_SENTENCE_TEXTS`)
EMO   emotion: ANG DIS FEA HAP NEU SAD
LVL   level: LO MD HI (in the distribution: sentence IEO only), XX (unspecified)
====  =========================================================

Both corpora map their codes onto one vocabulary of emotion names (``"angry"``,
``"neutral"``...; :func:`label_code` goes back). A name that does not parse is
described exactly (``unknown emotion code 'XYZ' ...``: :func:`ravdess_name_problem`,
:func:`crema_d_name_problem`); which parsed names the readers keep is decided in
:mod:`training.corpus`.
"""

from __future__ import annotations

from pathlib import Path

from client.errors import ConfigError

#: The ravdess8 class set, in emotion-code order (01..08).
RAVDESS8: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)
#: CREMA-D emotion codes -> the shared emotion names.
CREMA_D_EMOTIONS: dict[str, str] = {
    "ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad",
}
#: The twelve CREMA-D sentences by code, in the order of the corpus's README.
CREMA_D_SENTENCE_TEXTS: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
#: The sentence codes in that order (``Clip.statement`` is the 1-based index).
CREMA_D_SENTENCES: tuple[str, ...] = tuple(CREMA_D_SENTENCE_TEXTS)
#: CREMA-D levels; ``Clip.intensity`` is the index (0 XX unspecified, 1 LO, 2 MD, 3 HI).
CREMA_D_LEVELS: tuple[str, ...] = ("XX", "LO", "MD", "HI")
#: The crema6 class set: the CREMA-D emotions in code order (ANG DIS FEA HAP NEU SAD).
CREMA6: tuple[str, ...] = ("angry", "disgust", "fearful", "happy", "neutral", "sad")  # CREMA-D code order
#: RAVDESS code tables (file-name field -> {code: meaning}), from the corpus's own description.
RAVDESS_CODES: dict[str, dict[int, str]] = {
    "modality": {1: "full-AV", 2: "video-only", 3: "audio-only"},
    "vocal_channel": {1: "speech", 2: "song"},
    "emotion": {i + 1: name for i, name in enumerate(RAVDESS8)},
    "intensity": {1: "normal", 2: "strong"},
    "statement": {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"},
    "repetition": {1: "1st repetition", 2: "2nd repetition"},
    "actor": {a: "male" if a % 2 else "female" for a in range(1, 25)},
}
#: Emotions RAVDESS recorded as song (vocal channel 02): no disgust, no surprised.
RAVDESS_SONG_EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful")
_RAVDESS_FIELDS = tuple(RAVDESS_CODES)
_RAVDESS_SUFFIXES = {".wav", ".flac", ".ogg", ".mp4"}
_CREMA_D_SUFFIXES = {".wav", ".flac", ".mp3"}


def ravdess_fields(name: str) -> dict[str, int] | str:
    """The fields of a RAVDESS file name (as :func:`parse_ravdess_name` returns them), or what is wrong with it (one line)."""
    suffix = Path(name).suffix
    if suffix.lower() not in _RAVDESS_SUFFIXES:
        return f"suffix {suffix or '(none)'!r} is not a RAVDESS file type ({' '.join(sorted(_RAVDESS_SUFFIXES))})"
    parts = name[: -len(suffix)].split("-")
    if len(parts) != len(_RAVDESS_FIELDS):
        return f"{len(parts)} field(s), expected 7 two-digit codes MM-VV-EE-II-SS-RR-AA"
    fields: dict[str, int] = {}
    for key, text in zip(_RAVDESS_FIELDS, parts, strict=True):
        if len(text) != 2 or not text.isdigit():
            return f"{key} {text!r} is not a two-digit code"
        value = int(text)
        if value not in RAVDESS_CODES[key]:
            codes = RAVDESS_CODES[key]
            known = f"{min(codes):02d}..{max(codes):02d}" if len(codes) > 3 else ", ".join(
                f"{c:02d} {m}" for c, m in codes.items())
            return f"unknown {key.replace('_', ' ')} code {text!r} (expected {known})"
        fields[key] = value
    return fields


def parse_ravdess_name(name: str) -> dict[str, int] | None:
    """Fields of a RAVDESS file name, or ``None`` if it is not one (see :func:`ravdess_name_problem` for why).

    Every field must be a code of :data:`RAVDESS_CODES`; whether the corpus holds
    such a recording (no strong neutral, no song of disgust or surprise) is
    checked by the reader.

    Returns:
        ``{"modality", "vocal_channel", "emotion", "intensity", "statement",
        "repetition", "actor"}`` as ints, each within its code range.
    """
    got = ravdess_fields(name)
    return got if isinstance(got, dict) else None


def ravdess_name_problem(name: str) -> str | None:
    """What is wrong with a RAVDESS file name (one line), or ``None`` if its codes are all valid."""
    got = ravdess_fields(name)
    return got if isinstance(got, str) else None


def crema_d_fields(name: str) -> dict[str, int | str] | str:
    """The fields of a CREMA-D file name (as :func:`parse_crema_d_name` returns them), or what is wrong with it (one line)."""
    suffix = Path(name).suffix
    if suffix.lower() not in _CREMA_D_SUFFIXES:
        return f"suffix {suffix or '(none)'!r} is not a CREMA-D file type ({' '.join(sorted(_CREMA_D_SUFFIXES))})"
    parts = name[: -len(suffix)].split("_")
    if len(parts) != 4:
        return f"{len(parts)} field(s), expected 4: AAAA_SSS_EMO_LVL"
    actor, sentence, emotion, level = parts
    if len(actor) != 4 or not actor.isdigit():
        return f"actor {actor!r} is not a four-digit id"
    if not 1001 <= int(actor) <= 1091:
        return f"actor {actor} outside CREMA-D's 1001..1091"
    if sentence not in CREMA_D_SENTENCES:
        return f"unknown sentence code {sentence!r} (expected one of {' '.join(CREMA_D_SENTENCES)})"
    if emotion not in CREMA_D_EMOTIONS:
        return f"unknown emotion code {emotion!r} (expected one of {' '.join(CREMA_D_EMOTIONS)})"
    if level not in CREMA_D_LEVELS:
        return f"unknown level code {level!r} (expected one of LO MD HI XX)"
    return {"actor": int(actor), "sentence": sentence, "emotion": emotion, "level": level}


def parse_crema_d_name(name: str) -> dict[str, int | str] | None:
    """Fields of a CREMA-D file name (``1001_DFA_ANG_XX.wav``), or ``None`` if it is not one.

    Returns:
        ``{"actor": 1001..1091, "sentence": "DFA", "emotion": "ANG", "level": "XX"}``.
    """
    got = crema_d_fields(name)
    return got if isinstance(got, dict) else None


def crema_d_name_problem(name: str) -> str | None:
    """What is wrong with a CREMA-D file name (one line), or ``None`` if it parses."""
    got = crema_d_fields(name)
    return got if isinstance(got, str) else None


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

