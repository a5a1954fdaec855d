"""The server-side audio model ``ser``: a Triton python-backend model, one clip in, emotions out.

The repository writer copies this file to ``<repo>/ser/1/model.py`` and the client
modules it imports (:mod:`client.audio_service` and what that imports) to
``<repo>/ser/1/client/``, from the installed package, with their sha256 in the
config; with the speech gate (``ser.audio.vad=silero``) also silero-vad's ONNX file
to ``<repo>/ser/1/silero_vad.onnx``. The folder is put first on ``sys.path`` below, so the server runs exactly
the packaged audio contract, also where the client is installed (this host) or
not (the NGC container).

Per request (``execute``):

1. read ``audio`` (encoded bytes) or ``pcm`` + ``sample_rate``, ``timeline`` and ``vad``;
2. decode, mix, resample, refuse and window with :mod:`client.audio` (through
   :func:`client.audio_service.clip_from_bytes` / ``clip_from_pcm``);
3. with the speech gate, run silero-vad once over the clip and keep the windows with enough
   speech (:func:`client.audio_service.speech_windows`; none: ``NoSpeechError``);
4. send the windows to the window model (``ser_int8``, ``ser_fp16``...) through
   Triton's BLS (``pb_utils.InferenceRequest.async_exec``), in requests of at most its
   ``max_batch_size``, all in flight together; the window model's dynamic batcher
   merges them with the windows of other clips in flight;
5. aggregate and build the timeline with :func:`client.audio_service.answer`.

The detector runs here, not as a model of its own, for the streaming model's reason
(``stream_model.py``): it is recurrent over the clip's 32 ms frames (128-float state,
64 samples of context), so a model of its own would cost a BLS round trip per frame or
a second copy of the clip's samples per request; here it reads the samples the clip
already holds, on one ONNX Runtime thread per instance.

BLS rather than an ensemble: an ensemble passes tensors of fixed meaning between
steps, one step's output batch becoming the next step's input, so a variable number
of windows per clip would arrive at the window model as one request of k rows
(limited by its ``max_batch_size``) and could not be split, retried on another
variant or re-joined per clip; BLS sends any number of requests per clip and
aggregates them in the same code.

A refused clip gets ``INVALID_ARGUMENT`` naming the reason
(:func:`client.audio_service.error_message`); a window model that is not ready,
``UNAVAILABLE``; anything else, ``INTERNAL`` with one line. No exception leaves
``execute``: the stub never dies of a request.

The window model is the first ready one of ``ser.audio.inner_models`` (written in
preference order: fp16/fp32 before int8 for GPU nodes, int8 first on CPU nodes),
so one repository serves a CPU node that loads ``ser_int8`` and a GPU node that
loads ``ser_fp16``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if (_HERE / "client").is_dir() and sys.path[:1] != [str(_HERE)]:
    sys.path.insert(0, str(_HERE))  # the packaged audio contract wins over any installed one

import numpy as np  # noqa: E402

from client.audio_service import (  # noqa: E402
    INPUT_AUDIO,
    INPUT_PCM,
    INPUT_SAMPLE_RATE,
    INPUT_TIMELINE,
    INPUT_VAD,
    AudioLimits,
    InnerModel,
    SpeechGate,
    answer,
    clip_from_bytes,
    clip_from_pcm,
    error_message,
    inner_models_from_parameters,
    speech_windows,
)
from client.contract import INPUT_NUM_SAMPLES, INPUT_WAVEFORM, OUTPUT_PROBABILITIES, ModelContract  # noqa: E402
from client.errors import AudioError, ConfigError  # noqa: E402

try:  # only inside tritonserver's python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # tooling and tests outside the server
    pb_utils = None


class BadRequest(ValueError):
    """The request's tensors are not one clip (both or neither of audio/pcm, no rate...)."""


class InnerModelUnavailable(RuntimeError):
    """No window model of ``ser.audio.inner_models`` is ready, or the chosen one went away."""


def _bool(value: np.ndarray | None) -> bool | None:
    return bool(np.asarray(value).reshape(-1)[0]) if value is not None and np.asarray(value).size else None


