"""Named training recipes: one name instead of a pile of flags.

:class:`TrainingRecipe` pairs the options of a synthetic corpus with the options of
a :class:`training.train_config.TrainConfig`. :data:`DEMO` and :data:`TEST` are built in
(:data:`RECIPES`); the reference recipes are JSON files in ``training/recipes/``
(:data:`RECIPE_DIR`). :func:`load_recipe` finds one by name or path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from client.errors import ConfigError
from training.train_config import TrainConfig


@dataclass(frozen=True)
class TrainingRecipe:
    """A named corpus + training recipe: one name instead of a pile of flags.

    Attributes:
        synth: keyword options of :func:`training.synth.synthesize_corpus`.
        train: keyword options of :class:`TrainConfig` (besides ``corpus`` and ``out``).
        note: what it is for, with the figures measured for it.
        expected: figures the recipe is meant to reach (the reference's, for the XLSR-53 recipes).
        wall_time: expected wall time and the hardware it assumes.
    """

    synth: dict[str, Any]
    train: dict[str, Any]
    note: str = ""
    expected: dict[str, Any] = field(default_factory=dict)
    wall_time: str = ""

    def __post_init__(self) -> None:
        known = [f.name for f in fields(TrainConfig) if f.name not in ("corpus", "out")]
        unknown = sorted(set(self.train) - set(known))
        if unknown:
            raise ConfigError(f"recipe train options {unknown}: not TrainConfig fields (corpus and out are given "
                              f"per run); known: {known}")

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainingRecipe":
        """Read a recipe file (``{"train": {...}, "note", "expected", "wall_time", "synth"}``).

        Raises:
            ConfigError: missing or malformed file, or unknown train options (names them).
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe {path}: no such file")
        try:
            d = json.loads(path.read_text())
            return cls(synth=dict(d.get("synth", {})), train=dict(d["train"]), note=str(d.get("note", "")),
                       expected=dict(d.get("expected", {})), wall_time=str(d.get("wall_time", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"recipe {path}: malformed: {exc!r}") from None

    def config(self, *, corpus: str | Path | tuple[str | Path, ...], out: str | Path, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` of this recipe for a corpus (or corpora) and output directory."""
        return TrainConfig(corpus=corpus, out=Path(out), **{**self.train, **overrides})


#: The demo: 10 synthetic actors x 60 clips (8 emotions), tiny model from scratch,
#: 2 s windows, 2 test + 1 val actors held out. See the module docstring of
#: training.synth_voice for why it is learnable and why level statistics do not give it away.
DEMO = TrainingRecipe(
    synth=dict(actors=10, sample_rate=48_000, seed=0),
    train=dict(base="tiny", max_steps=600, batch_size=16, learning_rate=1.5e-3, window_s=2.0,
               test_actors=2, val_actors=1, seed=0),
    note="demo: a tiny model from scratch, 600 steps; docs/benchmarks.md has its time and held-out accuracy",
)

#: The test suite's recipe: 6 actors, 4 emotions, 16 kHz, short windows, few steps.
TEST = TrainingRecipe(
    synth=dict(actors=6, emotions=("happy", "sad", "angry", "fearful"), sample_rate=16_000, seed=0),
    train=dict(base="tiny", max_steps=150, batch_size=16, learning_rate=1e-3, window_s=1.5,
               test_actors=2, val_actors=0, seed=0),
    note="tests: measured ~21 s of train() (150 steps: 17 s) + 6 s synth; held-out-actor accuracy 75% (chance 25%)",
)

RECIPES: dict[str, TrainingRecipe] = {"demo": DEMO, "test": TEST}
#: Folder of the reference recipes (``ravdess8.json``, ``ravdess7.json``, ``crema6.json``, ``combined7.json``).
RECIPE_DIR = Path(__file__).parent / "recipes"


def load_recipe(name_or_path: str | Path) -> TrainingRecipe:
    """A recipe by name (:data:`RECIPES`, then ``training/recipes/<name>.json``) or from a JSON file.

    Raises:
        ConfigError: no such recipe (lists the known names).
    """
    name = str(name_or_path)
    if name in RECIPES:
        return RECIPES[name]
    path = RECIPE_DIR / f"{name}.json"
    if path.is_file():
        return TrainingRecipe.from_json(path)
    if name.endswith(".json") or Path(name).is_file():
        return TrainingRecipe.from_json(name)
    known = sorted(RECIPES) + sorted(p.stem for p in RECIPE_DIR.glob("*.json"))
    raise ConfigError(f"recipe {name!r}: not a known recipe {known} or a recipe JSON file")

