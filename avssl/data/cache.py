"""Decode once: the frames and audio of whole videos, kept on disk for training on small collections.

Training on a few hundred short clips spends most of its time in the decoder, cutting the same files again
every epoch. :class:`ClipCache` decodes each video once, whole, at the clip spec's frame rate and decode
size (uint8 frames) and sample rate (float32 mono audio), stores the two arrays as ``.npy`` files in a folder,
and cuts clips from them afterwards: the clip's start and audio offset are still drawn fresh every epoch, and
the crops, flips, jitter and masks are applied as usual after it. Files are written atomically, so several
loader workers can fill the cache at once; a file changed on disk (size, time) or another clip spec gets
new entries. A clip's start falls on the cached frames' grid (multiples of ``1 / fps``).

Size per clip: ``duration x fps x height x width x 3`` bytes of frames plus ``4 x duration x sample_rate``
bytes of audio; for the localization config's 3 s clips at 8 fps and 96x128 pixels, 0.9 MB of frames and
0.2 MB of audio. At Kinetics scale (hundreds of thousands of 10 s videos) that is hundreds of GB, more than
re-encoding for fast decoding costs (``avssl data reencode``): the cache is for small collections.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .clips import ClipConfig
from .decode import Clip, DecodeError, decode_audio, decode_frames

__all__ = ["ClipCache", "cache_bytes_per_second", "default_cache_dir"]

_VERSION = 1


def cache_bytes_per_second(clip: ClipConfig, height: int, width: int) -> int:
    """Bytes the cache holds per second of video (frames at the decode size, float32 audio)."""
    return int(clip.fps * height * width * 3 + (4 * clip.sample_rate if clip.audio_duration else 0))


def default_cache_dir(manifest: str | os.PathLike) -> str:
    """Where a manifest's videos are kept decoded unless a config says otherwise: ``<manifest>.cache/`` beside
    it, so later runs on the same manifest reuse it."""
    return str(Path(manifest).with_suffix("")) + ".cache"


def _save(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ClipCache:
    """Whole decoded videos in ``folder``; :meth:`clip` cuts a clip as :func:`~avssl.data.decode.decode_clip`
    would (edge frames repeated and silence outside the media, counted on the clip)."""

    def __init__(self, folder: str | os.PathLike, clip: ClipConfig,
                 missing_audio: Literal["error", "silence"] = "error") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spec, self.missing_audio = clip, missing_audio
        self._keys: dict[tuple, str] = {}  # (path, size, mtime) -> key
        self._heads: dict[Path, tuple[int, tuple[int, ...], np.dtype]] = {}  # .npy file -> data offset, shape, dtype

    def _key(self, entry: dict[str, Any]) -> str:
        ident = (entry["path"], entry.get("size_bytes"), entry.get("mtime"))
        if ident not in self._keys:
            c = self.spec
            facts = [os.path.abspath(entry["path"]), entry.get("size_bytes"), entry.get("mtime"), c.fps, c.size,
                     c.sample_rate if c.audio_duration else None, _VERSION]
            self._keys[ident] = hashlib.sha1(json.dumps(facts).encode()).hexdigest()[:20]
        return self._keys[ident]

    def _build(self, entry: dict[str, Any], frames_path: Path, audio_path: Path) -> None:
        c, path = self.spec, entry["path"]
        duration = float(entry["duration"])
        n = max(1, math.floor(duration * c.fps + 1e-6))
        _save(frames_path, decode_frames(path, np.arange(n) / c.fps, c.size))
        if c.audio_duration:
            if entry.get("audio"):
                wave = decode_audio(path, 0.0, duration, c.sample_rate).waveform
            elif self.missing_audio == "silence":
                wave = np.zeros(0, np.float32)
            else:
                raise DecodeError(path, "no audio stream")
            _save(audio_path, wave.astype(np.float32))

    def _stored(self, entry: dict[str, Any]) -> tuple[Path, Path | None]:
        """The entry's frames and audio files (audio None when the spec has no audio), built on first use."""
        key = self._key(entry)
        frames_path, audio_path = self.folder / f"{key}.frames.npy", self.folder / f"{key}.audio.npy"
        want_audio = bool(self.spec.audio_duration)
        if frames_path not in self._heads and (
                not frames_path.exists() or (want_audio and not audio_path.exists())):
            self._build(entry, frames_path, audio_path)
        return frames_path, audio_path if want_audio else None

    def load(self, entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """(frames ``(N, H, W, 3)`` uint8 at ``k / fps``, audio from 0 s or None), memory-mapped; decoded and
        stored on first use. Raises DecodeError."""
        frames_path, audio_path = self._stored(entry)
        return np.load(frames_path, mmap_mode="r"), np.load(audio_path, mmap_mode="r") if audio_path else None

    def _head(self, path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
        if path not in self._heads:
            with open(path, "rb") as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
                self._heads[path] = (f.tell(), shape, dtype)
        return self._heads[path]

    def _rows(self, path: Path, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (``0 <= lo < hi <= len``) of a stored array, read from the file (its header is parsed
        once per cache)."""
        offset, shape, dtype = self._head(path)
        row = int(np.prod(shape[1:], dtype=np.int64))
        data = np.fromfile(path, dtype=dtype, count=(hi - lo) * row, offset=offset + lo * row * dtype.itemsize)
        return data.reshape((hi - lo, *shape[1:]))

    def clip(self, entry: dict[str, Any], start: float, audio_offset: float = 0.0) -> Clip:
        """The clip of the spec starting at ``start`` (on the frame grid), its audio window shifted by
        ``audio_offset``."""
        c = self.spec
        frames_path, audio_path = self._stored(entry)
        total = self._head(frames_path)[1][0]
        n = max(1, int(round(c.video_duration * c.fps)))
        k = int(round(start * c.fps)) + np.arange(n)
        inside = (k >= 0) & (k < total)
        rows = np.clip(k, 0, total - 1)
        picked = np.ascontiguousarray(self._rows(frames_path, int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]])
        wave, a_start, apad, has_audio = None, None, 0, True
        if audio_path is not None:
            a_start = k[0] / c.fps + c.video_duration / 2 - c.audio_duration / 2 + audio_offset
            s0, m = int(round(a_start * c.sample_rate)), int(round(c.audio_duration * c.sample_rate))
            wave = np.zeros(m, np.float32)
            lo, hi = max(s0, 0), min(s0 + m, self._head(audio_path)[1][0])
            if hi > lo:
                wave[lo - s0 : hi - s0] = self._rows(audio_path, lo, hi)
            apad = m - max(hi - lo, 0)
            has_audio = bool(entry.get("audio"))
            apad = apad if has_audio else 0
        return Clip(frames=picked, frame_times=k / c.fps, waveform=wave, sample_rate=c.sample_rate,
                    audio_start=a_start, has_audio=has_audio, video_padded_frames=int((~inside).sum()),
                    audio_padded_samples=apad)
