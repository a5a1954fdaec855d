"""Hugging Face audio classifiers as bundle models: what a checkpoint folder says, read once.

A fine-tuned speech-emotion model from the hub or a local folder (``config.json``,
weights, ``preprocessor_config.json``) becomes a :class:`training.model.WaveformClassifier`
with a :class:`training.model.CheckpointInfo`, so ``ser export`` treats it like a
checkpoint ``ser train`` wrote:

* labels: ``config.id2label``, in id order;
* head: ``config.problem_type``: single-label classification (softmax over the
  labels) or regression (the head's named values, e.g. arousal / dominance /
  valence); multi-label heads are refused with the reason;
* input: ``sampling_rate``, ``do_normalize`` and ``return_attention_mask`` of the
  feature extractor (:class:`InputSpec`), applied in the graph as the model was trained;
* the model class: ``AutoModelForAudioClassification``; any family whose model reads
  raw ``input_values`` through a raw-waveform feature extractor is accepted (the
  families tested end to end: :data:`TESTED_MODEL_TYPES`).

:func:`load_pretrained` reads a pretrained encoder the same way to fine-tune it
(``ser train --base``), with a new head for the training labels.

Hub names are looked up in the local Hugging Face cache first; the hub is contacted
only after a quick reachability check, so a host without network gets a one-line
error naming the model and asking for a local folder instead of minutes of retries.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from client.errors import ConfigError
from training.errors import CheckpointError

#: Model families exported, served and compared with ``transformers.pipeline`` by the tests.
TESTED_MODEL_TYPES: tuple[str, ...] = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
PREPROCESSOR_CONFIG = "preprocessor_config.json"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Seconds the hub's host may take to accept a connection before the hub counts as unreachable.
HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its waveform, from its feature extractor's config.

    Attributes:
        sample_rate: Hz (``sampling_rate``).
        normalize: per-clip zero mean / unit variance (``do_normalize``).
        attention_mask: the model is given an attention mask (``return_attention_mask``).
    """

    sample_rate: int = 16_000
    normalize: bool = True
    attention_mask: bool = True


@dataclass(frozen=True)
class HFCheckpoint:
    """A Hugging Face audio-classification checkpoint, as its config files describe it.

    Attributes:
        name: what the user gave (hub name or path).
        path: the local folder holding it.
        model_type: ``config.model_type`` (``wav2vec2``, ``hubert``...).
        architecture: ``config.architectures[0]`` (``""`` if unrecorded).
        problem_type: ``single_label_classification`` or ``regression`` (``config.problem_type``
            or its default).
        labels: ``id2label`` in id order.
        inputs: the feature extractor's :class:`InputSpec`.
    """

    name: str
    path: Path
    model_type: str
    architecture: str
    problem_type: str
    labels: tuple[str, ...]
    inputs: InputSpec

    def contract_extra(self, *, window_source: str) -> dict[str, str]:
        """String parameters the serving contract records about this model."""
        return {
            "hf_source": self.name,
            "hf_model_type": self.model_type,
            "hf_architecture": self.architecture,
            "problem_type": self.problem_type,
            "input_normalize": str(self.inputs.normalize).lower(),
            "input_attention_mask": str(self.inputs.attention_mask).lower(),
            "window_source": window_source,
        }


def is_bundle_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a folder ``ser train`` wrote (it holds ``ser_checkpoint.json``)."""
    from training.model import CHECKPOINT_INFO

    return (Path(path) / CHECKPOINT_INFO).is_file()


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """The local folder of a checkpoint given as a path or a hub name (``owner/model``).

    Raises:
        CheckpointError: a path that is a file, a name that is neither a folder nor a
            hub name, or a hub name that is not cached and cannot be fetched (one line
            naming it, suggesting a local path).
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{name}: is a file; expected a checkpoint folder (config.json, weights, "
                                  f"{PREPROCESSOR_CONFIG})")
        return path
    if not _HUB_NAME.fullmatch(name):
        raise CheckpointError(f"{name}: no such checkpoint directory, and not a hub name of the form owner/model")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.bin", "*.txt"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and relatives)
        pass
    _probe_hub(name)
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - RepositoryNotFoundError, HTTP and OS errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{name}: cannot fetch it from the Hugging Face hub ({first}); "
                              "pass the path of a local copy instead") from None


