"""Actor-held-out splits, k actor-grouped folds, and the JSON manifest that pins them.

No actor is in two partitions, so held-out accuracy measures generalisation to
new speakers. A split (one of :func:`actor_split`, or fold ``i`` of
:func:`actor_kfold`) is written once as a manifest (paths relative to the corpus
root, or to each corpus's root for combined corpora) that later steps (export
reports, load tests, the demo's held-out table, ``ser evaluate``) read back, so
everyone scores the exact same test clips.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from client.errors import ConfigError
from training.corpus import Clip, SkippedFile
from training.errors import CorpusError

PARTITIONS = ("train", "val", "test")
#: 2 adds ``corpus`` per clip, ``roots`` for combined corpora and ``extra`` (fold, folds...); 1 is still read.
MANIFEST_VERSION = 2

#: A corpus root, or ``{layout: root}`` for combined corpora.
Roots = str | Path | Mapping[str, str | Path]


@dataclass(frozen=True)
class Split:
    """Clips of each partition, actor-disjoint.

    Attributes:
        train, val, test: clips of each partition (``val`` may be empty).
        seed: the seed that drew the actors.
        extra: written into the manifest as is (``fold``, ``folds`` for k-fold splits).
    """

    train: tuple[Clip, ...]
    val: tuple[Clip, ...]
    test: tuple[Clip, ...]
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def actors(self, partition: str) -> tuple[int, ...]:
        """Sorted actor ids of ``partition``."""
        return tuple(sorted({c.actor for c in getattr(self, partition)}))

    def __iter__(self):
        return iter((self.train, self.val, self.test))

    def only(self, corpus: str) -> "Split":
        """The same split restricted to one corpus's clips (cross-corpus runs)."""
        def keep(part: tuple[Clip, ...]) -> tuple[Clip, ...]:
            return tuple(c for c in part if c.corpus == corpus)
        return Split(train=keep(self.train), val=keep(self.val), test=keep(self.test), seed=self.seed,
                     extra={**self.extra, "corpus": corpus})


def actor_split(
    clips: Iterable[Clip],
    *,
    test_actors: int | None = None,
    test_fraction: float | None = None,
    val_actors: int = 1,
    seed: int = 0,
) -> Split:
    """Split clips so that no actor is in two partitions.

    Actors are shuffled with ``seed``; the first go to test, the next to val, the
    rest to train. Test and val each get a balanced share of male/female voices
    when possible (odd/even actors alternate in the shuffled order).

    Args:
        clips: the corpus.
        test_actors: how many actors to hold out for test.
        test_fraction: or the fraction of actors for test (rounded, at least 1);
            default 0.2 when neither is given.
        val_actors: actors for validation (0 for none).
        seed: shuffle seed.

    Returns:
        :class:`Split`.

    Raises:
        ConfigError: bad counts, or too few actors to leave any for training.
    """
    clips = list(clips)
    if not clips:
        raise CorpusError("actor_split: no clips to split")
    actors = sorted({c.actor for c in clips})
    if test_actors is not None and test_fraction is not None:
        raise ConfigError(f"test_actors={test_actors} and test_fraction={test_fraction}: give one, not both")
    if test_actors is None:
        frac = 0.2 if test_fraction is None else float(test_fraction)
        if not 0 < frac < 1:
            raise ConfigError(f"test_fraction={test_fraction}: must be in (0, 1)")
        test_actors = max(1, int(round(frac * len(actors))))
    if test_actors < 1:
        raise ConfigError(f"test_actors={test_actors}: must be >= 1")
    if val_actors < 0:
        raise ConfigError(f"val_actors={val_actors}: must be >= 0")
    if test_actors + val_actors >= len(actors):
        raise ConfigError(
            f"test_actors={test_actors} + val_actors={val_actors}: the corpus has only {len(actors)} actors "
            f"({actors}); at least one must remain for training"
        )
    order = _interleaved_actors(actors, np.random.default_rng(seed))
    test_set = set(order[:test_actors])
    val_set = set(order[test_actors : test_actors + val_actors])

    def part(a: int) -> str:
        return "test" if a in test_set else "val" if a in val_set else "train"

    groups: dict[str, list[Clip]] = {p: [] for p in PARTITIONS}
    for c in clips:
        groups[part(c.actor)].append(c)
    return Split(train=tuple(groups["train"]), val=tuple(groups["val"]), test=tuple(groups["test"]), seed=seed)


