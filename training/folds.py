"""Actor-held-out splits and the JSON manifest that pins them.

No actor is in two partitions, so held-out accuracy measures generalisation to
new speakers. The split is written once as a manifest (paths relative to the
corpus root) that later steps (export reports, load tests, the demo's held-out
table) read back, so everyone scores the exact same test clips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from client.errors import ConfigError, CorpusError
from training.corpus import Clip

PARTITIONS = ("train", "val", "test")
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Clips of each partition, actor-disjoint.

    Attributes:
        train, val, test: clips of each partition (``val`` may be empty).
        seed: the seed that drew the actors.
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
    rng = np.random.default_rng(seed)
    male = [a for a in actors if a % 2 == 1]
    female = [a for a in actors if a % 2 == 0]
    rng.shuffle(male)
    rng.shuffle(female)
    first, second = (male, female) if rng.random() < 0.5 else (female, male)
    order: list[int] = []
    for i in range(max(len(male), len(female))):
        order += [g[i] for g in (first, second) if i < len(g)]
    test_set = set(order[:test_actors])
    val_set = set(order[test_actors : test_actors + val_actors])

    def part(a: int) -> str:
        return "test" if a in test_set else "val" if a in val_set else "train"

    groups: dict[str, list[Clip]] = {p: [] for p in PARTITIONS}
    for c in clips:
        groups[part(c.actor)].append(c)
    return Split(train=tuple(groups["train"]), val=tuple(groups["val"]), test=tuple(groups["test"]), seed=seed)


def write_manifest(split: Split, path: str | Path, *, root: str | Path) -> Path:
    """Write the split as JSON: one entry per clip with its path relative to ``root``.

    Format::

        {"version": 1, "seed": 0, "root": "/abs/corpus",
         "clips": [{"path": "Actor_01/03-01-...wav", "actor": 1, "label": "calm",
                    "partition": "train", "statement": 1, "repetition": 1, "intensity": 1}, ...]}
    """
    root = Path(root).resolve()
    entries = []
    for name in PARTITIONS:
        for c in getattr(split, name):
            try:
                rel = Path(c.path).resolve().relative_to(root)
            except ValueError:
                raise CorpusError(f"{c.path}: not under the corpus root {root}") from None
            entries.append({
                "path": rel.as_posix(), "actor": c.actor, "label": c.label, "partition": name,
                "statement": c.statement, "repetition": c.repetition, "intensity": c.intensity,
            })
    entries.sort(key=lambda e: e["path"])
    doc = {"version": MANIFEST_VERSION, "seed": split.seed, "root": str(root),
           "actors": {p: list(split.actors(p)) for p in PARTITIONS}, "clips": entries}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def read_manifest(path: str | Path, *, root: str | Path | None = None) -> Split:
    """Read a manifest written by :func:`write_manifest`.

    Args:
        path: the JSON file.
        root: corpus root to resolve the relative paths against (default: the
            root recorded in the manifest), so a moved corpus can still be used.

    Raises:
        CorpusError: missing or malformed manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such split manifest")
    try:
        doc = json.loads(path.read_text())
        base = Path(root) if root is not None else Path(doc["root"])
        groups: dict[str, list[Clip]] = {p: [] for p in PARTITIONS}
        for e in doc["clips"]:
            groups[e["partition"]].append(Clip(
                path=base / e["path"], actor=int(e["actor"]), label=str(e["label"]),
                statement=int(e.get("statement", 1)), repetition=int(e.get("repetition", 1)),
                intensity=int(e.get("intensity", 1)),
            ))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{path}: malformed split manifest: {exc!r}") from None
    return Split(train=tuple(groups["train"]), val=tuple(groups["val"]), test=tuple(groups["test"]),
                 seed=int(doc.get("seed", 0)))
