"""Decode once: the frames and audio of whole videos, kept on disk, for collections where that pays.

Training on a few hundred short clips spends most of its time in the decoder, cutting the same files again
every epoch. :class:`ClipCache` decodes each video once at the clip spec's frame rate and decode size (uint8
frames) and sample rate (float32 mono audio), stores the two arrays as ``.npy`` files, and cuts clips from
them afterwards: the clip's start and audio offset are still drawn fresh every epoch, and the crops, flips,
jitter and masks are applied as usual after it. A clip's start falls on the stored frames' grid (multiples
of ``1 / fps``); otherwise a clip equals :func:`~avssl.data.decode.decode_clip`'s, padding included.

An entry, in the cache folder (``{key}``: the file's absolute path and the clip spec; ``{stamp}``: the file's
own size and modification time, read at every use, so a replaced file gets a new entry):

- ``{key}-{stamp}.frames.npy``: uint8 ``(K + 1, H, W, 3)``, the frames on screen at ``k / fps`` for ``k < K``,
  then the video's last frame (what the decoder repeats past the end);
- ``{key}-{stamp}.audio.npy``: float32 mono from 0 s (absent without audio);
- ``{key}-{stamp}.json``: rows, the padded rows at either end, audio samples, or why the file failed.
  Written last: an entry without it is incomplete. A failure (a video that does not decode, an audio
  track that does not) is kept there too and raised at every use, not decoded again, until the file changes.

Building decodes in one streaming pass (frames written as they are converted) and the audio in 60 s
windows: memory is a few frames and one window whatever the video's length. Every file is written to a
temporary file, fsynced and renamed; every stored array's length is checked against its record before use,
and a torn entry is rebuilt. Temporary files of processes that no longer run are removed when a cache opens.

Size: ``duration x fps x height x width x 3`` bytes of frames plus ``4 x duration x sample_rate`` of audio
(:func:`entry_sizes`). Whether it pays (:func:`plan_cache`): without it each clip decodes from the keyframe
before it, about :data:`SECONDS_DECODED_PER_CLIP` plus the clip's span of video; with it each video is
decoded once, whole. A video longer than the seconds all its clips of the run would decode is cheaper read
from its file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ..config import ConfigError
from ..fileio import atomic_write, publish
from ..progress import counted as counted_
from .clips import ClipConfig, clip_span
from .decode import Clip, DecodeError, decode_audio, iter_frames
from .entries import Entries

__all__ = ["SECONDS_DECODED_PER_CLIP", "CacheFull", "CachePlan", "ClipCache", "build", "cache_key",
           "default_cache_dir", "entry_sizes", "plan_cache"]

_VERSION = 2
_AUDIO_WINDOW = 60.0  # seconds of audio decoded at a time while building
# Seconds of video decoded per clip besides its own span without the cache: half a typical keyframe interval
# (x264's default is 250 frames, 10 s at 25 fps; web video often 2-5 s).
SECONDS_DECODED_PER_CLIP = 2.5
_HOST = socket.gethostname().replace(".", "_")


def default_cache_dir(manifest: str | os.PathLike) -> str:
    """Where a manifest's videos are kept decoded unless a config says otherwise: ``<manifest>.cache/`` beside
    it, so later runs on the same manifest (or on a subset of its rows: a held-out split) reuse it. Entries are
    keyed by each file's path and the clip spec, so runs of other specs share the folder without clashing."""
    return str(Path(manifest).with_suffix("")) + ".cache"


def _rows(duration: float, fps: float) -> int:
    return max(1, math.floor(duration * fps + 1e-6))


def entry_sizes(entries: Sequence[dict[str, Any]] | Entries, clip: ClipConfig) -> np.ndarray:
    """Bytes each entry takes in the cache (frames at the decode size from the manifest's probe facts, a 16:9
    guess where they are missing; float32 audio), int64; from the columns of :class:`Entries` without building
    a dict per entry."""
    if isinstance(entries, Entries):
        dur, audio = entries.durations, entries.has_audio
        w, h, rot = (entries.numbers(f"video.{k}") for k in ("width", "height", "rotation"))
    else:
        dur = np.array([float(e["duration"]) for e in entries], np.float64)
        audio = np.array([bool(e.get("audio")) for e in entries], bool)
        w, h, rot = (np.array([(e.get("video") or {}).get(k) or np.nan for e in entries], np.float64)
                     for k in ("width", "height", "rotation"))
    unknown = ~(np.isfinite(w) & np.isfinite(h) & (w > 0) & (h > 0))
    w, h = np.where(unknown, 16.0, w), np.where(unknown, 9.0, h)
    turned = np.nan_to_num(rot) % 180 == 90
    w, h = np.where(turned, h, w), np.where(turned, w, h)
    if isinstance(clip.size, int):  # the short side set, the long one kept in proportion (decode.output_size)
        short, long_ = np.minimum(h, w), np.maximum(h, w)
        pixels = clip.size * np.maximum(1, np.round(long_ * clip.size / short))
    else:
        pixels = h * w
    rows = np.maximum(1, np.floor(dur * clip.fps + 1e-6)) + 1
    audio_bytes = np.where(audio, 4 * np.round(dur * clip.sample_rate), 0) if clip.audio_duration else 0
    return (rows * pixels * 3 + audio_bytes).astype(np.int64)


