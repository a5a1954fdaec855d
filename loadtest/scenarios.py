"""The scenarios' repositories: each scenario serves a single-model copy of the repository.

``batching-on`` serves the model's config as written, ``batching-off`` the same with
``dynamic_batching`` cleared, ``instances-N`` with N instances, ``model-<name>`` another model of
the repository (the scenario names: :mod:`loadtest.run_config`). :func:`prepare_scenario` gives
the configuration a scenario runs with and writes its copy (:func:`write_scenario_repository`).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from client.errors import ConfigError, ModelNotFoundError
from loadtest.run_config import SCENARIO_INSTANCES, SCENARIO_MODEL, SCENARIO_OFF, LoadTestConfig


def prepare_scenario(config: LoadTestConfig, scenario: str, root: Path) -> tuple[LoadTestConfig, Path]:
    """The configuration ``scenario`` runs with, and its repository copy written under ``root / scenario``.

    ``model-<name>`` runs the other model (``config.compare_model``); every other scenario runs ``config``.

    Returns:
        ``(run_config, model_folder)``: the folder is ``<root>/<scenario>/<model>``; serve its parent.

    Raises:
        ConfigError, ModelNotFoundError: as :func:`model_folder`. ModelConfigError: as :func:`write_scenario_repository`.
    """
    run_config = config
    if config.compare_model and scenario == SCENARIO_MODEL.format(config.compare_model):
        run_config = replace(config, model=config.compare_model, compare_model=None)
    repo = write_scenario_repository(
        model_folder(run_config), root / scenario,
        dynamic_batching=scenario != SCENARIO_OFF,
        instances=config.compare_instances if scenario == SCENARIO_INSTANCES.format(config.compare_instances) else None,
    )
    return run_config, repo


def model_folder(config: LoadTestConfig) -> Path:
    """``<repository>/<model>`` of ``config`` (which must name a repository).

    Raises:
        ConfigError: the repository is not a directory. ModelNotFoundError: it has no such model
            (the message lists the models it has).
    """
    assert config.repository is not None
    if not config.repository.is_dir():
        raise ConfigError(f"repository={str(config.repository)!r}: no such directory")
    folder = config.repository / config.model
    if not (folder / "config.pbtxt").is_file():
        models = sorted(p.name for p in config.repository.iterdir() if (p / "config.pbtxt").is_file())
        raise ModelNotFoundError(f"model {config.model!r} is not in repository {config.repository}; it has {models}")
    return folder


def write_scenario_repository(
    model_dir: str | Path, repo_dir: str | Path, *, dynamic_batching: bool, instances: int | None = None
) -> Path:
    """Copy one model into a fresh single-model repository, with or without dynamic batching.

    The config is parsed into a ``ModelConfig`` message; without batching its
    ``dynamic_batching`` field is cleared (``max_batch_size`` stays, so clients
    may still send batches; Triton then runs each request as it comes), and the
    message is written with text_format. ``1/model.onnx`` is symlinked, not copied.

    Args:
        model_dir: ``<repository>/<model>`` written by the bundle's repository writer.
        repo_dir: the new repository root (replaced if it exists).
        dynamic_batching: keep (True) or clear (False) the dynamic batcher.
        instances: set every instance group's count to this (None: as written).

    Returns:
        The new model folder ``<repo_dir>/<model>``.

    Raises:
        ModelConfigError: ``model_dir`` has no config.pbtxt, or it does not parse.
    """
    from export.repository import read_model_config, write_config

    model_dir, repo_dir = Path(model_dir), Path(repo_dir)
    message = read_model_config(model_dir)
    if not dynamic_batching:
        message.ClearField("dynamic_batching")
    if instances is not None:
        for group in message.instance_group:
            group.count = instances
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    target = repo_dir / model_dir.name
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("*.onnx", "__pycache__"))
    for onnx in model_dir.rglob("*.onnx"):
        link = target / onnx.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(onnx.resolve())
    write_config(message, target / "config.pbtxt")
    return target
