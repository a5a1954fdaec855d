"""Which clips a synthetic corpus holds: one :class:`ClipSpec` per file, as the real corpus numbers it.

:class:`SynthConfig` says which actors, emotions, statements, repetitions and intensities
(RAVDESS) or sentences and levels (CREMA-D) a corpus has; :func:`clip_specs` lists
its clips in the layout's order. A :class:`ClipSpec` holds a clip's file-name fields
(as :class:`training.corpus.Clip` numbers them), its file name and path in the layout,
and what its synthesis needs from them: the vowels of the spoken sentence and how
strongly the emotion is played. By default the CREMA-D design is the corpus as
distributed: the 20 recordings the distribution lacks are left out
(:data:`CREMA_D_ABSENT`) and the clip documented as holding no audio
(:data:`CREMA_D_NO_AUDIO`) is listed, to be written as silence.

The code tables themselves (emotion, sentence and level codes) are
:mod:`training.corpus_codes`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from client.errors import ConfigError
from training.corpus import LAYOUTS
from training.corpus_codes import CREMA6 as CREMA_D_EMOTIONS  # names in code order: ANG DIS ... SAD
from training.corpus_codes import CREMA_D_EMOTIONS as _CREMA_CODES
from training.corpus_codes import CREMA_D_LEVELS, CREMA_D_SENTENCES, RAVDESS_CODES
from training.corpus_codes import RAVDESS8 as RAVDESS_EMOTIONS  # names in code order: 01..08

#: The two RAVDESS statements, in code order (01, 02).
RAVDESS_STATEMENTS = tuple(RAVDESS_CODES["statement"].values())
#: Default rate of the written files per layout (what the real corpora ship).
DEFAULT_SAMPLE_RATES = {"ravdess": 48_000, "crema-d": 16_000}
#: Style factor of each CREMA-D level (``Clip.intensity`` index order: XX LO MD HI).
_CREMA_LEVEL_FACTOR = {0: 1.0, 1: 0.7, 2: 1.0, 3: 1.5}

#: Vowel sequence per statement (cycled when a clip has more syllables).
STATEMENT_VOWELS = {
    1: ("I", "a", "o", "I", "a", "I", "o"),      # kids are talk-ing by the door
    2: ("a", "a", "I", "I", "a", "A", "o"),      # dogs are sit-ting by the door
}
#: Vowel sequence per CREMA-D sentence code (the sentences of ``training.corpus_codes.CREMA_D_SENTENCE_TEXTS``).
SENTENCE_VOWELS = {
    "IEO": ("I", "I", "e", "A", "A", "o"),              # it's e-lev-en o'-clock
    "TIE": ("ae", "I", "I", "ae", "i", "A", "ae", "A"),  # that is ex-act-ly what hap-pened
    "IOM": ("a", "a", "a", "e", "u", "A", "i", "I"),    # I'm on my way to the meet-ing
    "IWW": ("a", "A", "er", "A", "I", "I", "A", "a"),   # I won-der what this is a-bout
    "TAI": ("A", "e", "e", "I", "o", "o", "u"),         # the air-plane is al-most full
    "MTI": ("e", "i", "A", "o", "o", "I", "I", "i", "o"),  # may-be to-mor-row it will be cold
    "IWL": ("a", "u", "a", "A", "u", "A", "a", "o"),    # I would like a new a-larm clock
    "ITH": ("a", "I", "a", "ae", "A", "a", "er", "A", "o", "A"),  # I think I have a doc-tor's ap-point-ment
    "DFA": ("o", "er", "e", "A", "ae", "I"),            # don't for-get a jack-et
    "ITS": ("a", "I", "a", "i", "I", "I", "o"),         # I think I've seen this be-fore
    "TSI": ("A", "er", "A", "I", "I"),                  # the sur-face is slick
    "WSI": ("i", "a", "I", "A", "A", "A", "A", "I", "I"),  # we'll stop in a cou-ple of min-utes
}
#: Recordings the CREMA-D distribution does not have (its ``AudioWAV/`` holds 91 x 82 - 20 = 7442 clips).
CREMA_D_ABSENT: frozenset[str] = frozenset(
    ["1002_TIE_NEU_XX", "1076_ITS_NEU_XX"]
    + [f"1008_WSI_{e}_XX" for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")]
    + [f"1009_MTI_{e}_XX" for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")]
    + [f"1019_ITH_{e}_XX" for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")]
)
#: Clips the CREMA-D README documents as holding no audio (the wav file exists; written as digital silence here).
CREMA_D_NO_AUDIO: dict[str, float] = {"1076_MTI_SAD_XX": 2.569}

@dataclass(frozen=True)
class SynthConfig:
    """Which clips a synthetic corpus holds, and how they are written.

    Attributes:
        layout: on-disk layout to imitate: ``"ravdess"`` or ``"crema-d"``.
        actors: number of actors (RAVDESS 1..24, numbered 1..n; CREMA-D 1..91,
            numbered 1001..1000+n) or explicit actor ids.
        emotions: emotion names (subset of :data:`RAVDESS_EMOTIONS` or
            :data:`CREMA_D_EMOTIONS`); ``None``: all of the layout's.
        statements: RAVDESS statement codes to write (subset of (1, 2)).
        repetitions: RAVDESS repetition codes to write (subset of (1, 2)).
        intensities: RAVDESS intensity codes (1 normal, 2 strong; neutral only ever gets 1).
        sentences: CREMA-D sentence codes (subset of :data:`CREMA_D_SENTENCES`).
        levels: CREMA-D levels of sentence IEO (subset of LO MD HI; the other
            sentences, and IEO neutral, are always XX).
        sample_rate: Hz of the written 16-bit PCM files; ``None``: the layout's
            own (:data:`DEFAULT_SAMPLE_RATES`).
        seed: corpus seed.
        as_distributed: CREMA-D: leave out the recordings the distribution lacks
            (:data:`CREMA_D_ABSENT`) and write the documented no-audio clips as silence
            (:data:`CREMA_D_NO_AUDIO`); ``False``: every recording of the design, all voiced.
    """

    layout: str = "ravdess"
    actors: int | tuple[int, ...] = 24
    emotions: tuple[str, ...] | None = None
    statements: tuple[int, ...] = (1, 2)
    repetitions: tuple[int, ...] = (1, 2)
    intensities: tuple[int, ...] = (1, 2)
    sentences: tuple[str, ...] = CREMA_D_SENTENCES
    levels: tuple[str, ...] = ("LO", "MD", "HI")
    sample_rate: int | None = None
    seed: int = 0
    as_distributed: bool = True

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout={self.layout!r}: expected one of {list(LAYOUTS)}")
        crema = self.layout == "crema-d"
        first, most = (1001, 91) if crema else (1, 24)
        last = first + most - 1
        if isinstance(self.actors, (int, np.integer)) and not isinstance(self.actors, bool):
            if not 1 <= int(self.actors) <= most:
                raise ConfigError(f"actors={self.actors}: {self.layout} has 1..{most} actors")
            ids: tuple[int, ...] = tuple(range(first, first + int(self.actors)))
        else:
            ids = tuple(int(a) for a in self.actors)
            bad = [a for a in ids if not first <= a <= last]
            if not ids or bad or len(set(ids)) != len(ids):
                raise ConfigError(f"actors={self.actors!r}: need distinct {self.layout} actor ids in {first}..{last}")
        object.__setattr__(self, "actors", ids)
        vocabulary = CREMA_D_EMOTIONS if crema else RAVDESS_EMOTIONS
        emos = vocabulary if self.emotions is None else tuple(self.emotions)
        unknown = [e for e in emos if e not in vocabulary]
        if not emos or unknown or len(set(emos)) != len(emos):
            raise ConfigError(f"emotions={list(emos)!r}: need distinct {self.layout} names from {list(vocabulary)}")
        object.__setattr__(self, "emotions", emos)
        for name, allowed in (("sentences", CREMA_D_SENTENCES), ("levels", ("LO", "MD", "HI"))):
            vals = tuple(str(v) for v in getattr(self, name))
            if not vals or any(v not in allowed for v in vals) or len(set(vals)) != len(vals):
                raise ConfigError(f"{name}={list(vals)!r}: need a non-empty subset of {list(allowed)}")
            object.__setattr__(self, name, vals)
        if self.sample_rate is None:
            object.__setattr__(self, "sample_rate", DEFAULT_SAMPLE_RATES[self.layout])
        for name, allowed in (("statements", (1, 2)), ("repetitions", (1, 2)), ("intensities", (1, 2))):
            vals = tuple(int(v) for v in getattr(self, name))
            if not vals or any(v not in allowed for v in vals) or len(set(vals)) != len(vals):
                raise ConfigError(f"{name}={list(vals)!r}: need a non-empty subset of {list(allowed)}")
            object.__setattr__(self, name, vals)
        if not isinstance(self.as_distributed, bool):
            raise ConfigError(f"as_distributed={self.as_distributed!r}: expected True or False")
        if not 8_000 <= int(self.sample_rate) <= 192_000:
            raise ConfigError(f"sample_rate={self.sample_rate}: need 8000..192000 Hz")


@dataclass(frozen=True)
class ClipSpec:
    """One clip to synthesise: the file-name fields (as :class:`training.corpus.Clip` numbers them).

    For ``layout="crema-d"``: ``statement`` is the sentence's 1-based index in
    :data:`CREMA_D_SENTENCES`, ``intensity`` the level's index in ``CREMA_D_LEVELS``
    (0 XX, 1 LO, 2 MD, 3 HI), ``repetition`` 1.
    """

    actor: int
    emotion: str
    intensity: int
    statement: int
    repetition: int
    modality: int = 3
    channel: int = 1
    layout: str = "ravdess"

    @property
    def emotion_code(self) -> int:
        """01..08 (the RAVDESS code of the emotion name; seeds CREMA-D clips too)."""
        return RAVDESS_EMOTIONS.index(self.emotion) + 1

    @property
    def style_factor(self) -> float:
        """How much the emotion's deviations from neutral are scaled (strong / HI > 1, LO < 1)."""
        if self.layout == "crema-d":
            return _CREMA_LEVEL_FACTOR[self.intensity]
        return 1.5 if self.intensity == 2 else 1.0

    @property
    def vowels(self) -> tuple[str, ...]:
        """Vowel sequence of the spoken sentence."""
        if self.layout == "crema-d":
            return SENTENCE_VOWELS[CREMA_D_SENTENCES[self.statement - 1]]
        return STATEMENT_VOWELS[self.statement]

    @property
    def stem(self) -> str:
        """The file name without its suffix (``1001_DFA_ANG_XX``, ``03-01-05-01-01-01-01``)."""
        return self.filename().rsplit(".", 1)[0]

    def filename(self) -> str:
        """``03-01-EE-II-SS-RR-AA.wav`` (RAVDESS) or ``1001_DFA_ANG_XX.wav`` (CREMA-D)."""
        if self.layout == "crema-d":
            code = {v: k for k, v in _CREMA_CODES.items()}[self.emotion]
            return f"{self.actor}_{CREMA_D_SENTENCES[self.statement - 1]}_{code}_{CREMA_D_LEVELS[self.intensity]}.wav"
        fields = (self.modality, self.channel, self.emotion_code, self.intensity,
                  self.statement, self.repetition, self.actor)
        return "-".join(f"{v:02d}" for v in fields) + ".wav"

    def relpath(self) -> str:
        """``Actor_XX/<filename>`` (RAVDESS) or ``AudioWAV/<filename>`` (CREMA-D)."""
        if self.layout == "crema-d":
            return f"AudioWAV/{self.filename()}"
        return f"Actor_{self.actor:02d}/{self.filename()}"