def read_request(arrays: dict[str, np.ndarray | None]) -> tuple[str, object, int | None, bool]:
    """Which clip a request carries: ``(kind, data, sample_rate, timeline)`` (``vad``: :func:`read_vad`).

    Args:
        arrays: ``{input name: numpy array or None}`` of the inputs.

    Returns:
        ``("audio", bytes, None, timeline)`` or ``("pcm", float32 [n], rate, timeline)``.

    Raises:
        BadRequest: naming what is missing or extra.
    """
    audio, pcm, rate, flag = (arrays.get(k) for k in (INPUT_AUDIO, INPUT_PCM, INPUT_SAMPLE_RATE, INPUT_TIMELINE))
    timeline = bool(_bool(flag))
    if (audio is None) == (pcm is None):
        raise BadRequest(f"send exactly one of {INPUT_AUDIO!r} (encoded file) or {INPUT_PCM!r} (+ {INPUT_SAMPLE_RATE!r})")
    if audio is not None:
        if rate is not None:
            raise BadRequest(f"{INPUT_SAMPLE_RATE!r} goes with {INPUT_PCM!r}; an encoded file carries its own rate")
        items = np.asarray(audio, dtype=np.object_).reshape(-1)
        if items.size != 1:
            raise BadRequest(f"{INPUT_AUDIO!r} holds {items.size} elements: one clip per request")
        data = items[0]
        return INPUT_AUDIO, bytes(data) if not isinstance(data, str) else data.encode("latin-1"), None, timeline
    if rate is None or np.asarray(rate).size != 1:
        raise BadRequest(f"{INPUT_PCM!r} needs {INPUT_SAMPLE_RATE!r} (one INT32, Hz)")
    return INPUT_PCM, np.asarray(pcm, dtype=np.float32).reshape(-1), int(np.asarray(rate).reshape(-1)[0]), timeline


def read_vad(arrays: dict[str, np.ndarray | None], *, gated: bool, model: str) -> bool:
    """Whether this request's clip goes through the speech gate: the model's, unless ``vad`` says otherwise.

    Raises:
        BadRequest: ``vad`` true on a model written without the gate.
    """
    wants = _bool(arrays.get(INPUT_VAD))
    if wants and not gated:
        raise BadRequest(f"{INPUT_VAD}=true, but model {model!r} was written without a voice-activity gate "
                         "(ser repository --audio-model --audio-vad)")
    return gated if wants is None else wants


