"""Synthetic speech-emotion corpora in the exact on-disk layout of real ones.

No corpus can be downloaded here, so the training, export and serving code paths
run on generated speech-like audio written exactly as RAVDESS lays it out
(``Actor_XX/03-01-EE-II-SS-RR-AA.wav``, 16-bit PCM, 48 kHz) or as CREMA-D does
(``AudioWAV/1001_DFA_ANG_XX.wav``, 16-bit PCM, 16 kHz; 91 actors 1001..1091, the 12
sentences of the corpus's README, 6 emotions; only sentence IEO is spoken at levels
LO/MD/HI, the rest and IEO-neutral are XX). By default the CREMA-D twin is the corpus
as distributed: the 20 recordings the distribution lacks are not written
(:data:`training.synth_specs.CREMA_D_ABSENT`) and the clip documented as holding no audio is written
as digital silence (:data:`training.synth_specs.CREMA_D_NO_AUDIO`), so training meets what it meets on
the real corpus. Everything is deterministic for a seed, and each clip's
randomness is seeded from its own file-name fields, so a smaller corpus is a
subset of a bigger one made with the same seed.

What is written is decided in :mod:`training.synth_specs` (the clips of a corpus and
their file names) and :mod:`training.synth_voice` (how each clip sounds: speakers,
emotion styles, the synthesis, and why level statistics do not give the emotion away).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from training.corpus_codes import CREMA_D_SENTENCES
from training.synth_specs import CREMA_D_NO_AUDIO, SynthConfig, clip_specs
from training.synth_voice import Speaker, synthesize_clip


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
        progress: show progress (:mod:`client.progress`).

    Returns:
        :class:`SynthSummary`.

    Raises:
        ConfigError: invalid option (names the value and what is allowed).
    """
    import soundfile as sf

    from client.progress import progress_bar

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
    for spec in progress_bar(specs, desc="synth", unit="clip", disable=not progress):
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
