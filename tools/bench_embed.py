#!/usr/bin/env python
"""`avssl embed`'s rate (clips/s) against the training loader's in the same run, per config.

For each config: a model of its architecture (random weights: what is timed is the work, not the features), then
in turns over the same synthetic videos (320x240, 25 fps, AAC):

  embed    embed_collection: decoding in --workers loader processes, the batch through the model (eval, no
           gradients), Parquet parts written; clips/s over the whole command
  loader   the training DataLoader over the same videos (AVClipDataset, train=True, the same --workers): decoding and
           augmentation only, no model; clips/s
  model    the model alone (eval, no gradients) on one batch of those clips held in memory, as many clips; clips/s

embed / min(loader, model) is how close embed comes to its slower half (1: reading and the model overlap fully; on a
CPU the R(2+1)D-18 configs are model-bound, the small ones share the cores between the two).

Usage:
  python tools/bench_embed.py                                   # small and paper configs, 24 videos x 2 clips
  python tools/bench_embed.py --config configs/pretrain/avid_small_cpu.yaml --videos 96
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from avssl.config import CONFIG_DIR, load_config
from avssl.data.collection import build_manifest
from avssl.data.datasets import AVClipDataset, av_collate
from avssl.data.synthetic import SynthSpec, synthesize
from avssl.embeddings import EmbedSpec, embed_collection
from avssl.models.avmodel import AVModel
from avssl.train.configs import PretrainConfig

CONFIGS = [CONFIG_DIR / "pretrain" / "avid_small_cpu.yaml", CONFIG_DIR / "pretrain" / "avid_r2plus1d18_kinetics.yaml"]


def loader_rate(manifest: Path, cfg: PretrainConfig, workers: int, batch: int, clips_per_video: int) -> float:
    data = replace(cfg.data, cache=False, num_workers=workers, clips_per_video=clips_per_video, preprocess="worker")
    ds = AVClipDataset(manifest, data, train=True, seed=0)
    t0, n = time.perf_counter(), 0
    for b in DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=av_collate, shuffle=True):
        n += len(b["index"])
    return n / (time.perf_counter() - t0)


@torch.no_grad()
def model_rate(manifest: Path, cfg: PretrainConfig, batch: int, clips: int) -> float:
    data = replace(cfg.data, cache=False, num_workers=0, clips_per_video=1, preprocess="worker")
    b = next(iter(DataLoader(AVClipDataset(manifest, data, train=False, seed=0), batch_size=batch,
                             collate_fn=av_collate)))
    torch.manual_seed(0)
    model = AVModel(cfg.model, cfg.data.spectrogram).eval()
    model.video_head(model.video(b["video"])[1])  # warm-up
    t0, n = time.perf_counter(), 0
    while n < clips:
        model.video_head(model.video(b["video"])[1])
        model.audio_head(model.audio(b["audio"])[1])
        n += len(b["video"])
    return n / (time.perf_counter() - t0)


def embed_rate(manifest: Path, cfg: PretrainConfig, out: Path, workers: int, batch: int, clips_per_video: int) -> float:
    torch.manual_seed(0)
    model = AVModel(cfg.model, cfg.data.spectrogram)
    spec = EmbedSpec(clips_per_video=clips_per_video, batch_size=batch, num_workers=workers)
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resumed one
    t0 = time.perf_counter()
    summary = embed_collection(manifest, model, cfg.data, out, spec, "cpu", progress=False)
    return summary["clips"] / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=None)
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--clips-per-video", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_embed_"))
    if not (work / "m.jsonl").exists():
        synthesize(work / "media", args.videos, seed=0, spec=SynthSpec(width=320, height=240, fps=25, duration=6.0,
                                                                       sample_rate=44100))
        build_manifest(work / "media", work / "m.jsonl", progress=False)
    print(f"{args.videos} synthetic 320x240 videos, {args.clips_per_video} clips each, {args.workers} loader "
          f"worker(s), batch {args.batch_size}, {torch.get_num_threads()} threads; medians of {args.rounds} rounds")
    results = {}
    for config in args.config or [str(c) for c in CONFIGS]:
        cfg = load_config(PretrainConfig, config)
        embeds, loads, models = [], [], []
        for r in range(args.rounds):
            models.append(model_rate(work / "m.jsonl", cfg, args.batch_size, args.videos * args.clips_per_video))
            embeds.append(embed_rate(work / "m.jsonl", cfg, work / f"out_{Path(config).stem}_{r}", args.workers,
                                     args.batch_size, args.clips_per_video))
            loads.append(loader_rate(work / "m.jsonl", cfg, args.workers, args.batch_size, args.clips_per_video))
        e, ld, md = (sorted(x)[len(x) // 2] for x in (embeds, loads, models))
        results[Path(config).name] = {"embed_clips_per_s": e, "loader_clips_per_s": ld, "model_clips_per_s": md,
                                      "embed_over_slower": e / min(ld, md)}
        print(f"  {Path(config).name:40s} embed {e:7.2f} clips/s   loader {ld:7.2f}   model {md:7.2f}   "
              f"embed / min(loader, model) {e / min(ld, md):.2f}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
