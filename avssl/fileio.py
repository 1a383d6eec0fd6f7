"""Atomic file writes: a temporary file in the target's folder, fsync, then a rename over the target.

Temporary names are unique (``mkstemp``), so two writers of the same file (a retried job-array task while the
first still runs, processes in other PID namespaces) never share one; the file that lands is whole either way.
Files get the permissions the process's umask gives new files (``mkstemp`` alone would leave them 0600, unreadable
to the other accounts and jobs of a shared cluster).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "file_kind", "json_safe", "publish", "temp_path", "to_json", "umask", "write_json"]


def umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_path(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new, empty, uniquely named file beside ``path`` (``.NAME.XXXXXXXX.tmp``) for a writer that opens files by
    name; :func:`publish` puts it in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``tmp`` the umask's permissions and rename it over ``path``."""
    os.chmod(tmp, 0o666 & ~umask())
    os.replace(tmp, path)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces ``path`` (readers never see a partial
    file), on error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_MAGIC = ((b"PK\x03\x04", 0, "zip"), (b"\x80", 0, "pickle"), (b"ftyp", 4, "an MP4/MOV video"),
          (b"\x1aE\xdf\xa3", 0, "a Matroska/WebM video"), (b"OggS", 0, "an Ogg file"), (b"RIFF", 0, "a RIFF (WAV/AVI) file"),
          (b"ID3", 0, "an MP3 file"), (b"fLaC", 0, "a FLAC file"), (b"\xff\xd8\xff", 0, "a JPEG image"),
          (b"\x89PNG", 0, "a PNG image"), (b"GIF8", 0, "a GIF image"), (b"\x1f\x8b", 0, "a gzip file"),
          (b"ustar", 257, "a tar file"), (b"%PDF", 0, "a PDF"))


def file_kind(path: str | os.PathLike) -> str | None:
    """What a file's first bytes say it is: ``"zip"`` (PyTorch's format since 1.6), ``"pickle"`` (its legacy format),
    ``"empty"``, ``"an HTML page"`` (a download that returned a web page), ``"text"``, a media or archive type in words
    (``"an MP4/MOV video"``), or None when they say nothing known."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if not head:
        return "empty"
    for magic, at, kind in _MAGIC:
        if head[at : at + len(magic)] == magic:
            return kind
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text[:200]:
        return "an HTML page"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return None


def json_safe(obj: Any) -> Any:
    """``obj`` with every float that JSON cannot hold (NaN, infinities) as None, in dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(obj)``: always valid JSON (no ``NaN``)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """``obj`` as valid JSON (:func:`to_json`), written atomically."""
    with atomic_write(path) as f:
        f.write(to_json(obj, indent=indent))
