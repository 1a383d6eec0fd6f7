#!/usr/bin/env python
"""CPU cost of one training clip, as a loader worker pays it: milliseconds per clip on one thread.

For each config (default: the paper config and the tv config) and each set of media, the same random clips
(times drawn as training draws them) are cut by :class:`avssl.data.datasets.ClipMaker`, what every loader worker
runs per item, in both preprocessing modes:

  device   the worker's share when the batch preprocessing runs on the GPU (decode, crop geometry on uint8,
           waveform, augmentation parameters): what a GPU run's workers pay
  worker   everything per item on the CPU (colour jitter, normalization, the spectrogram too)

and, as the baseline measured in the same run, the floor: opening the file and decoding the same video and audio
packets, converting nothing. The parts of a clip are timed on their own too (open and close; the video frames;
the audio window; the geometry), each over the same clips. Each figure is CPU time of this process (one thread),
the median of interleaved rounds, so that the machine's noise falls on every method alike.

With ``--compare-with DIR`` (a checkout of another version, e.g. ``git worktree add /tmp/before <commit>``), that
version's ClipMaker runs in the same rounds, so "before" and "after" meet the same machine noise.

Usage:
  python tools/bench_loader.py                                  # 8 synthetic 320x240 25 fps clips with AAC
  python tools/bench_loader.py --compare-with /tmp/before       # and the clip of another checkout, in turns
  python tools/bench_loader.py --media film_reencoded.mp4 --clips 200
  avssl data reencode film.mp4 --output-dir re/ && python tools/bench_loader.py --media re/film.mp4
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import av
import torch

from avssl.config import CONFIG_DIR, load_config
from avssl.data.datasets import ClipMaker
from avssl.data.decode import decode_audio, decode_clip, probe
from avssl.data.synthetic import SynthSpec, synthesize
from avssl.train.configs import PretrainConfig

CONFIGS = [CONFIG_DIR / "pretrain" / "avid_r2plus1d18_kinetics.yaml",
           CONFIG_DIR / "pretrain" / "avid_r2plus1d18tv_8x112_200e_kinetics.yaml"]


def floor(path: str, start: float, video_duration: float, a_start: float, a_duration: float) -> None:
    """Open, seek and decode the clip's video and audio packets, converting nothing (what any loader pays)."""
    with av.open(path) as c:
        vs = c.streams.video[0]
        vs.thread_type = "SLICE"
        c.seek(max(0, int(start / vs.time_base)), stream=vs)
        for f in c.decode(vs):
            if f.time is not None and f.time >= start + video_duration:
                break
        if c.streams.audio:
            aus = c.streams.audio[0]
            c.seek(max(0, int((a_start - 0.1) / aus.time_base)), stream=aus)
            for f in c.decode(aus):
                if f.time is not None and f.time > a_start + a_duration + 0.1:
                    break