@dataclass
class CachePlan:
    """Which entries a run keeps decoded (``cached``), what that takes, and the line that says so."""

    cached: np.ndarray  # bool per entry
    bytes_total: int  # of the cached entries
    bytes_present: int  # already in the folder
    message: str

    @property
    def enabled(self) -> bool:
        return bool(self.cached.any())


def cache_key(path: str | os.PathLike, clip: ClipConfig) -> str:
    """The name an entry's files in the cache start with: the file and what the clip spec decodes (frame rate,
    size, audio rate), so that other clip specs sharing the folder keep their own."""
    facts = [os.path.abspath(path), clip.fps, clip.size, clip.sample_rate if clip.audio_duration else None, _VERSION]
    return hashlib.sha1(json.dumps(facts).encode()).hexdigest()[:16]


def _present_bytes(folder: Path, keys: set[str] | None = None) -> int:
    """Bytes of the stored arrays in ``folder`` (those whose entry key is in ``keys``, when given)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.suffix == ".npy" and (keys is None or p.name.split("-", 1)[0] in keys))


def _first_of_each(paths: Sequence[str]) -> np.ndarray:
    """True at the first row of each file (a manifest may list a file many times)."""
    seen: set[str] = set()
    first = np.zeros(len(paths), bool)
    for i, p in enumerate(paths):
        if p not in seen:
            seen.add(p)
            first[i] = True
    return first


def plan_cache(durations: np.ndarray, sizes: np.ndarray, clip: ClipConfig, mode: bool | str, folder: str | os.PathLike,
               max_gb: float | None, epochs: float, clips_per_video: int, paths: Sequence[str] | None = None
               ) -> CachePlan:
    """Decide which videos to keep decoded. ``mode`` True: every video (a ConfigError when that exceeds
    ``max_gb`` or the free disk); ``"auto"``: the videos where it pays over the run (``epochs x
    clips_per_video`` clips, each decoding :data:`SECONDS_DECODED_PER_CLIP` plus its span without the cache),
    none when they do not fit; False: none. ``sizes``: :func:`entry_sizes`; ``paths``: the entries' files, so that a
    file listed by several rows is counted once and only this spec's stored files count as already there."""
    n = len(durations)
    folder = Path(folder)
    if not mode:
        return CachePlan(np.zeros(n, bool), 0, 0, "cache: off (data.cache: false)")
    lo, hi = clip_span(clip)
    per_run = max(epochs, 1.0) * clips_per_video * (SECONDS_DECODED_PER_CLIP + (hi - lo))
    rows = np.ones(n)
    if paths is not None:  # a file listed by several rows (its segments) gives the clips of all of them
        from collections import Counter

        per_file = Counter(paths)
        rows = np.array([per_file[p] for p in paths], np.float64)
    cached = durations <= per_run * rows if mode == "auto" else np.ones(n, bool)
    counted = cached & _first_of_each(paths) if paths is not None else cached
    total = int(sizes[counted].sum())
    keys = {cache_key(p, clip) for p, c in zip(paths, counted) if c} if paths is not None else None
    present = _present_bytes(folder, keys)
    probe_dir = folder if folder.exists() else next((p for p in folder.parents if p.exists()), Path("."))
    free = shutil.disk_usage(probe_dir).free
    limit = max_gb * 1e9 if max_gb is not None else math.inf
    gb = f"{total / 1e9:.2f} GB"
    too_big = (f"the cache of {counted_(int(counted.sum()), 'video')} would take {gb} ({present / 1e9:.2f} GB already in "
               f"{folder}), over " + (f"data.cache_max_gb ({max_gb:g})" if total > limit else
                                      f"the free disk ({free / 1e9:.2f} GB)"))
    if total > limit or total - present > free:
        if mode == "auto":
            return CachePlan(np.zeros(n, bool), 0, present, f"cache: off ({too_big})")
        raise ConfigError(f"data.cache: {too_big}; raise data.cache_max_gb, free space, set data.cache_dir "
                          "elsewhere, or data.cache: auto/false")
    skipped = n - int(cached.sum())
    files, rows = int(counted.sum()), int(cached.sum())
    listed = (f"{counted_(files, 'file')} ({rows} manifest rows)" if files != rows
              else f"{rows} of {counted_(n, 'video')}")
    message = f"cache: {listed} decoded once into {folder} ({gb}, {min(present, total) / 1e9:.2f} GB already there)"
    if skipped:
        message += (f"; {counted_(skipped, 'video')} longer than {per_run:.0f} s decode each clip from their files (decoding "
                    f"them whole would cost more than their clips over {epochs:g} epochs)")
    return CachePlan(cached, total, present, message)


