"""PyAV decoding: probe a media file, and cut a synchronized clip of frames and audio from it.

Times are seconds on the container's clock, measured from the container's start time, so that
``t = 0`` is the start of the file whatever ``start_time`` offsets its streams carry. Frames are
picked by presentation timestamp; audio samples are placed by their timestamps (decoders apply the
encoder delay, e.g. AAC priming samples, through the skip-samples side data FFmpeg provides).
"""

from __future__ import annotations

import functools
import io
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Union

import av
import numpy as np
import torch
import torchaudio
from av.video.reformatter import VideoReformatter

__all__ = [
    "AudioClip",
    "AudioInfo",
    "Clip",
    "DecodeError",
    "MediaBytes",
    "MediaInfo",
    "VideoInfo",
    "decode_audio",
    "decode_clip",
    "decode_frames",
    "iter_frames",
    "output_size",
    "probe",
]

# Errors PyAV/FFmpeg raise on unreadable input; anything else is a bug and propagates.
_AV_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError, UnicodeDecodeError)
_EPS = 1e-6  # seconds; absorbs float error when comparing timestamps
_AUDIO_MARGIN = 0.1  # seconds decoded around the audio window (decoder warm-up, resampling edges)


class DecodeError(Exception):
    """A file could not be probed or decoded; carries the path and a human-readable reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep path/reason across DataLoader worker processes
        return (DecodeError, (self.path, self.reason))


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int  # coded width, before rotation
    height: int
    fps: float
    start_time: float  # seconds from the container start
    duration: float | None
    num_frames: int  # from the container header; 0 when unknown
    rotation: int  # display rotation in degrees (counter-clockwise), multiple of 90 when common


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int
    layout: str
    start_time: float
    duration: float | None


@dataclass(frozen=True)
class MediaInfo:
    path: str
    format: str
    duration: float
    size_bytes: int
    video: VideoInfo | None
    audio: AudioInfo | None
    start_time: float = 0.0  # the container's start on the file's own clock; other times are relative to it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_still(self) -> bool:
        """A still image (PNG, JPEG, ...: FFmpeg's image demuxers), which probes as one 0.04 s frame."""
        return self.format == "image2" or self.format.endswith("_pipe")



@dataclass
class Clip:
    """A decoded clip. ``frames`` is uint8 (T, H, W, 3) RGB; ``waveform`` float32 mono, exact length."""

    frames: np.ndarray
    frame_times: np.ndarray  # time (s) each output frame was sampled at
    waveform: np.ndarray | None
    sample_rate: int
    audio_start: float | None  # time (s) of waveform[0]
    has_audio: bool  # False when the file has no audio stream and silence was substituted
    video_padded_frames: int = 0  # output frames outside the decoded video (repeated edge frames)
    audio_padded_samples: int = 0  # output samples outside the decoded audio (zeros)
    decoded_frames: int = 0  # video frames the decoder produced (seek to keyframe .. window end)
    notes: list[str] = field(default_factory=list)

    @property
    def padded(self) -> bool:
        return self.video_padded_frames > 0 or self.audio_padded_samples > 0


@dataclass(frozen=True)
class MediaBytes:
    """A media file held in memory (a sample read from a shard), with the name messages give it
    (e.g. ``shards/000003.tar:clip_0042.mp4``). Every function here takes it where it takes a path."""

    data: bytes
    name: str

    def __str__(self) -> str:
        return self.name


Source = Union[str, os.PathLike, MediaBytes]


def _name(source: Source) -> str:
    return source.name if isinstance(source, MediaBytes) else os.fspath(source)


def _size(source: Source) -> int:
    return len(source.data) if isinstance(source, MediaBytes) else os.path.getsize(os.fspath(source))


@contextmanager
def _open(path: Source) -> Iterator[av.container.InputContainer]:
    target: str | io.BytesIO
    if isinstance(path, MediaBytes):
        name, target = path.name, io.BytesIO(path.data)
        if not path.data:
            raise DecodeError(name, "empty file (0 bytes)")
    else:
        name = target = os.fspath(path)
        if not os.path.exists(name):
            raise DecodeError(name, "file not found")
        if os.path.isdir(name):
            raise DecodeError(name, "is a directory, not a media file")
        if os.path.getsize(name) == 0:
            raise DecodeError(name, "empty file (0 bytes)")
    try:
        container = av.open(target, mode="r", metadata_errors="ignore")
    except _AV_ERRORS as e:
        raise DecodeError(name, f"cannot open as media: {e}") from e
    try:
        yield container
    finally:
        container.close()


def _container_start(c: av.container.InputContainer) -> float:
    return c.start_time / av.time_base if c.start_time is not None else 0.0


def _stream_start(s: av.stream.Stream, c_start: float) -> float:
    return float(s.start_time * s.time_base) - c_start if s.start_time is not None else 0.0


def _stream_duration(s: av.stream.Stream) -> float | None:
    return float(s.duration * s.time_base) if s.duration else None


def _media_duration(c: av.container.InputContainer, c_start: float) -> float | None:
    if c.duration:
        return c.duration / av.time_base
    ends = []
    for s in list(c.streams.video[:1]) + list(c.streams.audio[:1]):
        d = _stream_duration(s)
        if d is not None:
            ends.append(_stream_start(s, c_start) + d)
    return max(ends) if ends else None


def _scan_end(c: av.container.InputContainer, c_start: float) -> float | None:
    """End time of the last packet, found by demuxing (no decoding)."""
    end = None
    streams = list(c.streams.video[:1]) + list(c.streams.audio[:1])
    for pkt in c.demux(*streams):
        if pkt.pts is None:
            continue
        t = float((pkt.pts + (pkt.duration or 0)) * pkt.time_base) - c_start
        end = t if end is None else max(end, t)
    return end


def probe(path: Source, verify: bool = False) -> MediaInfo:
    """Facts about a media file: duration, video and audio stream properties.

    The first video frame is decoded (to read its display rotation and check that the codec works).
    With ``verify=True`` every packet is demuxed and a file whose data ends well before the duration
    its header claims (a truncated download) is rejected.
    Raises :class:`DecodeError` naming the file and the reason.
    """
    p = _name(path)
    with _open(path) as c:
        try:
            c_start = _container_start(c)
            vs = c.streams.video[0] if c.streams.video else None
            aus = c.streams.audio[0] if c.streams.audio else None
            if vs is None and aus is None:
                raise DecodeError(p, "no video or audio stream")
            duration = _media_duration(c, c_start)
            if duration is None or verify:
                end = _scan_end(c, c_start)
                if end is None:
                    raise DecodeError(p, "no packets: the file holds no media data")
                if duration is None:
                    duration = end
                elif end < duration - max(1.0, 0.05 * duration):
                    raise DecodeError(
                        p, f"truncated: data ends at {end:.2f}s but the header says {duration:.2f}s"
                    )
                c.seek(0)
            video = None
            if vs is not None:
                rotation = 0
                first = next(iter(c.decode(vs)), None)
                if first is None:
                    raise DecodeError(p, "video stream has no decodable frame")
                rotation = int(round(first.rotation or 0)) % 360
                rate = vs.average_rate or vs.guessed_rate or vs.base_rate
                video = VideoInfo(
                    codec=vs.codec_context.name,
                    width=vs.codec_context.width,
                    height=vs.codec_context.height,
                    fps=float(rate) if rate else 0.0,
                    start_time=_stream_start(vs, c_start),
                    duration=_stream_duration(vs),
                    num_frames=int(vs.frames or 0),
                    rotation=rotation,
                )
            audio = None
            if aus is not None:
                cc = aus.codec_context
                audio = AudioInfo(
                    codec=cc.name,
                    sample_rate=int(cc.sample_rate or aus.rate or 0),
                    channels=int(cc.channels or 0),
                    layout=cc.layout.name if cc.layout else "",
                    start_time=_stream_start(aus, c_start),
                    duration=_stream_duration(aus),
                )
                if audio.sample_rate <= 0:
                    raise DecodeError(p, "audio stream has no sample rate")
        except DecodeError:
            raise
        except _AV_ERRORS as e:
            raise DecodeError(p, f"probe failed: {e}") from e
    return MediaInfo(
        path=p,
        format=c.format.name,
        duration=float(duration),
        size_bytes=_size(path),
        video=video,
        audio=audio,
        start_time=c_start,
    )


def output_size(height: int, width: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) after resizing: ``int`` sets the short side keeping aspect, ``(h, w)`` is exact, None keeps."""
    if size is None:
        return height, width
    if isinstance(size, int):
        if height <= width:
            return size, max(1, round(width * size / height))
        return max(1, round(height * size / width)), size
    h, w = size
    return int(h), int(w)


_local = threading.local()


def _reformatter() -> VideoReformatter:
    """This thread's swscale context holder: reusing it avoids building a scaler for every frame.
    Scalers run single-threaded (see ``_decode_video``), so a copy inherited by a forked DataLoader
    worker holds no threads and stays usable."""
    if not hasattr(_local, "reformatter"):
        _local.reformatter = VideoReformatter()
    return _local.reformatter


def _frame_time(frame: av.VideoFrame | av.AudioFrame, c_start: float, tb: float | None = None) -> float | None:
    """The frame's time in seconds from the container's start; ``tb``: its stream's time base as a float (saves
    building a Fraction per frame)."""
    ts = frame.pts if frame.pts is not None else frame.dts
    if ts is None:
        return None
    if tb is None:
        if frame.time_base is None:
            return None
        tb = float(frame.time_base)
    return ts * tb - c_start


def _seek(c: av.container.InputContainer, stream: av.stream.Stream, t: float, c_start: float) -> None:
    """Seek ``stream`` to the keyframe at or before file time ``t``."""
    s_start = stream.start_time if stream.start_time is not None else 0
    target = max(int(math.floor((t + c_start) / stream.time_base)), s_start)
    c.seek(target, stream=stream, backward=True, any_frame=False)


def _video_stream(c: av.container.InputContainer, path: str, threads: int) -> av.video.stream.VideoStream:
    """The first video stream, set to decode with ``threads`` threads (1: slice threading only)."""
    if not c.streams.video:
        raise DecodeError(path, "no video stream (audio-only file)")
    vs = c.streams.video[0]
    vs.thread_type = "AUTO" if threads != 1 else "SLICE"
    vs.codec_context.thread_count = max(0, threads)
    return vs


def _needed(packets: list[av.Packet], tb: float, c_start: float, targets: np.ndarray) -> set[int] | None:
    """The presentation timestamps (stream units) of the frames the targets show, from the packets read ahead (every
    packet shown at or before the last target is among them): for each target the latest frame at or before it (the
    first frame where it lies before the video), and the first frame after the window (it tells the decoding loop
    that the window is complete). None where some packet has no timestamp (decode everything)."""
    if any(p.pts is None for p in packets if p.size):
        return None
    pts = sorted({p.pts for p in packets if p.size})
    if not pts:
        return None
    times = np.asarray(pts, np.float64) * tb - c_start
    at = np.searchsorted(times, np.asarray(targets) + _EPS, side="right") - 1
    needed = {pts[max(int(k), 0)] for k in at}
    after = int(np.searchsorted(times, float(targets[-1]) + _EPS, side="right"))
    if after < len(pts):
        needed.add(pts[after])
    return needed


def _decoded(c: av.container.InputContainer, vs: av.video.stream.VideoStream, targets: np.ndarray,
             c_start: float) -> Iterator[av.VideoFrame]:
    """The video's frames in display order from the keyframe before ``targets[0]``. The packets up to the window's
    end are read ahead (their timestamps say which frames the targets show: :func:`_needed`); the others are sent to
    the decoder with ``skip_frame=NONREF``, so that it drops those no other frame refers to (B-frames, most of a
    GOP's frames before and between the picked ones) instead of decoding them. What the targets show is unchanged."""
    tb, last = float(vs.time_base), float(targets[-1])
    ctx = vs.codec_context
    demux = c.demux(vs)
    ahead: list[av.Packet] = []
    for pkt in demux:
        ahead.append(pkt)
        if pkt.dts is not None and pkt.dts * tb - c_start > last + _EPS:
            break  # every later packet is shown after the window (dts <= pts)
    needed = _needed(ahead, tb, c_start, targets)
    try:
        for pkt in ahead:
            ctx.skip_frame = "NONREF" if needed is not None and pkt.size and pkt.pts not in needed else "DEFAULT"
            yield from vs.decode(pkt)
        ctx.skip_frame = "DEFAULT"
        for pkt in demux:  # past the window (or no timestamps): as far as the caller reads
            yield from vs.decode(pkt)
    finally:
        ctx.skip_frame = "DEFAULT"


def _pick(
    c: av.container.InputContainer,
    vs: av.video.stream.VideoStream,
    targets: np.ndarray,
    c_start: float,
    counts: dict[str, int],
) -> Iterator[tuple[av.VideoFrame, bool]]:
    """(the frame on screen, whether the time lies outside the video) for each target time in order, from one
    decoding pass that holds at most two decoded frames (and the window's packets, read ahead);
    ``counts["decoded"]`` counts the frames decoded."""
    _seek(c, vs, float(targets[0]), c_start)
    n = len(targets)
    prev: av.VideoFrame | None = None
    prev_t = -math.inf
    period = 1.0 / float(vs.average_rate or vs.guessed_rate or 25)
    tb = float(vs.time_base)
    i = 0
    for frame in _decoded(c, vs, targets, c_start):
        counts["decoded"] += 1
        t = _frame_time(frame, c_start, tb)
        if t is None:
            t = prev_t + period if prev is not None else 0.0
        while i < n and targets[i] < t - _EPS:
            # a window that starts before the first frame repeats it
            yield (frame, True) if prev is None else (prev, False)
            i += 1
        if i >= n:
            return
        if frame.duration and frame.time_base is not None:
            period = float(frame.duration * frame.time_base)
        prev, prev_t = frame, t
    if prev is None:
        raise DecodeError(c.name, f"no video frames decoded at or after {targets[0]:.3f}s")
    for j in range(i, n):  # stream ended inside the window
        yield prev, bool(targets[j] >= prev_t + period - _EPS)


class _Converter:
    """Decoded frames -> uint8 RGB at the output size, upright; the size and rotation are those of the first
    frame converted, and a frame converted twice in a row (a repeated frame) is converted once."""

    def __init__(self, size: int | tuple[int, int] | None, interpolation: str) -> None:
        self.size, self.interpolation = size, interpolation
        self.rotation = 0
        self.shape: tuple[int, int, int] | None = None
        self._last: tuple[av.VideoFrame | None, np.ndarray | None] = (None, None)

    def __call__(self, fr: av.VideoFrame) -> np.ndarray:
        if self._last[0] is fr:
            return self._last[1]
        if self.shape is None:
            self.rotation = int(round(fr.rotation or 0)) % 360
            self.rot_k = self.rotation // 90 if self.rotation % 90 == 0 else 0
            h, w = (fr.height, fr.width) if self.rot_k % 2 == 0 else (fr.width, fr.height)
            out_h, out_w = output_size(h, w, self.size)
            self.shape = (out_h, out_w, 3)
            # convert in coded orientation, rotate afterwards
            self.coded = (out_w, out_h) if self.rot_k % 2 == 1 else (out_h, out_w)
        # threads=1: PyAV's default (auto) starts a thread pool per scaler, which costs more than scaling a few
        # small frames and deadlocks forked workers that inherit it.
        rgb = _reformatter().reformat(fr, width=self.coded[1], height=self.coded[0], format="rgb24",
                                      interpolation=self.interpolation, threads=1).to_ndarray()
        if self.rot_k:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.rot_k))
        self._last = (fr, rgb)
        return rgb


