"""Whole encoded clips for load tests that send audio, not windows (client-side vs server-side paths).

The same three sources as :mod:`loadtest.payload` (:class:`~loadtest.payload.AudioSourceConfig`):
a folder's files and a manifest's partition are sent as the bytes on disk; generated speech
(:mod:`training.synth_voice`, seeded) is encoded as 16-bit WAV in memory. Both load-test paths send
the very same bytes: the client-side path decodes them in the Locust process, the server-side
path lets the audio model ``ser`` do it.

This module imports neither locust nor gevent.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from loadtest.payload import AudioSourceConfig, folder_files, generated_clips, manifest_files
from training.errors import CorpusError


@dataclass(frozen=True)
class ClipPool:
    """Encoded clips to send.

    Attributes:
        clips: ``(name, encoded bytes)`` per clip.
        source: description of the audio source.
    """

    clips: tuple[tuple[str, bytes], ...]
    source: str

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def total_bytes(self) -> int:
        """Bytes of all clips together."""
        return sum(len(data) for _, data in self.clips)


def build_clip_pool(source: AudioSourceConfig) -> ClipPool:
    """The source's clips as encoded bytes.

    Raises:
        CorpusError: no usable file (missing folder, empty partition, only empty files).
    """
    import soundfile as sf

    clips: list[tuple[str, bytes]] = []
    if source.kind == "generated":
        for name, y, sr in generated_clips(source.generated_clips, source.seed):
            buf = io.BytesIO()
            sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
            clips.append((name, buf.getvalue()))
    else:
        files = (folder_files(source.audio_dir, source.max_clips) if source.kind == "folder"
                 else manifest_files(source.manifest, source.partition, source.max_clips))
        clips = [(str(p), Path(p).read_bytes()) for p in files if Path(p).is_file() and Path(p).stat().st_size > 0]
        if not clips:
            raise CorpusError(f"{source.describe()}: none of {len(files)} file(s) holds any bytes")
    return ClipPool(clips=tuple(clips), source=source.describe())
