"""Synthetic speech-emotion corpora in the exact on-disk layout of real ones.

No corpus can be downloaded here, so the training, export and serving code paths
run on generated speech-like audio written exactly as RAVDESS lays it out
(``Actor_XX/03-01-EE-II-SS-RR-AA.wav``, 16-bit PCM, 48 kHz) or as CREMA-D does
(``AudioWAV/1001_DFA_ANG_XX.wav``, 16-bit PCM, 16 kHz; 91 actors 1001..1091, the 12
sentences of the corpus's README, 6 emotions; only sentence IEO is spoken at levels
LO/MD/HI, the rest and IEO-neutral are XX). By default the CREMA-D twin is the corpus
as distributed: the 20 recordings the distribution lacks are not written
(:data:`CREMA_D_ABSENT`) and the clip documented as holding no audio is written
as digital silence (:data:`CREMA_D_NO_AUDIO`), so training meets what it meets on
the real corpus. Everything is deterministic for a seed, and each clip's
randomness is seeded from its own file-name fields, so a smaller corpus is a
subset of a bigger one made with the same seed.

How a clip is made (source-filter, additive synthesis at 16 kHz, then resampled
to the requested rate with soxr):

* **Speaker** (per actor): base pitch (odd actors male ~85-150 Hz, even female
  ~165-260 Hz), loudness (+-6 dB), syllable rate (3.5-5.5 /s), vocal-tract
  length (formant scale), a little base tilt and breathiness.
* **Emotion** (relative to the speaker): pitch-contour *shape* (flat, falling,
  rising, bouncing, arched, final rise) and range in semitones, vibrato/tremolo,
  jitter (roughness), creak (sub-harmonics), breathiness (noise), spectral tilt
  (bright/dark), syllable rate and attack sharpness. ``strong`` intensity
  exaggerates the deviations from neutral (CREMA-D: LO 0.7x, MD and XX 1x, HI 1.5x).
* **Level cues are deliberately weak**: the contour is centred on the
  speaker's pitch (emotion offsets are at most +-0.5 semitone against a speaker
  spread of ~18), per-clip loudness varies +-3 dB on top of the speaker's +-6 dB (emotion offsets +-0.5 dB),
  and duration is drawn independently of the emotion (the syllable *count*
  follows the rate, not the length). So mean pitch, mean loudness and duration
  do not separate the classes across speakers; prosody and voice quality do.
* Leading and trailing 0.1-0.35 s of low noise (about -60 dBFS), never digital zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from client.errors import ConfigError
from training.corpus import CREMA6 as CREMA_D_EMOTIONS  # ANG DIS FEA HAP NEU SAD, in code order
from training.corpus import CREMA_D_EMOTIONS as _CREMA_CODES
from training.corpus import CREMA_D_LEVELS, CREMA_D_SENTENCES, LAYOUTS
from training.corpus import RAVDESS8 as RAVDESS_EMOTIONS  # emotion codes 01..08, in code order

RAVDESS_STATEMENTS = ("Kids are talking by the door", "Dogs are sitting by the door")
#: Default rate of the written files per layout (what the real corpora ship).
DEFAULT_SAMPLE_RATES = {"ravdess": 48_000, "crema-d": 16_000}
#: Style factor of each CREMA-D level (``Clip.intensity`` index order: XX LO MD HI).
_CREMA_LEVEL_FACTOR = {0: 1.0, 1: 0.7, 2: 1.0, 3: 1.5}
INTERNAL_SR = 16_000
_MAX_HARMONIC_HZ = 7_000.0

#: Vowel formants (F1, F2, F3 in Hz, adult male) for the vowels of the two statements.
_VOWELS = {
    "i": (280, 2250, 2900), "I": (400, 1900, 2550), "e": (480, 1850, 2500),
    "ae": (660, 1700, 2400), "a": (730, 1090, 2440), "o": (500, 900, 2400),
    "u": (320, 900, 2300), "A": (600, 1200, 2500), "er": (490, 1350, 1700),
}
#: Vowel sequence per statement (cycled when a clip has more syllables).
_STATEMENT_VOWELS = {
    1: ("I", "a", "o", "I", "a", "I", "o"),      # kids are talk-ing by the door
    2: ("a", "a", "I", "I", "a", "A", "o"),      # dogs are sit-ting by the door
}
#: Vowel sequence per CREMA-D sentence code (the sentences of ``training.corpus.CREMA_D_SENTENCE_TEXTS``).
_SENTENCE_VOWELS = {
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
class Speaker:
    """One synthetic actor's voice.

    Attributes:
        actor: 1..24 (RAVDESS) or 1001..1091 (CREMA-D); odd male, even female (RAVDESS convention).
        f0_hz: base pitch (Hz).
        gain_db: loudness offset (dB).
        rate_sps: syllables per second when neutral.
        formant_scale: vocal-tract factor applied to the vowel formants.
        tilt_db_oct: base spectral tilt of the source (dB/octave).
        breath: base noise-to-voice amplitude ratio.
    """

    actor: int
    f0_hz: float
    gain_db: float
    rate_sps: float
    formant_scale: float
    tilt_db_oct: float
    breath: float

    @property
    def female(self) -> bool:
        """RAVDESS convention: even actor numbers are female."""
        return self.actor % 2 == 0

    @classmethod
    def sample(cls, actor: int, *, seed: int) -> "Speaker":
        """Draw actor ``actor``'s voice, deterministic for ``(seed, actor)``."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, actor, 0x5EA]))
        female = actor % 2 == 0
        f0 = rng.uniform(165, 260) if female else rng.uniform(85, 150)
        scale = rng.uniform(1.08, 1.22) if female else rng.uniform(0.9, 1.04)
        return cls(
            actor=actor,
            f0_hz=float(f0),
            gain_db=float(rng.uniform(-6, 6)),
            rate_sps=float(rng.uniform(3.5, 5.5)),
            formant_scale=float(scale),
            tilt_db_oct=float(rng.uniform(-10.5, -7.5)),
            breath=float(rng.uniform(0.01, 0.04)),
        )