def _decode_video(
    c: av.container.InputContainer,
    vs: av.video.stream.VideoStream,
    targets: np.ndarray,
    c_start: float,
    size: int | tuple[int, int] | None,
    interpolation: str,
) -> tuple[np.ndarray, int, int, int]:
    """Frames shown at each target time; returns (frames, padded count, rotation, frames decoded)."""
    counts = {"decoded": 0}
    convert = _Converter(size, interpolation)
    out: np.ndarray | None = None
    padded = 0
    for j, (fr, pad) in enumerate(_pick(c, vs, targets, c_start, counts)):
        rgb = convert(fr)
        if out is None:
            out = np.empty((len(targets), *rgb.shape), dtype=np.uint8)
        out[j] = rgb
        padded += pad
    return out, padded, convert.rotation, counts["decoded"]


def iter_frames(
    path: Source,
    times: np.ndarray | list[float],
    size: int | tuple[int, int] | None = None,
    *,
    threads: int = 1,
    interpolation: str = "BILINEAR",
) -> Iterator[tuple[np.ndarray, bool]]:
    """``(frame, padded)`` for each of ``times`` (seconds, non-decreasing) in one decoding pass, each frame
    converted as soon as it is known (:func:`decode_frames` frame by frame): memory is that of a few frames
    whatever the video's length. ``padded``: the time lies outside the video (its first or last frame
    repeated), as :func:`decode_clip` counts it; ``math.inf`` gives the video's last frame. Raises DecodeError
    (also part-way through)."""
    p = _name(path)
    targets = np.asarray(times, dtype=np.float64)
    if targets.ndim != 1 or len(targets) == 0 or np.any(np.diff(targets) < 0):
        raise ValueError("times must be a non-empty, non-decreasing 1-D sequence")
    with _open(path) as c:
        convert = _Converter(size, interpolation)
        try:
            vs = _video_stream(c, p, threads)
            for fr, pad in _pick(c, vs, targets, _container_start(c), {"decoded": 0}):
                yield convert(fr), pad
        except DecodeError:
            raise
        except _AV_ERRORS as e:
            raise DecodeError(p, f"decoding failed: {e}") from e


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """Band-limited sinc resampler (kernel computed once per rate pair and process)."""
    return torchaudio.transforms.Resample(orig, new)


