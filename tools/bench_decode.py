#!/usr/bin/env python
"""Clip-loading throughput for the AVID clip spec, against baselines measured in the same run.

Spec: 8 frames at 16 fps (0.5 s), 112x112 (short side 112, centre crop), 2 s of 16 kHz audio around
the clip turned into a log-mel spectrogram. For the same random clip windows it times:

  avssl        avssl.data.decode.decode_clip + crop + log-mel (what the datasets do)
  floor        seek + decode of the same video and audio packets, no conversion, no resampling
  torchvision  torchvision.io.read_video over the 0.5 s video window (audio window not included,
               which favours it), frames subsampled to 8 and resized to 112

Usage:
  python tools/bench_decode.py FILE [FILE ...] [--clips 40] [--threads 1]
  python tools/bench_decode.py --make-sample sample_720p.mp4   # 720p H.264, 3 s keyframes, AAC
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import warnings

import av
import numpy as np
import torch


from avssl.data.audio import Spectrogram
from avssl.data.decode import decode_clip, probe
from avssl.data.encode import write_av

VIDEO_DUR, FPS, SIZE, AUDIO_DUR, SR = 0.5, 16.0, 112, 2.0, 16000


def make_sample(path: str, seconds: float = 15.0, fps: int = 30, gop_seconds: float = 3.0, seed: int = 0) -> None:
    """A 1280x720 H.264 video with moving textured content (not trivially compressible) and audio."""
    rng = np.random.default_rng(seed)
    h, w = 720, 1280
    tex = rng.integers(0, 256, (h // 8, w // 8 + 64, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    yy, xx = np.mgrid[0:h, 0:w]

    def frames():
        for i in range(int(seconds * fps)):
            shift = (i * 6) % 512
            img = tex[:, shift : shift + w].copy()
            cx, cy = int(w / 2 + 400 * math.sin(i / 20)), int(h / 2 + 200 * math.cos(i / 15))
            disk = (xx - cx) ** 2 + (yy - cy) ** 2 < 120**2
            img[disk] = (255, 128, 0)
            img = (img.astype(np.int16) + rng.integers(-8, 8, (h, w, 1))).clip(0, 255).astype(np.uint8)
            yield img

    t = np.arange(int(seconds * 44100)) / 44100
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)])
    write_av(path, frames(), fps, audio, 44100, gop=int(gop_seconds * fps), crf=23)


def floor(path: str, start: float, threads: int) -> None:
    """Seek and decode the same packets as the loader, converting nothing."""
    a0 = start + VIDEO_DUR / 2 - AUDIO_DUR / 2
    with av.open(path) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO" if threads != 1 else "SLICE"
        vs.codec_context.thread_count = threads
        c_start = c.start_time / av.time_base if c.start_time is not None else 0.0
        end = start + VIDEO_DUR
        c.seek(max(0, int((start + c_start) / vs.time_base)), stream=vs)
        for f in c.decode(vs):
            if float(f.pts * f.time_base) - c_start >= end:
                break
        aus = c.streams.audio[0]
        c.seek(max(0, int((a0 - 0.1 + c_start) / aus.time_base)), stream=aus)
        for f in c.decode(aus):
            if float(f.pts * f.time_base) - c_start > a0 + AUDIO_DUR + 0.1:
                break


def ours(path: str, start: float, threads: int, mel: Spectrogram) -> None:
    clip = decode_clip(path, start, VIDEO_DUR, FPS, SIZE, AUDIO_DUR, SR, threads=threads)
    h, w = clip.frames.shape[1:3]
    i, j = (h - SIZE) // 2, (w - SIZE) // 2
    video = torch.from_numpy(np.ascontiguousarray(clip.frames[:, i : i + SIZE, j : j + SIZE]))
    with torch.no_grad():
        mel(torch.from_numpy(clip.waveform))
    assert video.shape == (8, SIZE, SIZE, 3)


def tv(path: str, start: float) -> None:
    from torchvision.io import read_video

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames, _, info = read_video(path, start, start + VIDEO_DUR, pts_unit="sec", output_format="TCHW")
    idx = torch.linspace(0, len(frames) - 1, 8).round().long()
    x = frames[idx].float()
    h, w = x.shape[-2:]
    s = SIZE / min(h, w)
    torch.nn.functional.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True)


def bench(path: str, clips: int, threads: int, skip_tv: bool) -> dict[str, float]:
    info = probe(path)
    rng = random.Random(0)
    lo, hi = AUDIO_DUR / 2, info.duration - AUDIO_DUR / 2 - VIDEO_DUR
    starts = [rng.uniform(lo, hi) for _ in range(clips)]
    mel = Spectrogram()
    methods = {"floor": lambda s: floor(path, s, threads), "avssl": lambda s: ours(path, s, threads, mel)}
    if not skip_tv:
        methods["torchvision"] = lambda s: tv(path, s)
    for fn in methods.values():  # warm caches and lazy initialisation
        fn(starts[0])
    out = {}
    for name, fn in methods.items():
        t0 = time.perf_counter()
        for s in starts:
            fn(s)
        out[name] = clips / (time.perf_counter() - t0)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--threads", type=int, default=1, help="decoder threads (1 = what DataLoader workers use)")
    p.add_argument("--make-sample", metavar="PATH", help="write a 720p test video and exit")
    p.add_argument("--skip-torchvision", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.make_sample:
        make_sample(args.make_sample)
        print(f"wrote {args.make_sample}")
        return 0
    if not args.files:
        p.error("give files to benchmark, or --make-sample PATH")
    for f in args.files:
        info = probe(f)
        r = bench(f, args.clips, args.threads, args.skip_torchvision)
        v = info.video
        print(f"{f}: {v.width}x{v.height} {v.codec} {v.fps:.0f} fps, {info.duration:.1f} s, threads={args.threads}")
        for name, cps in r.items():
            print(f"  {name:12s} {cps:7.2f} clips/s")
        print(f"  avssl / floor        = {r['avssl'] / r['floor']:.2f}x")
        if "torchvision" in r:
            print(f"  avssl / torchvision  = {r['avssl'] / r['torchvision']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