def _probe_hub(name: str) -> None:
    """Raise a one-line :class:`CheckpointError` quickly when the hub cannot be reached."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(f"{name}: no such checkpoint directory, and as a hub name not in the local Hugging Face "
                              "cache while HF_HUB_OFFLINE is set; pass the path of a local copy instead")
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CheckpointError(
            f"{name}: no such checkpoint directory, and as a hub name not in the local Hugging Face cache while the "
            f"hub ({host}) cannot be reached ({reason}); "
            f"download it where there is network (huggingface-cli download {name} --local-dir DIR) and pass DIR"
        ) from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable: {exc}") from None


def read_input_spec(folder: Path, *, required: bool = True) -> InputSpec:
    """The :class:`InputSpec` of ``folder/preprocessor_config.json``.

    Args:
        folder: the checkpoint folder.
        required: without the file, raise (``True``) or return wav2vec2's defaults.

    Raises:
        CheckpointError: missing (when required) or not a raw-waveform feature extractor.
    """
    path = folder / PREPROCESSOR_CONFIG
    if not path.is_file():
        if required:
            raise CheckpointError(f"{folder}: no {PREPROCESSOR_CONFIG}: the sampling rate, normalisation and "
                                  "attention-mask use of the model's input are unknown; copy it from the model's base")
        return InputSpec()
    d = _read_json(path)
    if int(d.get("feature_size", 1)) != 1 or "n_mels" in d or "num_mel_bins" in d:
        raise CheckpointError(f"{path}: {d.get('feature_extractor_type', 'this feature extractor')} computes "
                              "spectrogram features; the bundle serves models that read the raw waveform")
    try:
        return InputSpec(sample_rate=int(d.get("sampling_rate", 16_000)), normalize=bool(d.get("do_normalize", True)),
                         attention_mask=bool(d.get("return_attention_mask", False)))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed: {exc}") from None


def inspect_checkpoint(name_or_path: str | Path, *, need_head: bool = True, need_preprocessor: bool = True) -> HFCheckpoint:
    """Read a Hugging Face checkpoint's ``config.json`` and ``preprocessor_config.json`` (no weights).

    Args:
        name_or_path: local folder or hub name.
        need_head: require a trained audio-classification head (export); ``False``
            for a base to fine-tune (``ser train --base``).
        need_preprocessor: require ``preprocessor_config.json``.

    Raises:
        CheckpointError: unreachable or missing, not an audio-classification model of a
            raw-waveform family, a regression or multi-label head, or unusable labels.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    folder = resolve_model_dir(name_or_path)
    name = str(name_or_path)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{name}: no config.json: not a Hugging Face checkpoint folder")
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{name}: config.json cannot be read: {str(exc).splitlines()[0]}") from None
    model_type = str(getattr(config, "model_type", ""))
    head_class = MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    if head_class is None:
        raise CheckpointError(f"{name}: model_type {model_type!r} has no audio-classification model in transformers")
    if not hasattr(config, "conv_kernel"):
        raise CheckpointError(f"{name}: model_type {model_type!r} ({head_class}) does not read the raw waveform "
                              f"through a convolutional feature encoder; supported: {', '.join(TESTED_MODEL_TYPES)}")
    architecture = (getattr(config, "architectures", None) or [""])[0]
    if need_head and architecture != head_class:
        raise CheckpointError(f"{name}: architecture {architecture or '(none recorded)'!r} has no trained "
                              f"audio-classification head ({head_class}); fine-tune it first (ser train --base {name})")
    problem_type = getattr(config, "problem_type", None) or "single_label_classification"
    if need_head and problem_type not in ("single_label_classification", "regression"):
        raise CheckpointError(f"{name}: problem_type {problem_type!r}: the bundle serves single-label classifiers "
                              "(softmax over the labels) and regression heads (named values)")
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    labels = tuple(id2label[i] for i in sorted(id2label))
    if need_head and (sorted(id2label) != list(range(len(labels))) or len(set(labels)) != len(labels)
                      or len(labels) != int(config.num_labels)):
        raise CheckpointError(f"{name}: id2label {id2label} must name each of the {config.num_labels} outputs once, ids 0..C-1")
    return HFCheckpoint(name=name, path=folder, model_type=model_type, architecture=architecture,
                        problem_type=problem_type, labels=labels,
                        inputs=read_input_spec(folder, required=need_preprocessor))