def _to_float_mono(arr: np.ndarray, planar: bool, channels: int) -> np.ndarray:
    """Samples as PyAV returns them (planar (C, N) or packed (1, N*C)) -> float32 mono (N,)."""
    if not planar:
        arr = arr.reshape(-1, channels).T
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif arr.dtype == np.int32:
        arr = arr.astype(np.float32) / 2147483648.0
    elif arr.dtype == np.uint8:
        arr = (arr.astype(np.float32) - 128.0) / 128.0
    else:
        arr = arr.astype(np.float32, copy=False)
    return arr.mean(axis=0) if arr.shape[0] > 1 else arr[0]


_PLANAR_FLOAT = {"fltp": np.float32, "dblp": np.float64}


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded audio frame as float32 mono samples: float planar frames (what AAC, Opus, Vorbis and MP3 decoders
    give) read straight from their planes, other formats through ``to_ndarray``."""
    n = frame.samples
    dtype = _PLANAR_FLOAT.get(frame.format.name)
    if dtype is not None:
        planes = [np.frombuffer(p, dtype, count=n) for p in frame.planes]
        mono = planes[0] if len(planes) == 1 else np.add.reduce(planes) / len(planes)
        return mono.astype(np.float32, copy=False)
    return _to_float_mono(frame.to_ndarray(), frame.format.is_planar, len(frame.layout.channels))


def _decode_audio(
    c: av.container.InputContainer,
    aus: av.audio.stream.AudioStream,
    start: float,
    duration: float,
    sample_rate: int,
    c_start: float,
) -> tuple[np.ndarray, int]:
    """Mono float32 samples of ``[start, start + duration)`` at ``sample_rate``; returns (wave, padded)."""
    n_out = int(round(duration * sample_rate))
    lo, hi = start - _AUDIO_MARGIN, start + duration + _AUDIO_MARGIN
    _seek(c, aus, lo, c_start)
    native_sr = 0
    tb = float(aus.time_base) if aus.time_base is not None else None
    chunks: list[tuple[float, np.ndarray]] = []
    for frame in c.decode(aus):
        t = _frame_time(frame, c_start, tb)
        if t is None:
            continue
        native_sr = native_sr if chunks else frame.sample_rate
        if t + frame.samples / native_sr < lo:
            continue
        if t > hi:
            break
        chunks.append((t, _mono(frame)))
    out = np.zeros(n_out, dtype=np.float32)
    if not chunks:
        return out, n_out
    # Lay the chunks on one buffer by timestamp (gaps stay silent, overlaps are overwritten).
    t0 = chunks[0][0]
    per_ch = [len(x) for _, x in chunks]
    starts = [int(round((t - t0) * native_sr)) for t, _ in chunks]
    if all(b == a + n for a, b, n in zip(starts, starts[1:], per_ch)):  # contiguous: the usual case
        buf = np.concatenate([x for _, x in chunks])
    else:
        buf = np.zeros(max(s + n for s, n in zip(starts, per_ch)), dtype=np.float32)
        for s_, (_, y) in zip(starts, chunks):
            buf[s_ : s_ + len(y)] = y
    covered_lo, covered_hi = t0, t0 + len(buf) / native_sr
    if native_sr != sample_rate:
        with torch.no_grad():
            buf = _resampler(native_sr, sample_rate)(torch.from_numpy(buf)).numpy()
    offset = int(round((start - t0) * sample_rate))
    src_lo, src_hi = max(offset, 0), min(offset + n_out, len(buf))
    if src_hi > src_lo:
        out[src_lo - offset : src_hi - offset] = buf[src_lo:src_hi]
    # Samples outside the decoded span are padding.
    first_ok = int(math.ceil((covered_lo - start) * sample_rate - 1e-3))
    last_ok = int(math.floor((covered_hi - start) * sample_rate + 1e-3))
    valid = max(0, min(n_out, last_ok) - max(0, first_ok))
    return out, n_out - valid


def _audio_window(c: av.container.InputContainer, start: float, duration: float, sample_rate: int,
                  c_start: float, notes: list[str]) -> tuple[np.ndarray, int]:
    """The first audio stream's window (:func:`_decode_audio`), noting when it is upsampled."""
    aus = c.streams.audio[0]
    native = aus.codec_context.sample_rate
    if native and native < sample_rate:
        notes.append(f"audio upsampled from {native} Hz to {sample_rate} Hz")
    return _decode_audio(c, aus, start, duration, sample_rate, c_start)


