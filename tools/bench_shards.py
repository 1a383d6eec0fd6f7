#!/usr/bin/env python
"""Data preparation and loading at scale, in one run: files probed per second, shards written per minute, and
training clips per second read from WebDataset shards against the same videos read as files.

  probe    `avssl data manifest`'s probing (build_manifest, --workers threads) over the folder: files/s
  shard    `avssl data shard` (write_shards, --workers processes): shards/min and MB/s, the files' own bytes;
           with --reencode also re-encoded (short side 256, 1 s keyframes)
  index    the index pass over shards made elsewhere: samples counted from the tar headers of local shards (what
           avssl does) against reading every shard whole (what a stream has to do), the same shards, seconds
  load     one epoch of training clips (avid_small_cpu.yaml's clip spec and per-item preprocessing, no cache)
           through a DataLoader with --loader-workers workers: from the files (AVClipDataset over the manifest)
           and from the shards (ShardStream), alternated --repeats times; clips/s and shards / files

Usage:
  python tools/bench_shards.py                          # 96 synthetic 10 s clips at 320x240
  python tools/bench_shards.py --media videos/ --loader-workers 2 --reencode
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from torch.utils.data import DataLoader

from avssl.config import CONFIG_DIR, load_config
from avssl.data.collection import build_manifest
from avssl.data.datasets import AVClipDataset, ClipMaker, av_collate
from avssl.data.reencode import ReencodeConfig
from avssl.data.shard_writer import ShardConfig, write_shards
from avssl.data.shards import ShardStream, load_shard_index
from avssl.data.synthetic import SynthSpec, synthesize
from avssl.train.configs import PretrainConfig


def _clips_per_s(dataset, batch: int, workers: int, epoch: int) -> tuple[float, int]:
    dataset.set_epoch(epoch)
    common = dict(num_workers=workers, collate_fn=av_collate)
    if isinstance(dataset, ShardStream):
        loader = DataLoader(dataset, batch_size=batch, **common)
    else:
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, **common)
    t0, n = time.perf_counter(), 0
    for b in loader:
        n += len(b["index"])
    return n / (time.perf_counter() - t0), n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--media", default=None, help="a folder of videos (default: synthetic clips)")
    p.add_argument("--clips", type=int, default=96, help="synthetic clips (without --media)")
    p.add_argument("--duration", type=float, default=10.0, help="synthetic clips' length (s)")
    p.add_argument("--workers", type=int, default=2, help="probing threads and shard-writing processes")
    p.add_argument("--loader-workers", type=int, default=1)
    p.add_argument("--samples-per-shard", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reencode", action="store_true", help="also write re-encoded shards")
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_shards_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    media = Path(args.media) if args.media else work / "media"
    if not args.media and not media.exists():
        synthesize(media, args.clips, seed=0, spec=SynthSpec(width=320, height=240, fps=25, duration=args.duration),
                   workers=args.workers, progress=False)
    out: dict = {"media": str(media)}

    t0 = time.perf_counter()
    manifest = work / "manifest.jsonl"
    manifest.unlink(missing_ok=True)
    res = build_manifest(media, manifest, workers=max(args.workers * 2, 1), progress=False)
    seconds = time.perf_counter() - t0
    out["probe"] = {"files": res.total, "seconds": seconds, "files_per_s": res.total / seconds}

    for name, reencode in (("shards", None), ("reencoded", ReencodeConfig()))[: 2 if args.reencode else 1]:
        folder = work / name
        t0 = time.perf_counter()
        written = write_shards(media, folder, ShardConfig(samples_per_shard=args.samples_per_shard, reencode=reencode),
                               workers=args.workers, progress=False)
        seconds = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in folder.glob("*.tar"))
        out[f"write_{name}"] = {"shards": written.written, "samples": written.samples, "seconds": seconds,
                                "shards_per_min": 60 * written.written / seconds, "mb_per_s": size / 1e6 / seconds}

    from avssl.data import shards as shards_mod

    tars = sorted(str(f) for f in (work / "shards").glob("*.tar"))
    t0 = time.perf_counter()
    headers = sum(shards_mod._count(t) for t in tars)
    t_headers = time.perf_counter() - t0
    t0 = time.perf_counter()
    whole = sum(1 for t in tars for _ in shards_mod.read_samples(t))
    t_whole = time.perf_counter() - t0
    assert headers == whole
    out["index"] = {"shards": len(tars), "samples": headers, "headers_s": t_headers, "read_whole_s": t_whole,
                    "speedup": t_whole / t_headers}

    cfg = load_config(PretrainConfig, CONFIG_DIR / "pretrain" / "avid_small_cpu.yaml")
    data = replace(cfg.data, cache=False, preprocess="worker")
    batch = cfg.optim.batch_size
    files = AVClipDataset(str(manifest), data, train=True, seed=0)
    index = load_shard_index(sorted(str(f) for f in (work / "shards").glob("*.tar")))
    shards = ShardStream(index, ClipMaker(data, train=True), batch, seed=0, rank=0, world=1)
    rates: dict[str, list[float]] = {"files": [], "shards": []}
    for r in range(args.repeats):
        for name, ds in (("files", files), ("shards", shards))[:: 1 if r % 2 == 0 else -1]:
            rate, n = _clips_per_s(ds, batch, args.loader_workers, epoch=r)
            rates[name].append(rate)
    out["load"] = {"clips_per_epoch": n, "loader_workers": args.loader_workers, "batch": batch,
                   **{f"{k}_clips_per_s": v for k, v in rates.items()},
                   "median_shards_over_files": statistics.median(s / f for s, f in zip(rates["shards"], rates["files"]))}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