@dataclass(frozen=True)
class EmotionStyle:
    """How an emotion bends a speaker's voice (all relative to the speaker).

    Attributes:
        contour: pitch-contour shape over the utterance: ``flat``, ``fall``,
            ``rise``, ``bounce`` (rise-fall on each syllable), ``arch``, ``final_rise``.
        range_st: contour range (semitones).
        offset_st: small mean-pitch offset (semitones).
        vibrato_hz: pitch/amplitude modulation rate (Hz), 0 for none.
        vibrato_st: vibrato depth (semitones).
        jitter: relative random pitch perturbation (roughness).
        creak: sub-harmonic strength (period doubling), 0..1.
        breath: extra noise-to-voice ratio.
        tilt_db_oct: change of spectral tilt (dB/octave, > 0 brighter).
        rate: syllable-rate factor.
        attack_s: syllable attack time (s): small is abrupt.
        level_db: small loudness offset (dB).
    """

    contour: str
    range_st: float
    offset_st: float = 0.0
    vibrato_hz: float = 0.0
    vibrato_st: float = 0.0
    jitter: float = 0.0
    creak: float = 0.0
    breath: float = 0.0
    tilt_db_oct: float = 0.0
    rate: float = 1.0
    attack_s: float = 0.03
    level_db: float = 0.0

    def exaggerated(self, factor: float, neutral: "EmotionStyle") -> "EmotionStyle":
        """Scale every deviation from ``neutral`` by ``factor`` (strong intensity)."""
        def f(name: str) -> float:
            a, b = getattr(self, name), getattr(neutral, name)
            return b + (a - b) * factor
        return replace(
            self,
            **{n: f(n) for n in ("range_st", "offset_st", "vibrato_st", "jitter", "creak",
                                 "breath", "tilt_db_oct", "rate", "level_db")},
        )


