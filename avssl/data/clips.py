"""Clip samplers: where in a video a clip's frames and audio are cut (times in seconds).

A clip is ``video_duration`` seconds of frames starting at ``start``, and ``audio_duration`` seconds of
audio centred on the frames and shifted by ``audio_offset``. Samplers keep both windows inside the
media when it is long enough; otherwise they centre the clip and the decoder pads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ClipConfig", "ClipSpec", "RandomClipSampler", "UniformClipSampler", "clip_span", "segment_of"]


@dataclass
class ClipConfig:
    """What one clip is. Defaults follow AVID: 8 frames at 16 fps, 2 s of 16 kHz audio around them."""

    video_duration: float = 0.5
    fps: float = 16.0
    size: int | None = 128  # short side after decoding (crops are taken from it); None: full resolution
    crop: int = 112
    audio_duration: float = 2.0
    sample_rate: int = 16000
    audio_offset: float = 0.0  # fixed shift of the audio window (s); positive = later
    max_av_offset: float = 0.0  # training: random extra shift in [-max, max] (s)


@dataclass(frozen=True)
class ClipSpec:
    start: float
    audio_offset: float = 0.0


def clip_span(cfg: ClipConfig, audio_offset: float = 0.0) -> tuple[float, float]:
    """(earliest, latest) time a clip touches, relative to its start."""
    lo, hi = 0.0, cfg.video_duration
    if cfg.audio_duration:
        a0 = cfg.video_duration / 2 - cfg.audio_duration / 2 + audio_offset
        lo, hi = min(lo, a0), max(hi, a0 + cfg.audio_duration)
    return lo, hi


def segment_of(entry: dict, duration: float) -> tuple[float, float]:
    """``(start, end)`` of the part of a file a manifest row stands for: its ``start`` and ``end`` (a segment row of
    ``avssl data manifest --segment``), else the whole file ``(0, duration)``."""
    lo = entry.get("start")
    hi = entry.get("end")
    lo = float(lo) if isinstance(lo, (int, float)) and not isinstance(lo, bool) else 0.0
    hi = float(hi) if isinstance(hi, (int, float)) and not isinstance(hi, bool) else duration
    return (lo, hi) if hi > lo else (0.0, duration)


def _fit(lo: float, hi: float, duration: float, u: float) -> float:
    """A start in the range that keeps ``[start+lo, start+hi]`` inside ``[0, duration]``; u in [0, 1]."""
    first, last = -lo, duration - hi
    if last < first:  # too short: centre the clip, the decoder pads
        return max(0.0, (duration - (hi + lo)) / 2)
    return first + u * (last - first)


class RandomClipSampler:
    """A uniformly random clip per call (training), with an optional random audio/video offset."""

    def __init__(self, cfg: ClipConfig) -> None:
        self.cfg = cfg

    def __call__(self, duration: float, generator: torch.Generator | None = None) -> ClipSpec:
        u, v = torch.rand(2, generator=generator).tolist()
        offset = self.cfg.audio_offset + (2 * v - 1) * self.cfg.max_av_offset
        lo, hi = clip_span(self.cfg, offset)
        return ClipSpec(start=_fit(lo, hi, duration, u), audio_offset=offset)


class UniformClipSampler:
    """``num_clips`` evenly spaced clips over the video (evaluation); one clip is the centre one."""

    def __init__(self, cfg: ClipConfig, num_clips: int) -> None:
        if num_clips < 1:
            raise ValueError("num_clips must be >= 1")
        self.cfg = cfg
        self.num_clips = num_clips

    def __call__(self, duration: float) -> list[ClipSpec]:
        lo, hi = clip_span(self.cfg, self.cfg.audio_offset)
        n = self.num_clips
        us = [0.5] if n == 1 else [i / (n - 1) for i in range(n)]
        return [ClipSpec(start=_fit(lo, hi, duration, u), audio_offset=self.cfg.audio_offset) for u in us]
