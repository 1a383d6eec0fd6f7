#!/usr/bin/env python
"""Whole-file video decoding: PyAV's CPU decoder (1 thread and all cores) vs hardware decoding through
PyAV's ``hwaccel`` (NVDEC on NVIDIA GPUs), on the same file in the same run. Frames are decoded and
converted to RGB at the file's size (what a loader must at least do); frames/s and the ratios are printed.

Usage:
  python tools/bench_hwdecode.py FILE [--device-type cuda] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import av
from av.codec.hwaccel import HWAccel, hwdevices_available


def decode(path: str, seconds: float, threads: int, hw: str | None) -> tuple[float, int]:
    kwargs = {"hwaccel": HWAccel(device_type=hw, allow_software_fallback=False)} if hw else {}
    t0 = time.perf_counter()
    n = 0
    with av.open(path, **kwargs) as c:
        s = c.streams.video[0]
        if not hw:
            s.thread_type = "AUTO" if threads > 1 else "SLICE"
            s.codec_context.thread_count = threads
        for frame in c.decode(s):
            frame.to_ndarray(format="rgb24")
            n += 1
            if frame.time is not None and frame.time >= seconds:
                break
    return n / (time.perf_counter() - t0), n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.add_argument("--device-type", default="cuda")
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    print(f"PyAV {av.__version__}, FFmpeg {av.library_versions['libavcodec']}, "
          f"hardware device types built in: {hwdevices_available()}")
    cpu1, n = decode(args.file, args.seconds, 1, None)
    cores = os.cpu_count() or 1
    cpun, _ = decode(args.file, args.seconds, cores, None)
    print(f"  CPU, 1 thread        {cpu1:8.1f} frames/s ({n} frames)")
    print(f"  CPU, {cores} threads     {cpun:8.1f} frames/s")
    try:
        decode(args.file, 1.0, 1, args.device_type)  # device start-up, not timed
        hw, _ = decode(args.file, args.seconds, 1, args.device_type)
    except Exception as e:  # the wheel's FFmpeg or the driver lacks it: say so
        print(f"  hwaccel {args.device_type}: not usable here ({type(e).__name__}: {e})")
        return 1
    print(f"  hwaccel {args.device_type:12s} {hw:8.1f} frames/s ({hw / cpu1:.2f}x 1 CPU thread, "
          f"{hw / cpun:.2f}x {cores} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