def load_pretrained(name_or_path: str, *, labels):
    """Start from a pretrained waveform encoder (hub name or local folder) with a new head for ``labels``.

    Any family :func:`inspect_checkpoint` accepts (wav2vec2, HuBERT,
    WavLM, Data2VecAudio...), with or without a classification head.

    Returns:
        ``(model, input)``: the ``...ForSequenceClassification`` model and the
        :class:`InputSpec` of its feature extractor (or the
        wav2vec2 defaults when the folder has none).
    """
    from transformers import AutoModelForAudioClassification

    source = inspect_checkpoint(name_or_path, need_head=False, need_preprocessor=False)
    labels = list(labels)
    try:
        model = AutoModelForAudioClassification.from_pretrained(
            str(source.path),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)},
            problem_type="single_label_classification",
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{name_or_path}: cannot load a {source.model_type} model: {str(exc).splitlines()[0]}") from None
    return model, source.inputs


def window_from_durations(durations_s: Sequence[float], *, sample_rate: int) -> int:
    """W covering most clips (:func:`training.data.choose_window_samples`: 90th percentile, 0.5 s steps, 1..8 s)."""
    from training.data import choose_window_samples

    return choose_window_samples(durations_s, sample_rate=sample_rate)


def audio_durations(audio_dir: str | Path, *, limit: int = 500, seed: int = 0) -> list[float]:
    """Durations (s) of up to ``limit`` audio files under ``audio_dir`` (a seeded sample of them when more).

    Read from the file headers (soundfile); files it cannot read are decoded through
    the audio contract.

    Raises:
        ConfigError: ``audio_dir`` is not a folder or holds no readable audio.
    """
    import random

    import soundfile as sf

    from client.audio import load_audio
    from client.errors import AudioError

    root = Path(audio_dir)
    if not root.is_dir():
        raise ConfigError(f"audio_dir={root}: not a folder")
    suffixes = {".wav", ".flac", ".ogg", ".mp3", ".m4a"}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
    if len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    durations = []
    for f in files:
        try:
            info = sf.info(str(f))
            if info.frames > 0 and info.samplerate > 0:
                durations.append(info.frames / info.samplerate)
                continue
        except (RuntimeError, sf.LibsndfileError):
            pass
        try:
            durations.append(load_audio(f).shape[0] / 16_000)
        except AudioError:
            continue
    if not durations:
        raise ConfigError(f"audio_dir={root}: no readable audio file ({', '.join(sorted(suffixes))})")
    return durations


def choose_window(*, window_s: float | None, audio_dir: str | Path | None, sample_rate: int) -> tuple[int, str]:
    """``(W in samples, how it was chosen)`` from ``--window-s`` or the durations of an ``--audio-dir`` sample.

    Raises:
        ConfigError: neither or both given, or an unusable value.
    """
    import math

    if (window_s is None) == (audio_dir is None):
        raise ConfigError("a Hugging Face checkpoint does not fix the window W: give window_s (--window-s SECONDS) "
                          "or audio_dir (--audio-dir DIR, W from the clips' durations), one of them")
    if window_s is not None:
        if not (math.isfinite(window_s) and 0.25 <= window_s <= 30):
            raise ConfigError(f"window_s={window_s}: must be between 0.25 and 30 seconds")
        return int(round(window_s * sample_rate)), f"--window-s {window_s:g}"
    durations = audio_durations(audio_dir)
    w = window_from_durations(durations, sample_rate=sample_rate)
    return w, (f"90th percentile of {len(durations)} clip durations under {Path(audio_dir).resolve()}, "
               f"rounded up to 0.5 s: {w / sample_rate:g} s")


def load_hf_classifier(source: HFCheckpoint, *, window_samples: int, window_source: str, hop_samples: int | None = None):
    """Load ``source`` as the bundle's exported graph.

    Returns:
        ``(WaveformClassifier in eval mode, CheckpointInfo)``.

    Raises:
        CheckpointError: the weights cannot be loaded.
    """
    from transformers import AutoModelForAudioClassification

    from training.model import CheckpointInfo

    try:
        model = AutoModelForAudioClassification.from_pretrained(str(source.path))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{source.name}: cannot load the model weights: {str(exc).splitlines()[0]}") from None
    info = CheckpointInfo(
        labels=source.labels, window_samples=int(window_samples), sample_rate=source.inputs.sample_rate,
        hop_samples=hop_samples, base=source.name, corpus="",
        extra={"hf_checkpoint": str(source.path)},
        normalize=source.inputs.normalize, attention_mask=source.inputs.attention_mask,
        contract_extra=source.contract_extra(window_source=window_source),
    )
    return info.classifier(model.eval()).eval(), info