def chunks(count: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` cutting ``count`` windows into requests of at most ``size``."""
    return [(s, min(s + size, count)) for s in range(0, count, size)]


def read_config(args: dict[str, str], *, default_name: str) -> tuple[str, dict[str, str]]:
    """``(model name, {parameter: string value})`` of the config Triton hands ``initialize``."""
    config = json.loads(args["model_config"])
    name = config.get("name", args.get("model_name", default_name))
    return name, {k: (v.get("string_value", "") if isinstance(v, dict) else str(v))
                  for k, v in (config.get("parameters") or {}).items()}


class WindowModels:
    """The window models of ``<prefix>inner_models`` reached through BLS: the first ready one classifies.

    Shared with the streaming model (``ser-stream``), which packages this file beside its own.

    Args:
        inner: window models in preference order.
    """

    def __init__(self, inner) -> None:
        self.inner = tuple(inner)
        self._chosen: InnerModel | None = None
        self._cpu = {}
        if hasattr(pb_utils, "PreferredMemory"):  # window models on a GPU hand their outputs back in host memory
            self._cpu = {"preferred_memory": pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)}

    def chosen(self) -> InnerModel:
        """The first ready window model (remembered until one fails as gone).

        Raises:
            InnerModelUnavailable: none is ready.
        """
        if self._chosen is None:
            for candidate in self.inner:
                if pb_utils.is_model_ready(candidate.name):
                    self._chosen = candidate
                    break
            else:
                raise InnerModelUnavailable(f"none of the window models {[m.name for m in self.inner]} is ready")
        return self._chosen

    async def classify(self, waveforms: np.ndarray, num_samples: np.ndarray) -> np.ndarray:
        """``[k, C]`` probabilities of ``[k, W]`` windows, through BLS requests of <= max_batch_size, all in flight."""
        import asyncio

        model = self.chosen()
        requests = [
            pb_utils.InferenceRequest(
                model_name=model.name,
                inputs=[pb_utils.Tensor(INPUT_WAVEFORM, np.ascontiguousarray(waveforms[a:b])),
                        pb_utils.Tensor(INPUT_NUM_SAMPLES, np.ascontiguousarray(num_samples[a:b].reshape(-1, 1)))],
                requested_output_names=[OUTPUT_PROBABILITIES],
                **self._cpu,
            )
            for a, b in chunks(waveforms.shape[0], model.max_batch_size)
        ]
        responses = await asyncio.gather(*(r.async_exec() for r in requests))
        parts = []
        for response in responses:
            if response.has_error():
                text = response.error().message()
                if "not found" in text or "not ready" in text or "unknown model" in text.lower():
                    self._chosen = None  # choose again next time (a reload, another variant)
                    raise InnerModelUnavailable(f"window model {model.name!r}: {text}")
                raise RuntimeError(f"window model {model.name!r} failed: {text}")
            parts.append(pb_utils.get_output_tensor_by_name(response, OUTPUT_PROBABILITIES).as_numpy())
        return np.concatenate(parts).astype(np.float32, copy=False)


class TritonPythonModel:
    """The python-backend entry points of ``ser``."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read the contract, limits and window models from the config.

        Raises:
            ConfigError, ContractError: the config lacks or garbles a parameter (the model fails to load).
        """
        self.name, params = read_config(args, default_name="ser")
        self.contract = ModelContract.from_parameters(params, model=self.name)
        self.limits = AudioLimits.from_parameters(params, model=self.name)
        self.windows = WindowModels(inner_models_from_parameters(params, model=self.name))
        self.gate = SpeechGate.from_parameters(params, model=self.name)
        self.gate.check_rate(self.contract.sample_rate)
        self.vad = None
        if self.gate.on:
            from client.vad import VAD_FILENAME, open_vad

            self.vad = open_vad(_HERE / VAD_FILENAME)  # one session per instance, one thread
        import client.audio as contract_code

        pb_utils.Logger.log_info(f"model {self.name!r}: audio contract from {Path(contract_code.__file__).parent}, "
                                 f"speech gate {self.gate.vad}")

    async def _one(self, request):
        get = pb_utils.get_input_tensor_by_name
        try:
            arrays = {}
            for name in (INPUT_AUDIO, INPUT_PCM, INPUT_SAMPLE_RATE, INPUT_TIMELINE, INPUT_VAD):
                tensor = get(request, name)
                arrays[name] = None if tensor is None else tensor.as_numpy()
            kind, data, rate, timeline = read_request(arrays)
            gated = read_vad(arrays, gated=self.vad is not None, model=self.name)
            if kind == INPUT_AUDIO:
                clip = clip_from_bytes(data, contract=self.contract, limits=self.limits)
            else:
                clip = clip_from_pcm(data, rate, contract=self.contract, limits=self.limits)
            speech = speech_windows(clip, self.vad, self.gate, name=kind) if gated else None
            keep = slice(None) if speech is None else speech  # the gate's windows only
            probabilities = await self.windows.classify(clip.windows.waveforms[keep], clip.windows.num_samples[keep])
            result = answer(clip, probabilities, contract=self.contract, timeline=timeline, speech=speech)
            return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in result.tensors().items()])
        except (AudioError, ConfigError, BadRequest) as exc:
            code, text = pb_utils.TritonError.INVALID_ARG, error_message(exc)
        except InnerModelUnavailable as exc:
            code, text = pb_utils.TritonError.UNAVAILABLE, f"model {self.name!r}: {exc}"
        except Exception as exc:  # noqa: BLE001 - one line to the caller, the stub lives on
            code, text = pb_utils.TritonError.INTERNAL, f"model {self.name!r}: {error_message(exc)}"
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(text, code))

    async def execute(self, requests: list) -> list:
        """One response per request (normally one request per call: ``max_batch_size`` is 0)."""
        return [await self._one(request) for request in requests]

    def finalize(self) -> None:
        """Nothing to release."""