def decode_clip(
    path: Source,
    start: float,
    video_duration: float = 0.5,
    fps: float = 16.0,
    size: int | tuple[int, int] | None = None,
    audio_duration: float | None = 2.0,
    sample_rate: int = 16000,
    *,
    audio_offset: float = 0.0,
    missing_audio: Literal["error", "silence"] = "error",
    on_short: Literal["pad", "error"] = "pad",
    threads: int = 1,
    interpolation: str = "BILINEAR",
) -> Clip:
    """Decode ``[start, start + video_duration)`` at ``fps`` and the audio window centred on it.

    Frames: ``round(video_duration * fps)`` frames at ``start + k / fps``, each the frame on screen at
    that time, resized during RGB conversion (``size``: short side, or exact ``(h, w)``), rotated
    upright when the stream carries a display rotation.
    Audio (when ``audio_duration``): the window of that length centred on the clip, shifted by
    ``audio_offset`` seconds, downmixed to mono, resampled to ``sample_rate``, exactly
    ``round(audio_duration * sample_rate)`` samples.
    A window reaching past the media is padded (edge frames repeated, silence) and the padding is
    reported on the returned :class:`Clip`; with ``on_short="error"`` it raises instead.
    A file without audio raises, or with ``missing_audio="silence"`` gets zeros and ``has_audio=False``.
    """
    p = _name(path)
    if video_duration <= 0 or fps <= 0:
        raise ValueError("video_duration and fps must be positive")
    n_frames = max(1, int(round(video_duration * fps)))
    targets = start + np.arange(n_frames, dtype=np.float64) / fps
    want_audio = bool(audio_duration and audio_duration > 0)
    notes: list[str] = []
    with _open(path) as c:
        try:
            vs = _video_stream(c, p, threads)
            c_start = _container_start(c)
            frames, vpad, rotation, n_decoded = _decode_video(c, vs, targets, c_start, size, interpolation)
            if rotation:
                notes.append(f"rotated by {rotation} degrees")
            wave, apad, a_start, has_audio = None, 0, None, True
            if want_audio:
                a_start = start + video_duration / 2 - audio_duration / 2 + audio_offset
                if not c.streams.audio:
                    if missing_audio != "silence":
                        raise DecodeError(p, "no audio stream")
                    has_audio = False
                    wave = np.zeros(int(round(audio_duration * sample_rate)), dtype=np.float32)
                    notes.append("no audio stream: silence substituted")
                else:
                    wave, apad = _audio_window(c, a_start, audio_duration, sample_rate, c_start, notes)
        except DecodeError:
            raise
        except _AV_ERRORS as e:
            raise DecodeError(p, f"decoding failed near {start:.3f}s: {e}") from e
    if vpad:
        notes.append(f"{vpad} of {n_frames} frames padded (window outside the video)")
    if apad:
        notes.append(f"{apad} audio samples padded with silence (window outside the audio)")
    if on_short == "error" and (vpad or apad > sample_rate / fps):
        raise DecodeError(p, "clip window extends past the media: " + "; ".join(notes))
    return Clip(
        frames=frames,
        frame_times=targets,
        waveform=wave,
        sample_rate=sample_rate,
        audio_start=a_start,
        has_audio=has_audio,
        video_padded_frames=vpad,
        audio_padded_samples=apad,
        decoded_frames=n_decoded,
        notes=notes,
    )