def _interleaved_actors(actors: Iterable[int], rng: np.random.Generator) -> list[int]:
    """Actors shuffled within each sex (odd/even ids), then alternated male/female."""
    actors = sorted(actors)
    male = [a for a in actors if a % 2 == 1]
    female = [a for a in actors if a % 2 == 0]
    rng.shuffle(male)
    rng.shuffle(female)
    first, second = (male, female) if rng.random() < 0.5 else (female, male)
    order: list[int] = []
    for i in range(max(len(male), len(female))):
        order += [g[i] for g in (first, second) if i < len(g)]
    return order


def actor_kfold(clips: Iterable[Clip], *, k: int = 5, val_actors: int = 0, seed: int = 0) -> list[Split]:
    """``k`` actor-grouped folds: each actor is in exactly one fold's test partition.

    Stratified as far as actor grouping allows: each corpus is folded on its own
    (so in combined corpora every fold tests actors of both, and fold ``i``
    restricted to one corpus is that corpus's own fold ``i``), and within a corpus
    the actors are shuffled per sex and dealt male/female alternately round-robin,
    so fold sizes differ by at most one actor per corpus and sexes are balanced.
    Class proportions follow, since every actor records every emotion in both
    corpora (per-fold label counts are in the manifest).

    Args:
        clips: the corpus (one or several corpora; ``Clip.corpus`` groups them).
        k: number of folds (2.. the smallest corpus's actor count).
        val_actors: actors per corpus moved from each fold's training actors to
            its validation partition (the first ones the next fold would test).
        seed: shuffle seed; the same clips and seed give the same folds.

    Returns:
        ``k`` :class:`Split` objects; ``extra`` holds ``{"fold": i, "folds": k}``.

    Raises:
        CorpusError: no clips.
        ConfigError: ``k`` < 2, more folds than a corpus has actors, or no training actor left.
    """
    clips = list(clips)
    if not clips:
        raise CorpusError("actor_kfold: no clips to fold")
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise ConfigError(f"k={k}: need at least 2 folds")
    if val_actors < 0:
        raise ConfigError(f"val_actors={val_actors}: must be >= 0")
    by_corpus: dict[str, list[int]] = {}
    for c in clips:
        by_corpus.setdefault(c.corpus, [])
        if c.actor not in by_corpus[c.corpus]:
            by_corpus[c.corpus].append(c.actor)
    fold_of: dict[int, int] = {}
    val_of: list[set[int]] = [set() for _ in range(k)]
    for corpus in sorted(by_corpus):
        actors = by_corpus[corpus]
        if k > len(actors):
            raise ConfigError(f"k={k}: the {corpus} corpus has only {len(actors)} actors; need k <= {len(actors)}")
        largest_test = -(-len(actors) // k)
        if largest_test + val_actors >= len(actors):
            raise ConfigError(f"k={k}, val_actors={val_actors}: the {corpus} corpus has only {len(actors)} actors; "
                              "at least one must remain for training in every fold")
        # Seeded by the corpus's name, so a corpus is folded the same alone and combined.
        order = _interleaved_actors(actors, np.random.default_rng([seed, zlib.crc32(corpus.encode())]))
        dealt: list[list[int]] = [order[i::k] for i in range(k)]
        for i, group in enumerate(dealt):
            fold_of.update({a: i for a in group})
        for i in range(k):  # validation: the next folds' actors, in dealing order
            pool = [a for j in range(1, k) for a in dealt[(i + j) % k]]
            val_of[i].update(pool[:val_actors])
    splits = []
    for i in range(k):
        groups: dict[str, list[Clip]] = {p: [] for p in PARTITIONS}
        for c in clips:
            part = "test" if fold_of[c.actor] == i else "val" if c.actor in val_of[i] else "train"
            groups[part].append(c)
        splits.append(Split(train=tuple(groups["train"]), val=tuple(groups["val"]), test=tuple(groups["test"]),
                            seed=seed, extra={"fold": i, "folds": k}))
    return splits


def resolve_roots(root: Roots) -> dict[str, Path]:
    """``{layout: absolute root}`` from a single root (taken as any layout's) or a mapping."""
    if isinstance(root, Mapping):
        return {str(k): Path(v).resolve() for k, v in root.items()}
    return {"*": Path(root).resolve()}


def write_manifest(split: Split, path: str | Path, *, root: Roots, skipped: Sequence[SkippedFile] = ()) -> Path:
    """Write the split as JSON: one entry per clip with its path relative to its corpus root.

    Format (``roots`` and per-clip ``corpus`` for combined corpora; ``skipped`` and
    ``skipped_counts`` when files of the corpus were left out as unusable)::

        {"version": 2, "seed": 0, "root": "/abs/corpus", "extra": {"fold": 0, "folds": 5},
         "actors": {"train": [...], "val": [...], "test": [...]},
         "labels": {"train": {"angry": 40, ...}, ...},
         "clips": [{"path": "Actor_01/03-01-...wav", "actor": 1, "label": "calm", "corpus": "ravdess",
                    "partition": "train", "statement": 1, "repetition": 1, "intensity": 1}, ...],
         "skipped": [{"path": "AudioWAV/1076_MTI_SAD_XX.wav", "corpus": "crema-d", "reason": "silent",
                      "detail": "loudest 25 ms frame at -inf dBFS < -55 dBFS"}, ...],
         "skipped_counts": {"silent": 1}}

    Args:
        split: the split.
        path: the JSON file to write.
        root: the corpus root, or ``{layout: root}`` for combined corpora.
        skipped: files of the corpus the split leaves out as unusable (with their reasons).
    """
    roots = resolve_roots(root)

    def relative(p: Path, corpus: str) -> str:
        base = roots.get(corpus, roots.get("*"))
        try:
            if base is None:
                raise ValueError
            return Path(p).resolve().relative_to(base).as_posix()
        except ValueError:
            raise CorpusError(f"{p}: not under the {corpus} corpus root {base}") from None

    entries = []
    for name in PARTITIONS:
        for c in getattr(split, name):
            entries.append({
                "path": relative(c.path, c.corpus), "actor": c.actor, "label": c.label, "corpus": c.corpus, "partition": name,
                "statement": c.statement, "repetition": c.repetition, "intensity": c.intensity,
            })
    entries.sort(key=lambda e: (e["corpus"], e["path"]))
    labels = {p: dict(sorted(Counter(c.label for c in getattr(split, p)).items())) for p in PARTITIONS}
    doc = {"version": MANIFEST_VERSION, "seed": split.seed}
    if "*" in roots:
        doc["root"] = str(roots["*"])
    else:
        doc["roots"] = {k: str(v) for k, v in roots.items()}
    doc.update({"extra": split.extra, "actors": {p: list(split.actors(p)) for p in PARTITIONS}, "labels": labels,
                "clips": entries})
    if skipped:
        doc["skipped"] = [{"path": relative(s.path, s.corpus), "corpus": s.corpus, "reason": s.reason, "detail": s.detail}
                          for s in skipped]
        doc["skipped_counts"] = dict(sorted(Counter(s.reason for s in skipped).items()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def read_manifest(path: str | Path, *, root: Roots | None = None) -> Split:
    """Read a manifest written by :func:`write_manifest` (version 1 or 2).

    Args:
        path: the JSON file.
        root: corpus root (or ``{layout: root}``) to resolve the relative paths
            against (default: the root(s) recorded in the manifest), so a moved
            corpus can still be used.

    Raises:
        CorpusError: missing or malformed manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such split manifest")
    try:
        doc = json.loads(path.read_text())
        if root is not None:
            roots = resolve_roots(root)
        else:
            roots = ({k: Path(v) for k, v in doc["roots"].items()} if "roots" in doc else {"*": Path(doc["root"])})
        groups: dict[str, list[Clip]] = {p: [] for p in PARTITIONS}
        for e in doc["clips"]:
            corpus = str(e.get("corpus", "ravdess"))
            base = roots.get(corpus, roots.get("*"))
            if base is None:
                raise KeyError(f"no root for corpus {corpus!r}")
            groups[e["partition"]].append(Clip(
                path=base / e["path"], actor=int(e["actor"]), label=str(e["label"]),
                statement=int(e.get("statement", 1)), repetition=int(e.get("repetition", 1)),
                intensity=int(e.get("intensity", 1)), corpus=corpus,
            ))
        extra = dict(doc.get("extra") or {})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorpusError(f"{path}: malformed split manifest: {exc!r}") from None
    return Split(train=tuple(groups["train"]), val=tuple(groups["val"]), test=tuple(groups["test"]),
                 seed=int(doc.get("seed", 0)), extra=extra)