def _build_one(job: tuple[str, ClipConfig, str, dict[str, Any]]) -> None:
    folder, clip, missing_audio, entry = job
    ClipCache(folder, clip, missing_audio).entry(entry)


def build(folder: str | os.PathLike, clip: ClipConfig, missing_audio: str, entries: list[dict[str, Any]],
          workers: int = 1, progress: bool = True) -> int:
    """Store the ``entries`` not stored yet (each file once), ``workers`` processes at a time, with a progress bar:
    what training would otherwise do inside its first steps, unseen (and counted in their time). Returns how many
    were built."""
    from concurrent.futures import ProcessPoolExecutor

    from ..progress import track

    cache = ClipCache(folder, clip, missing_audio)
    todo = list({e["path"]: e for e in entries if not cache.stored(e)}.values())
    if not todo:
        return 0
    jobs = [(str(folder), clip, missing_audio, e) for e in todo]
    minutes = sum(float(e.get("duration") or 0.0) for e in todo) / 60
    if progress:
        print(f"cache: decoding {counted_(len(todo), 'video')} ({minutes:.1f} min of video) once, before "
              "training", flush=True)
    if workers <= 1 or len(todo) == 1:
        for job in track(jobs, desc="cache", unit="video", enabled=progress):
            _build_one(job)
    else:
        with ProcessPoolExecutor(workers) as ex:
            for _ in track(ex.map(_build_one, jobs), total=len(jobs), desc="cache", unit="video", enabled=progress):
                pass
    return len(todo)


def _started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc; "0" where that cannot be read): with the pid
    it names one process, where a pid alone may have been reused or belong to another PID namespace."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _tmp_name(path: Path) -> Path:
    """A unique temporary name beside ``path`` that says who writes it: ``.NAME.HOST.PID-START-RANDOM.tmp``."""
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}-{_started(os.getpid())}-{os.urandom(4).hex()}.tmp")


def _alive(pid: int, started: str = "0") -> bool:
    """Whether the process that wrote a temporary file still runs: the same pid, started at the same time."""
    if started != "0" and os.path.isdir("/proc"):
        return _started(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(folder: Path, max_age: float = 86400.0) -> None:
    """Remove temporary files left by killed builders: this host's whose process is gone (the pid and its start
    time, so a reused pid or another PID namespace's process does not keep them), any host's older than
    ``max_age`` seconds."""
    for tmp in folder.glob(".*.tmp"):
        parts = tmp.name.rsplit(".", 3)  # .NAME . HOST . PID-START-RANDOM . tmp
        try:
            writer = parts[2].split("-") if len(parts) == 4 else []
            dead = bool(writer) and parts[1] == _HOST and not _alive(int(writer[0]), writer[1] if len(writer) > 1
                                                                     else "0")
            if dead or time.time() - tmp.stat().st_mtime > max_age:
                tmp.unlink()
        except (ValueError, OSError):
            continue


def _npy_header(f: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                             "fortran_order": False, "shape": shape})


class CacheFull(RuntimeError):
    """The cache's disk filled up while a video was being stored (the message says where and what to do)."""


def _write_stream(path: Path, shape: tuple[int, ...], dtype: np.dtype, rows: Any) -> int:
    """Write the ``.npy`` ``path`` from an iterable of row blocks (temporary file, fsync, rename); returns the
    rows written, which must fill ``shape``. A full disk is :class:`CacheFull`."""
    try:
        return _write_rows(path, shape, dtype, rows)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheFull(f"data.cache: no space left in {path.parent} while storing {path.name}: free space, set "
                            "data.cache_dir on a larger disk, or data.cache: false") from None
        raise