def decode_frames(
    path: Source,
    times: np.ndarray | list[float],
    size: int | tuple[int, int] | None = None,
    *,
    threads: int = 1,
    interpolation: str = "BILINEAR",
) -> np.ndarray:
    """The frames on screen at ``times`` (seconds, non-decreasing), decoded in one pass: uint8
    ``(len(times), H, W, 3)``, resized as in :func:`decode_clip` and rotated upright. Times outside the
    video repeat its first or last frame. A still image (JPEG, PNG) is a one-frame video."""
    out: np.ndarray | None = None
    for j, (frame, _) in enumerate(iter_frames(path, times, size, threads=threads, interpolation=interpolation)):
        if out is None:
            out = np.empty((len(times), *frame.shape), dtype=np.uint8)
        out[j] = frame
    return out


@dataclass
class AudioClip:
    """``waveform``: float32 mono, exactly ``round(duration * sample_rate)`` samples from ``start``."""

    waveform: np.ndarray
    sample_rate: int
    start: float
    padded_samples: int = 0
    notes: list[str] = field(default_factory=list)


def decode_audio(
    path: Source,
    start: float,
    duration: float,
    sample_rate: int,
    *,
    on_short: Literal["pad", "error"] = "pad",
) -> AudioClip:
    """Decode ``[start, start + duration)`` of a file's first audio stream, with or without a video stream
    (ESC-50's WAV files, audio tracks): mono, resampled, padded with silence past the ends (counted)."""
    p = _name(path)
    if duration <= 0:
        raise ValueError("duration must be positive")
    notes: list[str] = []
    with _open(path) as c:
        try:
            if not c.streams.audio:
                raise DecodeError(p, "no audio stream")
            wave, pad = _audio_window(c, start, duration, sample_rate, _container_start(c), notes)
        except DecodeError:
            raise
        except _AV_ERRORS as e:
            raise DecodeError(p, f"decoding audio failed near {start:.3f}s: {e}") from e
    if pad:
        notes.append(f"{pad} audio samples padded with silence (window outside the audio)")
        if on_short == "error":
            raise DecodeError(p, "audio window extends past the media: " + "; ".join(notes))
    return AudioClip(waveform=wave, sample_rate=sample_rate, start=start, padded_samples=pad, notes=notes)