#: The eight RAVDESS emotions as voice styles. Each differs from every other in
#: at least two of: contour shape, range, vibrato, jitter/creak, breath, tilt, rate.
EMOTION_STYLES: dict[str, EmotionStyle] = {
    "neutral": EmotionStyle("flat", 1.5),
    "calm": EmotionStyle("fall", 3.0, offset_st=-0.3, breath=0.10, tilt_db_oct=-3.0, rate=0.8, attack_s=0.06),
    "happy": EmotionStyle("bounce", 5.0, offset_st=0.5, tilt_db_oct=3.0, rate=1.25, attack_s=0.02, level_db=0.5),
    "sad": EmotionStyle("fall", 4.0, offset_st=-0.5, vibrato_hz=3.0, vibrato_st=0.4, breath=0.25,
                        tilt_db_oct=-4.5, rate=0.7, attack_s=0.07, level_db=-0.5),
    "angry": EmotionStyle("arch", 6.0, offset_st=0.3, jitter=0.035, tilt_db_oct=4.5, rate=1.2,
                          attack_s=0.006, level_db=0.5),
    "fearful": EmotionStyle("rise", 5.0, offset_st=0.5, vibrato_hz=7.5, vibrato_st=1.0, jitter=0.015,
                            breath=0.15, rate=1.35, attack_s=0.015),
    "disgust": EmotionStyle("fall", 3.0, offset_st=-0.5, creak=0.8, tilt_db_oct=-1.5, rate=0.8, attack_s=0.04),
    "surprised": EmotionStyle("final_rise", 10.0, offset_st=0.3, tilt_db_oct=1.5, rate=1.0, attack_s=0.015),
}


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
            return _SENTENCE_VOWELS[CREMA_D_SENTENCES[self.statement - 1]]
        return _STATEMENT_VOWELS[self.statement]

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


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize_corpus` wrote.

    Attributes:
        root: corpus directory.
        layout: on-disk layout.
        num_clips: files written.
        actors: actor ids.
        emotions: emotion names.
        sample_rate: Hz of the files.
        total_seconds: summed duration of the clips (s).
        seed: corpus seed.
    """

    root: Path
    layout: str
    num_clips: int
    actors: tuple[int, ...]
    emotions: tuple[str, ...]
    sample_rate: int
    total_seconds: float
    seed: int
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return (f"{self.num_clips} clips ({self.total_seconds / 60:.1f} min) from {len(self.actors)} actors, "
                f"{len(self.emotions)} emotions, {self.layout} layout, {self.sample_rate} Hz -> {self.root}")


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


# --- synthesis ------------------------------------------------------------------------


def _contour(shape: str, u: np.ndarray, syl_phase: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contour in [-1, 1]-ish units over utterance position ``u`` in [0, 1]."""
    if shape == "flat":
        c = 0.3 * np.sin(2 * np.pi * (u * rng.uniform(0.5, 1.0) + rng.uniform()))
    elif shape == "fall":
        c = 1.0 - 2.0 * u
    elif shape == "rise":
        c = -1.0 + 2.0 * u
    elif shape == "bounce":
        c = 2.0 * np.sin(np.pi * syl_phase) - 1.0 + 0.3 * (1 - 2 * u)  # one rise-fall per syllable
    elif shape == "arch":
        c = 2.0 * np.sin(np.pi * u) - 1.0
    elif shape == "final_rise":
        c = np.where(u < 0.6, -0.6, -0.6 + 2.6 * np.clip((u - 0.6) / 0.4, 0, 1) ** 1.5)
    else:
        raise ConfigError(f"contour={shape!r}: unknown shape")
    return c


def _smooth_noise(rng: np.random.Generator, n: int, *, cutoff_hz: float, sr: int) -> np.ndarray:
    """Unit-variance noise low-passed at ``cutoff_hz`` (FFT brick-wall), ``[n]`` float64."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec[freqs > cutoff_hz] = 0
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-12)


def _formant_gain(freqs: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Cascade of second-order resonances: gain ``[..., K]`` at ``freqs [..., K]`` (Hz).

    ``formants``: ``[..., 1, 3]`` centre frequencies; bandwidths grow with frequency.
    """
    f = freqs[..., None]
    fc = formants
    bw = 50.0 + 0.06 * fc
    g = fc**2 / np.sqrt((fc**2 - f**2) ** 2 + (bw * f) ** 2)
    return np.prod(g, axis=-1)


def synthesize_clip(spec: ClipSpec, *, speaker: Speaker, seed: int, sample_rate: int = INTERNAL_SR) -> np.ndarray:
    """Synthesise one utterance.

    Args:
        spec: which clip (emotion, intensity, statement, repetition, actor).
        speaker: the actor's voice.
        seed: corpus seed; the clip's randomness is seeded from it and ``spec``.
        sample_rate: output rate (Hz); synthesis runs at 16 kHz and is resampled.

    Returns:
        ``[n]`` float32 in (-1, 1) at ``sample_rate``, about 1.5-3.5 s.
    """
    rng = np.random.default_rng(np.random.SeedSequence(
        [seed, spec.actor, spec.emotion_code, spec.intensity, spec.statement, spec.repetition, 0xC11]))
    sr = INTERNAL_SR
    style = EMOTION_STYLES[spec.emotion]
    if spec.style_factor != 1.0:
        style = style.exaggerated(spec.style_factor, EMOTION_STYLES["neutral"])

    voiced_s = rng.uniform(1.2, 2.9)
    lead_s, trail_s = rng.uniform(0.1, 0.35, size=2)
    n_voiced = int(voiced_s * sr)
    rate = speaker.rate_sps * style.rate * rng.uniform(0.93, 1.07)
    n_syl = max(3, int(round(voiced_s * rate)))
    t = np.arange(n_voiced) / sr
    u = t / voiced_s
    syl_pos = u * n_syl
    syl_idx = np.minimum(syl_pos.astype(np.int64), n_syl - 1)
    syl_phase = syl_pos - syl_idx

    # Pitch: speaker base x emotion offset x centred contour x vibrato x jitter.
    contour = _contour(style.contour, u, syl_phase, rng) * (style.range_st / 2)
    contour = contour - contour.mean() + style.offset_st + rng.normal(0, 0.4)
    vib_phase = rng.uniform(0, 2 * np.pi)
    vibrato = style.vibrato_st * np.sin(2 * np.pi * style.vibrato_hz * t + vib_phase) if style.vibrato_hz else 0.0
    semis = contour + vibrato
    f0 = speaker.f0_hz * 2.0 ** (semis / 12.0)
    if style.jitter > 0:
        f0 = f0 * (1.0 + style.jitter * _smooth_noise(rng, n_voiced, cutoff_hz=120.0, sr=sr))
    f0 = np.clip(f0, 50.0, 600.0)
    phase = 2 * np.pi * np.cumsum(f0) / sr

    # Spectral envelope: vowel formants (interpolated between syllables) x source tilt.
    vowels = spec.vowels
    table = np.array([_VOWELS[vowels[i % len(vowels)]] for i in range(n_syl)], dtype=np.float64)
    centres = np.clip(syl_idx + syl_phase - 0.5, 0, n_syl - 1)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, n_syl - 1)
    w = (centres - lo)[:, None]
    formants = (table[lo] * (1 - w) + table[hi] * w) * speaker.formant_scale
    k = np.arange(1, int(_MAX_HARMONIC_HZ // f0.min()) + 1, dtype=np.float64)
    tilt = speaker.tilt_db_oct + style.tilt_db_oct + 6.0  # +6 dB/oct: lip radiation
    hop = 32  # harmonic amplitudes at a 2 ms control rate, interpolated to samples
    ctrl = np.arange(0, n_voiced + hop, hop).clip(max=n_voiced - 1)
    hf = f0[ctrl, None] * k[None, :]  # [frames, K] harmonic frequencies (Hz)
    amp_c = 10.0 ** (tilt * np.log2(k)[None, :] / 20.0) * _formant_gain(hf, formants[ctrl, None, :])
    amp_c[hf > _MAX_HARMONIC_HZ] = 0.0
    pos = np.arange(n_voiced) / hop
    i0 = pos.astype(np.int64)
    w = (pos - i0)[:, None].astype(np.float32)
    amp_c = amp_c.astype(np.float32)
    amp = amp_c[i0] * (1 - w) + amp_c[i0 + 1] * w
    voice = np.einsum("nk,nk->n", amp, np.sin(phase[:, None].astype(np.float32) * k[None, :].astype(np.float32)))
    voice = voice.astype(np.float64)
    if style.creak > 0:  # period doubling: sub-harmonic at f0/2, irregular strength
        voice = voice * (1.0 + style.creak * np.sin(phase / 2.0) * (0.7 + 0.3 * _smooth_noise(rng, n_voiced, cutoff_hz=8, sr=sr)))
    voice /= np.sqrt(np.mean(voice**2)) + 1e-12

    # Breath: high-passed noise shaped like the voice's envelope.
    noise = np.fft.rfft(rng.standard_normal(n_voiced))
    nf = np.fft.rfftfreq(n_voiced, 1.0 / sr)
    noise *= np.clip(nf / 1500.0, 0, 1) * np.exp(-nf / 6000.0)
    noise = np.fft.irfft(noise, n_voiced)
    noise /= noise.std() + 1e-12
    breath = speaker.breath + style.breath
    x = voice + breath * 2.0 * noise

    # Syllable envelope: attack, sustain, release, a short dip between syllables.
    syl_s = voiced_s / n_syl
    att = min(style.attack_s, 0.4 * syl_s) / syl_s
    rel = 0.25
    env = np.clip(syl_phase / att, 0, 1) * np.clip((1.0 - syl_phase) / rel, 0, 1)
    env = 0.15 + 0.85 * env**1.5 if style.attack_s > 0.02 else 0.08 + 0.92 * env
    env *= 1.0 + 0.25 * np.sin(np.pi * u)  # phrase-level swell
    if style.vibrato_hz:
        env *= 1.0 + 0.5 * (style.vibrato_st / max(style.vibrato_st, 1.0)) * np.sin(2 * np.pi * style.vibrato_hz * t + vib_phase)
    env *= 1.0 + 0.1 * _smooth_noise(rng, n_voiced, cutoff_hz=15.0, sr=sr)  # shimmer
    fade = np.minimum(1.0, np.minimum(t, voiced_s - t) / 0.04)
    x = x * env * fade

    level_db = -27.0 + speaker.gain_db + style.level_db + rng.uniform(-3, 3)
    x = x / (np.sqrt(np.mean(x**2)) + 1e-12) * 10.0 ** (level_db / 20.0)
    n_lead, n_trail = int(lead_s * sr), int(trail_s * sr)
    floor = rng.standard_normal(n_lead + n_voiced + n_trail) * 10.0 ** (-62.0 / 20.0)
    y = floor
    y[n_lead : n_lead + n_voiced] += x
    y = np.clip(y, -0.98, 0.98).astype(np.float32)
    if sample_rate != sr:
        from client.audio import resample

        y = np.clip(resample(y, orig_sr=sr, target_sr=sample_rate), -0.98, 0.98)
    return y.astype(np.float32)


def synthesize_corpus(
    out_dir: str | Path,
    *,
    layout: str = "ravdess",
    actors: int | Sequence[int] = 24,
    emotions: Sequence[str] | None = None,
    statements: Sequence[int] = (1, 2),
    repetitions: Sequence[int] = (1, 2),
    intensities: Sequence[int] = (1, 2),
    sentences: Sequence[str] = CREMA_D_SENTENCES,
    levels: Sequence[str] = ("LO", "MD", "HI"),
    sample_rate: int | None = None,
    seed: int = 0,
    as_distributed: bool = True,
    progress: bool = False,
) -> SynthSummary:
    """Write a deterministic synthetic corpus in a real corpus's exact layout.

    With the defaults this is RAVDESS's speech part: 24 actors x 60 clips
    (neutral: 1 intensity x 2 statements x 2 repetitions; the 7 others: 2 x 2 x 2).
    With ``layout="crema-d"`` it is CREMA-D: 91 actors (1001..1091) x 82 clips
    (11 sentences x 6 emotions at XX, plus IEO: 5 emotions x LO/MD/HI and neutral XX),
    as distributed: without the 20 recordings the distribution lacks, and with its
    documented no-audio clip silent (``as_distributed=False``: all 7462, all voiced).
    Fewer actors, emotions, statements, repetitions, intensities, sentences or
    levels give a smaller corpus whose clips are identical to the same clips of the full one.

    Args:
        out_dir: corpus root (created; existing files of the same names are overwritten).
        layout: ``"ravdess"`` (``Actor_XX/03-01-EE-II-SS-RR-AA.wav``) or
            ``"crema-d"`` (``AudioWAV/1001_DFA_ANG_XX.wav``).
        actors: how many actors (numbered from 1, or from 1001 for CREMA-D) or which actor ids.
        emotions: emotion names to include (``None``: all of the layout's).
        statements: RAVDESS statement codes (1, 2).
        repetitions: RAVDESS repetition codes (1, 2).
        intensities: RAVDESS intensity codes (1 normal, 2 strong).
        sentences: CREMA-D sentence codes.
        levels: CREMA-D levels of sentence IEO (LO, MD, HI).
        sample_rate: Hz of the 16-bit PCM wav files (``None``: 48000 RAVDESS, 16000 CREMA-D).
        seed: corpus seed.
        as_distributed: CREMA-D as the distribution ships it (see :class:`SynthConfig`).
        progress: show a tqdm bar.

    Returns:
        :class:`SynthSummary`.

    Raises:
        ConfigError: invalid option (names the value and what is allowed).
    """
    import soundfile as sf
    from tqdm.auto import tqdm

    config = SynthConfig(
        layout=layout, actors=actors if isinstance(actors, int) else tuple(actors),
        emotions=None if emotions is None else tuple(emotions), statements=tuple(statements),
        repetitions=tuple(repetitions), intensities=tuple(intensities), sentences=tuple(sentences),
        levels=tuple(levels), sample_rate=sample_rate, seed=seed, as_distributed=as_distributed,
    )
    root = Path(out_dir)
    specs = clip_specs(config)
    speakers = {a: Speaker.sample(a, seed=config.seed) for a in config.actors}
    total = 0.0
    for spec in tqdm(specs, desc="synth", unit="clip", disable=not progress):
        if config.as_distributed and spec.layout == "crema-d" and spec.stem in CREMA_D_NO_AUDIO:
            y = np.zeros(int(round(CREMA_D_NO_AUDIO[spec.stem] * config.sample_rate)), dtype=np.float32)
        else:
            y = synthesize_clip(spec, speaker=speakers[spec.actor], seed=config.seed, sample_rate=config.sample_rate)
        path = root / spec.relpath()
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), y, config.sample_rate, subtype="PCM_16")
        total += y.shape[0] / config.sample_rate
    return SynthSummary(
        root=root, layout=config.layout, num_clips=len(specs), actors=tuple(config.actors),
        emotions=config.emotions, sample_rate=config.sample_rate, total_seconds=math.fsum([total]), seed=config.seed,
    )