def _write_rows(path: Path, shape: tuple[int, ...], dtype: np.dtype, rows: Any) -> int:
    tmp = _tmp_name(path)
    written = 0
    try:
        with open(tmp, "wb") as f:
            _npy_header(f, shape, dtype)
            for block in rows:
                block = np.ascontiguousarray(block, dtype=dtype)
                f.write(block.tobytes())
                written += len(block) if block.ndim == len(shape) else 1
            if written != shape[0]:
                raise DecodeError(str(path), f"wrote {written} of {shape[0]} rows")
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return written


@dataclass
class _Stored:
    """One complete entry: where its arrays are and what its record says."""

    frames: Path
    audio: Path | None
    rows: int  # frame rows, the last one the video's last frame
    first_valid: int  # rows before it repeat the first frame (before the video starts)
    end_valid: int  # rows from it on are past the video's end
    audio_samples: int
    audio_state: str  # "ok", "none" (no audio stream) or why decoding failed
    error: str | None  # why the video failed to decode


class ClipCache:
    """Decoded videos in ``folder``; :meth:`clip` cuts a clip as :func:`~avssl.data.decode.decode_clip` would
    (edge frames repeated and silence outside the media, counted on the clip). Raises DecodeError for a file
    that does not decode (remembered until the file changes)."""

    def __init__(self, folder: str | os.PathLike, clip: ClipConfig,
                 missing_audio: Literal["error", "silence"] = "error") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        _sweep(self.folder)
        self.spec, self.missing_audio = clip, missing_audio
        self._known: dict[str, tuple[tuple[int, int], _Stored]] = {}  # path -> (size, mtime_ns), entry
        self._heads: dict[Path, tuple[int, tuple[int, ...], np.dtype]] = {}  # .npy file -> offset, shape, dtype

    # ------------------------------------------------------------------------------------------- entries

    def _names(self, path: str, stamp: tuple[int, int]) -> tuple[str, str]:
        key = cache_key(path, self.spec)
        return key, f"{key}-{hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:8]}"

    def entry(self, entry: dict[str, Any]) -> _Stored:
        """The entry's stored arrays and record, built (or rebuilt, when torn or stale) on first use."""
        path = entry["path"]
        try:
            st = os.stat(path)
        except OSError as e:
            raise DecodeError(path, f"file not found ({e.strerror})") from e
        stamp = (st.st_size, st.st_mtime_ns)
        known = self._known.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        key, name = self._names(path, stamp)
        stored = self._read(name)
        if stored is None:
            for old in self.folder.glob(f"{key}-*"):  # the entries of the file's earlier versions
                if not old.name.startswith(name):
                    old.unlink(missing_ok=True)
            stored = self._build(path, float(entry["duration"]), name)
        self._known[path] = (stamp, stored)
        return stored

    def stored(self, entry: dict[str, Any]) -> bool:
        """Whether the entry's file is already stored, whole and current (nothing is built)."""
        try:
            st = os.stat(entry["path"])
        except OSError:
            return True  # nothing to build: its clips fail as the file does
        return self._read(self._names(entry["path"], (st.st_size, st.st_mtime_ns))[1]) is not None

    def _read(self, name: str) -> _Stored | None:
        """A complete entry whose arrays have the lengths its record gives, or None: absent (being built, or
        never), or torn (its files removed, to be rebuilt)."""
        record = self.folder / f"{name}.json"
        if not record.exists():
            return None
        try:
            meta = json.loads(record.read_text())
            frames = self.folder / f"{name}.frames.npy"
            audio = self.folder / f"{name}.audio.npy" if meta["audio_state"] == "ok" else None
            stored = _Stored(frames, audio, meta["rows"], meta["first_valid"], meta["end_valid"],
                             meta["audio_samples"], meta["audio_state"], meta.get("error"))
            if stored.error is None:
                self._check(frames, stored.rows)
                if audio is not None:
                    self._check(audio, stored.audio_samples)
            return stored
        except (OSError, ValueError, KeyError, TypeError):
            for p in (record, self.folder / f"{name}.frames.npy", self.folder / f"{name}.audio.npy"):
                self._heads.pop(p, None)
                p.unlink(missing_ok=True)
            return None

    def _check(self, path: Path, rows: int) -> None:
        self._heads.pop(path, None)
        offset, shape, dtype = self._head(path)
        expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if shape[0] != rows or path.stat().st_size != expected:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, {expected} expected")

    def _build(self, path: str, duration: float, name: str) -> _Stored:
        c = self.spec
        k = _rows(duration, c.fps)
        frames, audio = self.folder / f"{name}.frames.npy", self.folder / f"{name}.audio.npy"
        targets = np.append(np.arange(k) / c.fps, math.inf)  # the grid, then the last frame
        padded: list[bool] = []
        error, audio_state, samples = None, "none", 0
        try:
            stream = iter_frames(path, targets, c.size)
            first, pad = next(stream)
            padded.append(pad)

            def rows() -> Any:
                yield first
                for frame, pad_ in stream:
                    padded.append(pad_)
                    yield frame

            _write_stream(frames, (k + 1, *first.shape), np.uint8, rows())
        except DecodeError as e:
            error = e.reason
        if error is None and c.audio_duration:
            samples = int(round(duration * c.sample_rate))
            try:
                _write_stream(audio, (samples,), np.float32, self._audio_windows(path, duration))
                audio_state = "ok"
            except DecodeError as e:
                audio_state = "none" if e.reason == "no audio stream" else e.reason
        grid = padded[:k] or [True]
        first_valid = next((i for i, p in enumerate(grid) if not p), k)
        end_valid = k - next((i for i, p in enumerate(reversed(grid)) if not p), k)
        meta = {"version": _VERSION, "source": os.path.abspath(path), "rows": k + 1, "first_valid": first_valid,
                "end_valid": max(end_valid, first_valid), "audio_samples": samples if audio_state == "ok" else 0,
                "audio_state": audio_state, "error": error}
        with atomic_write(self.folder / f"{name}.json") as f:
            json.dump(meta, f)
        return _Stored(frames, audio if audio_state == "ok" else None, k + 1, meta["first_valid"],
                       meta["end_valid"], meta["audio_samples"], audio_state, error)

    def _audio_windows(self, path: str, duration: float) -> Any:
        sr = self.spec.sample_rate
        total = int(round(duration * sr))
        done = 0
        while done < total:
            n = min(int(_AUDIO_WINDOW * sr), total - done)
            yield decode_audio(path, done / sr, n / sr, sr).waveform[:n]
            done += n

    # ---------------------------------------------------------------------------------------------- clips

    def _head(self, path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
        if path not in self._heads:
            with open(path, "rb") as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
                self._heads[path] = (f.tell(), shape, dtype)
        return self._heads[path]

    def _read_rows(self, path: Path, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (``0 <= lo < hi <= len``) of a stored array, read from the file (its header is parsed
        once per cache)."""
        offset, shape, dtype = self._head(path)
        row = int(np.prod(shape[1:], dtype=np.int64))
        data = np.fromfile(path, dtype=dtype, count=(hi - lo) * row, offset=offset + lo * row * dtype.itemsize)
        if data.size != (hi - lo) * row:  # shortened since it was checked
            raise DecodeError(str(path), f"cache file holds {data.size // max(row, 1)} of rows {lo}:{hi}")
        return data.reshape((hi - lo, *shape[1:]))

    def clip(self, entry: dict[str, Any], start: float, audio_offset: float = 0.0) -> Clip:
        """The clip of the spec starting at ``start`` (on the frame grid), its audio window shifted by
        ``audio_offset``."""
        c, path = self.spec, entry["path"]
        stored = self.entry(entry)
        if stored.error is not None:
            raise DecodeError(path, stored.error)
        want_audio = bool(c.audio_duration)
        if want_audio and stored.audio_state != "ok":
            if stored.audio_state != "none":
                raise DecodeError(path, stored.audio_state)
            if self.missing_audio != "silence":
                raise DecodeError(path, "no audio stream")
        n = max(1, int(round(c.video_duration * c.fps)))
        k = int(round(start * c.fps)) + np.arange(n)
        last = stored.rows - 1  # the video's last frame
        rows = np.where(k < 0, 0, np.minimum(k, last))
        padded = (k < stored.first_valid) | (k >= stored.end_valid)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        picked = np.ascontiguousarray(self._read_rows(stored.frames, lo, hi)[rows - lo])
        wave, a_start, apad, has_audio = None, None, 0, True
        if want_audio:
            a_start = k[0] / c.fps + c.video_duration / 2 - c.audio_duration / 2 + audio_offset
            m = int(round(c.audio_duration * c.sample_rate))
            wave = np.zeros(m, np.float32)
            if stored.audio is None:  # no audio stream, silence substituted
                has_audio = False
            else:
                s0 = int(round(a_start * c.sample_rate))
                lo, hi = max(s0, 0), min(s0 + m, stored.audio_samples)
                if hi > lo:
                    wave[lo - s0 : hi - s0] = self._read_rows(stored.audio, lo, hi)
                apad = m - max(hi - lo, 0)
        return Clip(frames=picked, frame_times=k / c.fps, waveform=wave, sample_rate=c.sample_rate,
                    audio_start=a_start, has_audio=has_audio, video_padded_frames=int(padded.sum()),
                    audio_padded_samples=apad)
