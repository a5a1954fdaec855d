"""Which files a bulk job scores: local folders and globs, or any filesystem pyarrow or fsspec reads.

A source is a local folder (searched recursively), a local glob (``/data/**/*.wav``), a local
file, or a URI (``s3://bucket/prefix/``, ``gs://bucket/prefix/``, ``file:///...``, or any scheme
an installed fsspec implementation registers), listed through ``pyarrow.fs`` where it knows the
scheme and through fsspec otherwise. Audio is told from other files by its suffix
(:data:`client.audio.AUDIO_SUFFIXES`), as in ``ser predict``. Every file is named by one
string, its *source* (a local path, or the URI), which is the key of its output row.

pyarrow and fsspec are imported inside the functions (the ``ray`` extra installs them).
"""

from __future__ import annotations

import glob
import zlib
from pathlib import Path
from typing import Iterable

from client.audio import AUDIO_SUFFIXES, list_audio_files
from client.errors import ConfigError


def is_uri(source: str) -> bool:
    """Whether ``source`` names a filesystem by scheme (``s3://``, ``gs://``, ``file://``...)."""
    return "://" in source


def list_sources(inputs: Iterable[str]) -> list[str]:
    """Every audio file under ``inputs`` (folders, globs, files, URIs), each once, sorted.

    Raises:
        ConfigError: an input that names nothing (a missing local path, a glob or a prefix
            without audio files), or a URI scheme no installed filesystem reads.
    """
    found: list[str] = []
    for item in inputs:
        text = str(item)
        files = _list_uri(text) if is_uri(text) else _list_local(text)
        if not files:
            raise ConfigError(f"{text}: no audio files there (looked for {', '.join(AUDIO_SUFFIXES)})")
        found.extend(files)
    return sorted(dict.fromkeys(found))


def _list_local(text: str) -> list[str]:
    path = Path(text)
    if any(ch in text for ch in "*?["):
        return [p for p in glob.glob(text, recursive=True) if Path(p).is_file() and Path(p).suffix.lower() in AUDIO_SUFFIXES]
    if path.is_dir():
        return [str(p) for p in list_audio_files(path)]
    if path.is_file():
        return [str(path)]  # named as given: its decoding judges it
    raise ConfigError(f"{text}: no such file or folder")


def filesystem_for(uri: str):
    """``(pyarrow filesystem, path inside it)`` for ``uri``: pyarrow's own, else fsspec's behind pyarrow's interface."""
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow.ArrowInvalid is a ValueError: a scheme pyarrow does not know
        arrow_error = exc
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{uri}: no filesystem reads this scheme ({arrow_error}; fsspec: {exc})") from None
    return PyFileSystem(FSSpecHandler(fs)), path


def _list_uri(uri: str) -> list[str]:
    from pyarrow import fs as pafs

    filesystem, path = filesystem_for(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"{uri}: no such object or prefix")
    if info.type == pafs.FileType.File:
        return [uri]
    entries = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return [f"{scheme}://{e.path}" for e in entries
            if e.type == pafs.FileType.File and Path(e.path).suffix.lower() in AUDIO_SUFFIXES]


def read_source(source: str) -> bytes | str:
    """What :func:`client.audio.load_audio` decodes for ``source``: a local path as is, a URI's bytes.

    Raises:
        OSError: the object cannot be read (the caller turns it into the file's error row).
    """
    if not is_uri(source):
        return source
    filesystem, path = filesystem_for(source)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def in_shard(source: str, *, index: int, count: int) -> bool:
    """Whether ``source`` belongs to shard ``index`` of ``count`` (CRC-32 of its name: the same on every pod)."""
    return zlib.crc32(source.encode()) % count == index


def parse_shard(text: str) -> tuple[int, int]:
    """``(index, count)`` from ``"INDEX/COUNT"`` (``0 <= INDEX < COUNT``).

    Raises:
        ConfigError: anything else, naming the text.
    """
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit() or not 0 <= int(index) < int(count):
        raise ConfigError(f"shard={text!r}: expected INDEX/COUNT with 0 <= INDEX < COUNT (e.g. 3/16)")
    return int(index), int(count)


__all__ = ["filesystem_for", "in_shard", "is_uri", "list_sources", "parse_shard", "read_source"]
