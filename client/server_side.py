"""The client's server-side mode: send the clip itself, let the audio model ``ser`` run the audio contract.

``SerClient(url, server_side=True)`` (model ``ser`` by default) sends each clip as
one request: a file's or a ``bytes`` object's encoded bytes (``audio``), or an
array's mono float32 samples with their rate (``pcm`` + ``sample_rate``), and asks
for the timeline. It decodes nothing: the server does, with the same code
(:mod:`client.audio_service`). The answer becomes the same
:class:`~client.results.Prediction` as the client-side path gives: label,
probabilities, per-window probabilities, window offsets and valid samples (from
the timeline's start/end seconds), so directory mode, resume, retries and
:func:`client.timeline.timeline_of` work unchanged.

A clip the server refuses (``INVALID_ARGUMENT``: empty, not audio, silent, NaN,
too long, too large) raises the same :class:`~client.errors.AudioError` subclass,
naming the file, as client-side decoding would; a clip the model's speech gate
finds no speech in raises :class:`~client.errors.NoSpeechError`. With the gate, the
windows it held back (rows of zeros in ``window_scores``) carry NaN probabilities (``timeline_of`` labels them ``no_speech``). A file larger than the model's
``ser.audio.max_bytes`` is refused before it is sent.

:class:`ServerSideMixin` is mixed into the client classes
(:mod:`client.client_base`); it uses their connection, retries and error translation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioSource, to_mono
from .audio_service import (
    HEAD_CATEGORICAL,
    HEAD_PARAMETER,
    INPUT_AUDIO,
    INPUT_PCM,
    INPUT_SAMPLE_RATE,
    INPUT_TIMELINE,
    INPUT_VAD,
    INPUTS,
    OUTPUT_LABEL,
    OUTPUT_NAMES,
    OUTPUT_SCORES,
    OUTPUT_WINDOW_END,
    OUTPUT_WINDOW_SCORES,
    OUTPUT_WINDOW_START,
    OUTPUTS,
    AudioLimits,
    audio_error_from_message,
)
from .contract import string_parameters
from .errors import (
    AudioDecodeError,
    AudioTooLargeError,
    ConfigError,
    ContractError,
    InferenceError,
    SerError,
)
from .results import Prediction


def read_clip(source: AudioSource, *, sample_rate: int | None, name: str, max_bytes: int) -> tuple[bytes | None, np.ndarray | None]:
    """What server-side mode sends for ``source``: ``(encoded bytes, None)`` or ``(None, mono float32 [n])``.

    Raises:
        AudioDecodeError: no such file, a directory, 0 bytes.
        AudioTooLargeError: more than ``max_bytes`` (checked before reading the file).
        ConfigError: an array without ``sample_rate``, or of a shape or dtype that is not audio.
    """
    from .audio import array_to_float  # the client's own scaling of integer PCM

    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise ConfigError(f"{name}: a numpy array needs sample_rate= (Hz)")
        return None, np.ascontiguousarray(to_mono(array_to_float(source, name)), dtype=np.float32)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise AudioDecodeError(name, "no such file")
        if path.is_dir():
            raise AudioDecodeError(name, "is a directory")
        size = path.stat().st_size
        if size > max_bytes:
            raise AudioTooLargeError(name, f"{size} bytes > the server's ser.audio.max_bytes={max_bytes}")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise AudioTooLargeError(name, f"{len(data)} bytes > the server's ser.audio.max_bytes={max_bytes}")
    else:
        raise ConfigError(f"{name}: expected a path, bytes or a numpy array, got {type(source).__name__}")
    if not data:
        raise AudioDecodeError(name, "0 bytes")
    return data, None


class ServerSideMixin:
    """Requests to, and answers of, a server-side audio model (mixed into the client classes)."""

    server_side: bool
    audio_limits: AudioLimits | None

    def _check_audio_model(self) -> None:
        """On open: the model takes clips (``audio``/``pcm``...) and answers a categorical head."""
        inputs = {t.get("name") for t in self.config.get("input", [])}
        outputs = {t.get("name") for t in self.config.get("output", [])}
        # ``vad`` is optional here: this client never sends it, and models written before it lack it
        missing = [n for n, _, _ in INPUTS if n not in inputs and n != INPUT_VAD] + [n for n, _, _ in OUTPUTS if n not in outputs]
        if missing:
            raise ContractError(
                f"model {self.model!r} at {self.url} is not a server-side audio model: it lacks tensors {missing} "
                "(server_side=True needs the audio model, e.g. 'ser', written by `ser repository --audio-model`)"
            )
        params = string_parameters(self.config)
        head = params.get(HEAD_PARAMETER, "")
        if head != HEAD_CATEGORICAL:
            raise ContractError(f"model {self.model!r} at {self.url}: {HEAD_PARAMETER}={head!r}; this client reads {HEAD_CATEGORICAL!r} answers")
        try:
            self.audio_limits = AudioLimits.from_parameters(params, model=self.model)
        except ConfigError as exc:
            raise ContractError(f"{self.url}: {exc}") from None
        self.max_batch_size = 0

    def _clip_request(self, source: AudioSource, sample_rate: int | None, name: str) -> tuple[list, list]:
        """``(inputs, outputs)`` of one clip's request."""
        assert self.audio_limits is not None
        if self.protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc
        data, pcm = read_clip(source, sample_rate=sample_rate, name=name, max_bytes=self.audio_limits.max_bytes)
        if data is not None:
            clip = tc.InferInput(INPUT_AUDIO, [1], "BYTES")
            clip.set_data_from_numpy(np.array([data], dtype=np.object_))
            inputs = [clip]
        else:
            clip = tc.InferInput(INPUT_PCM, [int(pcm.shape[0])], "FP32")
            clip.set_data_from_numpy(pcm)
            rate = tc.InferInput(INPUT_SAMPLE_RATE, [1], "INT32")
            rate.set_data_from_numpy(np.array([int(sample_rate)], dtype=np.int32))
            inputs = [clip, rate]
        flag = tc.InferInput(INPUT_TIMELINE, [1], "BOOL")
        flag.set_data_from_numpy(np.array([True]))
        outputs = [tc.InferRequestedOutput(n) for n, _, _ in OUTPUTS]
        return [*inputs, flag], outputs

    def _clip_prediction(self, result: Any, source: AudioSource, name: str, *, top_k: int, t0: float, t_pre: float):
        """The :class:`~client.results.Prediction` of one answer."""
        assert self.contract is not None
        names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in result.as_numpy(OUTPUT_NAMES).reshape(-1)]
        if tuple(names) != self.contract.labels:
            raise ContractError(f"model {self.model!r} at {self.url}: answered scores for {names}, its config says {list(self.contract.labels)}")
        scores = result.as_numpy(OUTPUT_SCORES).astype(np.float32).reshape(-1)
        label = result.as_numpy(OUTPUT_LABEL).reshape(-1)[0]
        label = label.decode("utf-8") if isinstance(label, bytes) else str(label)
        rate = self.contract.sample_rate
        start = np.rint(result.as_numpy(OUTPUT_WINDOW_START).reshape(-1) * rate).astype(np.int64)
        end = np.rint(result.as_numpy(OUTPUT_WINDOW_END).reshape(-1) * rate).astype(np.int64)
        windows = result.as_numpy(OUTPUT_WINDOW_SCORES).astype(np.float32).reshape(start.shape[0], len(names))
        windows[~windows.any(axis=1)] = np.nan  # a window the speech gate held back: zeros on the wire, no scores here
        order = np.argsort(-scores, kind="stable")[:top_k] if top_k else []
        now = time.perf_counter()
        return Prediction(
            source=name, label=label, confidence=float(scores[names.index(label)]),
            probabilities={n: float(v) for n, v in zip(names, scores, strict=True)},
            window_probabilities=windows, latency_s=now - t0, window_offsets=start, window_num_samples=end - start,
            top_k=tuple((names[int(i)], float(scores[int(i)])) for i in order),
            preprocess_s=t_pre - t0, infer_s=now - t_pre,
        )

    def _typed(self, exc: SerError, name: str) -> SerError:
        """A refused clip's InferenceError as the AudioError the client's own decoding raises."""
        if isinstance(exc, InferenceError):
            mapped = audio_error_from_message(str(exc), source=name)
            if mapped is not None:
                return mapped
        return exc

    @staticmethod
    def _clip_name(source: AudioSource, name: str | None) -> str:
        if name:
            return name
        if isinstance(source, (str, Path)):
            return str(source)
        return "<array>" if isinstance(source, np.ndarray) else "<bytes>"

    def _classify_server_side(self, source: AudioSource, *, sample_rate: int | None, name: str | None, top_k: int):
        """SerClient.classify in server-side mode (one request, retried like every call)."""
        label = self._clip_name(source, name)
        t0 = time.perf_counter()
        inputs, outputs = self._clip_request(source, sample_rate, label)
        t_pre = time.perf_counter()
        try:
            result = self._call("infer", "infer", self.model, inputs, model_version=self.model_version,
                                outputs=outputs, **self._kw())
        except SerError as exc:
            raise self._typed(exc, label) from None
        return self._clip_prediction(result, source, label, top_k=top_k, t0=t0, t_pre=t_pre)

    async def _aclassify_server_side(self, source: AudioSource, *, sample_rate: int | None, name: str | None, top_k: int):
        """AsyncSerClient.classify in server-side mode."""
        import asyncio

        label = self._clip_name(source, name)
        t0 = time.perf_counter()
        inputs, outputs = await asyncio.to_thread(self._clip_request, source, sample_rate, label)
        t_pre = time.perf_counter()
        self._require_open()
        try:
            result = await self._call("infer", "infer", self.model, inputs, model_version=self.model_version,
                                      outputs=outputs, **self._kw())
        except SerError as exc:
            raise self._typed(exc, label) from None
        return self._clip_prediction(result, source, label, top_k=top_k, t0=t0, t_pre=t_pre)


__all__ = ["ServerSideMixin", "read_clip"]
