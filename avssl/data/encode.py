"""Writing media with PyAV: RGB frames and float audio to a real H.264/AAC (or any codec's) file. Used by
rendering, the synthetic generators and the tests; the counterpart of :mod:`avssl.data.decode`."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

__all__ = ["write_av"]


def write_av(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | None,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 44100,
    *,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    layout: str | None = None,
    video_start: float = 0.0,
    audio_start: float = 0.0,
    gop: int | None = None,
    crf: int = 18,
    rotation: int = 0,
    container_options: dict[str, str] | None = None,
) -> None:
    """Write RGB uint8 frames (H, W, 3) and float audio (channels, samples) to a media file.

    ``frames=None`` writes an audio-only file. ``video_start``/``audio_start`` offset each stream's
    first timestamp (the container keeps them as stream ``start_time``), which tests use to check
    that clips are cut on the container's clock. ``rotation`` stores a display rotation (degrees).
    """
    with av.open(os.fspath(path), mode="w", options=container_options or {}) as c:
        vs = None
        if frames is not None:
            frames = iter(frames)
            first = next(frames)
            h, w = first.shape[:2]
            rate = Fraction(fps).limit_denominator(1001)
            vs = c.add_stream(video_codec, rate=rate)
            vs.width, vs.height = w, h
            vs.pix_fmt = "yuv420p"
            vs.time_base = 1 / rate
            if video_codec == "libx264":
                # Same frames, same bytes: one encoder thread and no rate-control lookahead (otherwise
                # x264 gave different output run to run here; codec_context.thread_count does not
                # reach it, the "threads" option does).
                params = "rc-lookahead=0" + (f":keyint={gop}:min-keyint={gop}:scenecut=0" if gop else "")
                vs.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "x264-params": params}
            elif gop:
                vs.codec_context.gop_size = gop
            if rotation:
                vs.set_display_rotation(rotation)
        aus = None
        if audio is not None:
            audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
            layout = layout or {1: "mono", 2: "stereo", 6: "5.1"}[audio.shape[0]]
            aus = c.add_stream(audio_codec, rate=sample_rate, layout=layout)
            aus.time_base = Fraction(1, sample_rate)
            fmt = aus.codec_context.codec.audio_formats[0].name if aus.codec_context.codec.audio_formats else "fltp"
            aus.format = fmt
        chunk = (aus.codec_context.frame_size or 1024) if aus is not None else 0
        a0 = int(round(audio_start * sample_rate))
        done = 0  # audio samples written

        def audio_until(t: float) -> None:  # interleaved with the video, as real files are
            nonlocal done
            end = audio.shape[1] if t == float("inf") else min(audio.shape[1], int(round(t * sample_rate)) - a0)
            while done < end:
                frame = _audio_frame(audio[:, done : done + chunk], aus.format.name, layout, sample_rate)
                frame.pts = a0 + done
                frame.time_base = Fraction(1, sample_rate)
                c.mux(aus.encode(frame))
                done += chunk

        if vs is not None:
            v0 = int(round(video_start * rate))
            for i, img in enumerate(itertools.chain([first], frames)):  # one frame in memory at a time
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame.pts = v0 + i
                frame.time_base = 1 / rate
                c.mux(vs.encode(frame))
                if aus is not None:
                    audio_until(float((v0 + i + 1) / rate))
            c.mux(vs.encode(None))
        if aus is not None:
            audio_until(float("inf"))
            c.mux(aus.encode(None))


def _audio_frame(x: np.ndarray, fmt: str, layout: str, sample_rate: int) -> av.AudioFrame:
    x = np.clip(x, -1.0, 1.0)
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    if base == "s16":
        x = (x * 32767).astype(np.int16)
    elif base == "s32":
        x = (x * 2147483647).astype(np.int32)
    elif base == "dbl":
        x = x.astype(np.float64)
    else:
        x = x.astype(np.float32)
    if not planar:
        x = x.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format=fmt, layout=layout)
    frame.sample_rate = sample_rate
    return frame