def ravdess_clip_specs(config: SynthConfig) -> list[ClipSpec]:
    """Every clip of ``config`` in RAVDESS order (actor, emotion, intensity, statement, repetition)."""
    specs = []
    for actor in config.actors:
        for emotion in config.emotions:
            intensities = (1,) if emotion == "neutral" else config.intensities
            if emotion == "neutral" and 1 not in config.intensities:
                intensities = (1,)  # neutral has no strong version; keep it in the class set
            for intensity in intensities:
                for statement in config.statements:
                    for repetition in config.repetitions:
                        specs.append(ClipSpec(actor, emotion, intensity, statement, repetition))
    return specs


def crema_d_clip_specs(config: SynthConfig) -> list[ClipSpec]:
    """Every clip of a CREMA-D ``config`` (actor, sentence, emotion, level order).

    Sentence IEO is spoken at ``config.levels`` (neutral: XX only); every other
    sentence at XX. The full design: 91 x (11 x 6 + 5 x 3 + 1) = 7462 clips; as
    distributed (``config.as_distributed``) 7442, without :data:`CREMA_D_ABSENT`.
    """
    specs = []
    for actor in config.actors:
        for sentence in config.sentences:
            for emotion in config.emotions:
                levels = config.levels if sentence == "IEO" and emotion != "neutral" else ("XX",)
                for level in levels:
                    spec = ClipSpec(actor, emotion, CREMA_D_LEVELS.index(level), CREMA_D_SENTENCES.index(sentence) + 1,
                                    1, layout="crema-d")
                    if not (config.as_distributed and spec.stem in CREMA_D_ABSENT):
                        specs.append(spec)
    return specs


def clip_specs(config: SynthConfig) -> list[ClipSpec]:
    """Every clip of ``config`` in its layout's order."""
    return crema_d_clip_specs(config) if config.layout == "crema-d" else ravdess_clip_specs(config)