def _rounds(methods: dict, items: list, rounds: int) -> dict[str, float]:
    """CPU milliseconds per item of each method (this process's CPU time: one thread), the median over ``rounds``
    rounds in which the methods take turns over a share of the items: machine noise falls on all of them alike."""
    for fn in methods.values():
        fn(items[0])  # warm-up: lazy initialization, caches
    per = max(1, len(items) // rounds)
    times: dict[str, list[float]] = {k: [] for k in methods}
    for r in range(rounds):
        part = items[r * per : (r + 1) * per] or items[:per]
        for name, fn in methods.items():
            t0 = time.process_time()
            for it in part:
                fn(it)
            times[name].append(1000 * (time.process_time() - t0) / len(part))
    return {k: statistics.median(v) for k, v in times.items()}


def other_version(root: str) -> types.ModuleType:
    """The ``avssl`` package of another checkout, imported as ``avssl_other`` beside this one (its modules import
    each other relatively)."""
    init = Path(root) / "avssl" / "__init__.py"
    spec = importlib.util.spec_from_file_location("avssl_other", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["avssl_other"] = module
    spec.loader.exec_module(module)
    for name in ("config", "data.datasets", "data.decode", "train.configs"):
        importlib.import_module(f"avssl_other.{name}")
    return module


def bench(config: Path, files: list[str], clips: int, seed: int, rounds: int = 6,
          other: types.ModuleType | None = None) -> dict[str, float]:
    cfg = load_config(PretrainConfig, config)
    c = cfg.data.clip
    entries = [{"path": f, "duration": probe(f).duration} for f in files]
    rng = random.Random(seed)
    picks = [(entries[rng.randrange(len(entries))], k) for k in range(clips)]
    makers = {f"clip, {mode} mode": ClipMaker(cfg.data, train=True, defer=mode == "device")
              for mode in ("device", "worker")}
    if other is not None:
        ocfg = other.config.load_config(other.train.configs.PretrainConfig, config)
        for mode in ("device", "worker"):
            makers[f"clip, {mode} mode, --compare-with"] = other.data.datasets.ClipMaker(
                ocfg.data, train=True, defer=mode == "device")
    sampler = makers["clip, device mode"]
    specs = [(e, sampler.clip_spec(e["duration"], 0, torch.Generator().manual_seed(seed * 7919 + k)))
             for e, k in picks]

    def a_start(s) -> float:
        return s.start + c.video_duration / 2 - c.audio_duration / 2 + s.audio_offset

    def cut(maker: ClipMaker):
        return lambda it: maker.item(it[0], 0, 0, torch.Generator().manual_seed(seed * 7919 + it[2]))

    items = [(e, s, k) for (e, s), (_, k) in zip(specs, picks)]
    tf = sampler.video_tf
    methods = {name: cut(maker) for name, maker in makers.items()}
    methods.update({
        "floor: open + decode, no conversion":
            lambda it: floor(it[0]["path"], it[1].start, c.video_duration, a_start(it[1]), c.audio_duration),
        "part: open + close": lambda it: av.open(it[0]["path"]).close(),
        "part: video frames (open included)":
            lambda it: decode_clip(it[0]["path"], it[1].start, c.video_duration, c.fps, c.size, None),
        "part: audio window (open included)":
            lambda it: decode_audio(it[0]["path"], a_start(it[1]), c.audio_duration, c.sample_rate),
    })
    out = _rounds(methods, items, rounds)
    decoded = [(decode_clip(e["path"], s.start, c.video_duration, c.fps, c.size, None), k) for e, s, k in items]
    out.update(_rounds({"part: crop geometry (uint8)": lambda dk: tf.geometry(
        torch.from_numpy(dk[0].frames), torch.Generator().manual_seed(dk[1]))}, decoded, rounds))
    out["frames decoded per clip"] = sum(d.decoded_frames for d, _ in decoded) / len(decoded)
    if other is not None:
        out["frames decoded per clip, --compare-with"] = sum(
            other.data.decode.decode_clip(e["path"], s.start, c.video_duration, c.fps, c.size, None).decoded_frames
            for e, s, _ in items) / len(items)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=None, help="default: the paper config and the tv config")
    p.add_argument("--media", nargs="+", action="extend", default=[],
                   help="video files or folders of them (default: synthetic 320x240 clips)")
    p.add_argument("--clips", type=int, default=240)
    p.add_argument("--rounds", type=int, default=6, help="medians over this many interleaved rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--compare-with", default=None, metavar="DIR",
                   help="another checkout whose clip cutter runs in the same rounds (before / after)")
    args = p.parse_args()
    torch.set_num_threads(1)
    files = [str(f) for m in args.media for f in (sorted(Path(m).glob("*.mp4")) if Path(m).is_dir() else [Path(m)])]
    if not files:
        d = Path(tempfile.mkdtemp(prefix="bench_loader_"))
        synthesize(d, 8, seed=0, spec=SynthSpec(width=320, height=240, fps=25, duration=10.0, sample_rate=44100))
        files = sorted(str(f) for f in d.glob("*.mp4"))
    info = probe(files[0])
    print(f"{len(files)} file(s), e.g. {files[0]}: {info.video.width}x{info.video.height} {info.video.codec} "
          f"{info.video.fps:.0f} fps, audio {info.audio.codec if info.audio else None} "
          f"{info.audio.sample_rate if info.audio else ''} Hz; one thread, {args.clips} clips; PyAV {av.__version__}")
    other = other_version(args.compare_with) if args.compare_with else None
    results = {}
    for config in args.config or [str(c) for c in CONFIGS]:
        r = bench(Path(config), files, args.clips, args.seed, args.rounds, other)
        results[Path(config).name] = r
        base = r["floor: open + decode, no conversion"]
        print(f"{Path(config).name}")
        for name, ms in r.items():
            if name.startswith("frames decoded"):
                print(f"  {name:40s} {ms:7.1f}")
                continue
            ratio = f"  ({ms / base:.2f}x the floor)" if name.startswith("clip") else ""
            print(f"  {name:40s} {ms:7.2f} ms{ratio}")
        for mode in ("device", "worker") if args.compare_with else ():
            now, then = r[f"clip, {mode} mode"], r[f"clip, {mode} mode, --compare-with"]
            print(f"  {mode} mode: this checkout / --compare-with = {now / then:.2f}x ({now:.2f} / {then:.2f} ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
