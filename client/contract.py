"""The model's interface: tensor names and the contract a repository carries.

One source of truth for what the exported ONNX graph, the Triton config and the
client agree on (docs/serving-and-repositories.md, "The model's interface"):

* inputs  ``waveform``  FP32 ``[W]`` and ``num_samples`` INT64 ``[1]`` (batch implicit);
* outputs ``logits`` FP32 ``[C]`` and ``probabilities`` FP32 ``[C]``.

:class:`ModelContract` is what a client needs to turn audio into requests and
responses into labels. The repository writer stores it in the config's
``parameters`` (string map); the client reads it back from the server.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .errors import ConfigError, ContractError

INPUT_WAVEFORM = "waveform"
INPUT_NUM_SAMPLES = "num_samples"
OUTPUT_LOGITS = "logits"
OUTPUT_PROBABILITIES = "probabilities"
INPUT_NAMES = (INPUT_WAVEFORM, INPUT_NUM_SAMPLES)
OUTPUT_NAMES = (OUTPUT_LOGITS, OUTPUT_PROBABILITIES)

CONTRACT_VERSION = "1"
#: Prefix of every config parameter the bundle writes.
PARAM_PREFIX = "ser."
LABELS_FILENAME = "labels.txt"
DEFAULT_SAMPLE_RATE = 16_000


def default_hop_samples(window_samples: int) -> int:
    """The hop between window starts where none is given: half a window (``window_samples // 2``), in samples."""
    return window_samples // 2


@dataclass(frozen=True)
class ModelContract:
    """What a client must know about a served model.

    Attributes:
        labels: class names in logit order (C entries).
        sample_rate: Hz the model expects (16 kHz for wav2vec2).
        window_samples: W, samples per window at ``sample_rate``.
        hop_samples: step between consecutive windows of long audio (samples);
            ``hop_samples < window_samples`` gives overlapping windows.
        variant: ``fp32``, ``int8``, ``fp16``, ... (informational).
        source: checkpoint path or hub name the model came from (informational).
        extra: further string parameters (recipe digest, corpus...).
    """

    labels: tuple[str, ...]
    window_samples: int
    sample_rate: int = DEFAULT_SAMPLE_RATE
    hop_samples: int | None = None
    variant: str = "fp32"
    source: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(self.labels) < (1 if self.regression else 2):
            raise ConfigError(f"labels={list(self.labels)!r}: a classifier needs at least 2 labels")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels={list(self.labels)!r}: labels must be unique")
        if any((not lab) or ("\n" in lab) for lab in self.labels):
            raise ConfigError(f"labels={list(self.labels)!r}: labels must be non-empty single-line strings")
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate={self.sample_rate}: must be a positive number of Hz")
        if self.window_samples <= 0:
            raise ConfigError(f"window_samples={self.window_samples}: must be positive")
        hop = default_hop_samples(self.window_samples) if self.hop_samples is None else self.hop_samples
        if not 0 < hop <= self.window_samples:
            raise ConfigError(
                f"hop_samples={hop}: must be in (0, window_samples={self.window_samples}]"
            )
        object.__setattr__(self, "hop_samples", int(hop))

    @property
    def regression(self) -> bool:
        """Whether the model has a regression head (``extra["problem_type"] == "regression"``).

        Its ``probabilities`` output then carries one named value per label (e.g.
        arousal, dominance, valence), not a distribution.
        """
        return dict(self.extra).get("problem_type") == "regression"

    @property
    def num_labels(self) -> int:
        """C, the number of classes."""
        return len(self.labels)

    @property
    def window_seconds(self) -> float:
        """Window length in seconds."""
        return self.window_samples / self.sample_rate

    def to_parameters(self) -> dict[str, str]:
        """Flatten to Triton config ``parameters`` (all values are strings)."""
        params = {
            "contract_version": CONTRACT_VERSION,
            "labels": json.dumps(list(self.labels)),
            "sample_rate": str(self.sample_rate),
            "window_samples": str(self.window_samples),
            "hop_samples": str(self.hop_samples),
            "variant": self.variant,
            "source": self.source,
        }
        params.update({k: str(v) for k, v in self.extra.items()})
        return {PARAM_PREFIX + k: v for k, v in params.items()}

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], *, model: str = "model") -> "ModelContract":
        """Rebuild from config ``parameters`` as :meth:`to_parameters` wrote them.

        Raises:
            ContractError: a required key is missing or malformed; names ``model``.
        """
        p = {k[len(PARAM_PREFIX):]: v for k, v in params.items() if k.startswith(PARAM_PREFIX)}
        missing = [k for k in ("labels", "sample_rate", "window_samples") if k not in p]
        if missing:
            raise ContractError(
                f"model {model!r} lacks config parameters {[PARAM_PREFIX + k for k in missing]}: "
                "it was not written by this bundle's repository writer"
            )
        version = p.get("contract_version", CONTRACT_VERSION)
        if version != CONTRACT_VERSION:
            raise ContractError(
                f"model {model!r} has contract_version {version!r}; this client speaks {CONTRACT_VERSION!r}"
            )
        try:
            labels = json.loads(p["labels"])
            known = {"contract_version", "labels", "sample_rate", "window_samples", "hop_samples", "variant", "source"}
            return cls(
                labels=tuple(str(x) for x in labels),
                sample_rate=int(p["sample_rate"]),
                window_samples=int(p["window_samples"]),
                hop_samples=int(p["hop_samples"]) if "hop_samples" in p else None,
                variant=p.get("variant", ""),
                source=p.get("source", ""),
                extra={k: v for k, v in p.items() if k not in known},
            )
        except (ValueError, TypeError, ConfigError) as exc:
            raise ContractError(f"model {model!r} has malformed contract parameters: {exc}") from None

    def to_json(self) -> dict:
        """A JSON-ready dict (for recipes and reports)."""
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "ModelContract":
        """Inverse of :meth:`to_json`."""
        return cls(**{**d, "labels": tuple(d["labels"]), "extra": dict(d.get("extra", {}))})


def string_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """``{key: string_value}`` of a model config's ``parameters`` (gRPC or HTTP JSON form)."""
    out = {}
    for key, value in (config.get("parameters") or {}).items():
        if isinstance(value, Mapping):
            out[key] = str(value.get("string_value", value.get("stringValue", "")))
        else:
            out[key] = str(value)
    return out
