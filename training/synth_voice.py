"""Synthetic speech: one utterance from a speaker's voice, an emotion's style and a clip's fields.

No corpus can be downloaded here, so the synthetic corpora (:mod:`training.synth`)
are made of generated speech-like audio, deterministic for a seed: each clip's
randomness is seeded from its own file-name fields (a :class:`training.synth_specs.ClipSpec`).

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

from dataclasses import dataclass, replace

import numpy as np

from client.errors import ConfigError
from training.synth_specs import ClipSpec

INTERNAL_SR = 16_000
_MAX_HARMONIC_HZ = 7_000.0

#: Vowel formants (F1, F2, F3 in Hz, adult male) for the vowels of the two statements.
_VOWELS = {
    "i": (280, 2250, 2900), "I": (400, 1900, 2550), "e": (480, 1850, 2500),
    "ae": (660, 1700, 2400), "a": (730, 1090, 2440), "o": (500, 900, 2400),
    "u": (320, 900, 2300), "A": (600, 1200, 2500), "er": (490, 1350, 1700),
}


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
