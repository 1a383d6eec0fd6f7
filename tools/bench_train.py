#!/usr/bin/env python
"""Pretraining throughput (clips/s), with the model's compute-only speed measured in the same run.

  compute-only  model + loss + optimizer step + memory update on random tensors of the clip's shape
  end-to-end    `avssl pretrain` on synthetic media: decoding, transforms, log-mel, DataLoader workers
  2 processes   the same through torchrun (gloo on CPU, NCCL on GPU), clips/s summed over processes

end-to-end / compute-only says whether the loader keeps the model fed (1.0 = fully fed).
Steady-state rates skip the first `--warmup` steps (worker start-up, cuDNN autotuning).

Usage:
  python tools/bench_train.py                                  # small CPU config, 1 and 2 processes
  python tools/bench_train.py --config configs/pretrain/avid_r2plus1d18_kinetics.yaml --device cuda \
      --batch-size 32 --workers 12 --nproc 1                   # R(2+1)D-18, 8x112x112, AMP, on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avssl.config import load_config  # noqa: E402
from avssl.data.audio import LogMelSpectrogram  # noqa: E402
from avssl.data.collection import build_manifest  # noqa: E402
from avssl.data.synthetic import SynthSpec, synthesize  # noqa: E402
from avssl.losses.cma import build_loss  # noqa: E402
from avssl.models.avmodel import AVModel  # noqa: E402
from avssl.train.pretrain import PretrainConfig, pretrain  # noqa: E402


def compute_only(cfg: PretrainConfig, device: torch.device, steps: int, warmup: int) -> float:
    c, b = cfg.data.clip, cfg.optim.batch_size
    t = max(1, round(c.video_duration * c.fps))
    n_frames = LogMelSpectrogram(cfg.data.mel).num_frames(round(c.audio_duration * c.sample_rate))
    video = torch.randn(b, 3, t, c.crop, c.crop, device=device)
    audio = torch.randn(b, 1, cfg.data.mel.n_mels, n_frames, device=device)
    model = AVModel(cfg.model).to(device).train()
    use_amp = cfg.run.amp and device.type == "cuda"
    if device.type == "cuda" and cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        video = video.contiguous(memory_format=torch.channels_last_3d)
    loss_fn = build_loss(max(4096, b * 4), cfg.model.embed_dim, cfg.loss).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dtype = torch.bfloat16 if cfg.run.amp_dtype == "bfloat16" else torch.float16
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        index = torch.randint(0, loss_fn.memory.size, (b,), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            v, a = model(video, audio)
        loss, _ = loss_fn(v.float(), a.float(), index)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_fn.memory.update(index, v.float().detach(), a.float().detach())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * b / (time.perf_counter() - t0)


def steady_rate(run_dir: Path, warmup: int) -> float:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["step"] >= warmup)
    last = rows[-1]
    return (last["clips"] - first["clips"]) / (last["seconds"] - first["seconds"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/pretrain/avid_small_cpu.yaml"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--nproc", type=int, default=2, help="also run this many processes with torchrun (1: skip)")
    p.add_argument("--clips", type=int, default=96, help="synthetic clips to generate")
    args = p.parse_args()

    over = ["run.progress=false", "run.log_every=1", f"run.device={args.device}"]
    if args.batch_size:
        over.append(f"optim.batch_size={args.batch_size}")
    if args.workers is not None:
        over.append(f"data.num_workers={args.workers}")
    cfg = load_config(PretrainConfig, args.config, over)
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    c = cfg.data.clip
    synthesize(tmp / "media", args.clips, seed=0, workers=2,
               spec=SynthSpec(width=max(128, c.size), height=max(128, c.size), fps=25, duration=4.0,
                              sample_rate=c.sample_rate))
    build_manifest(tmp / "media", tmp / "m.jsonl", progress=False)
    over += [f"data.manifest={tmp / 'm.jsonl'}", "optim.epochs=1000", f"run.max_steps={args.steps + args.warmup}"]
    cfg = load_config(PretrainConfig, args.config, over)

    print(f"config {args.config}: batch {cfg.optim.batch_size}, {cfg.data.num_workers} loader workers, "
          f"{round(c.video_duration * c.fps)}x{c.crop}x{c.crop} video, device {device}, torch threads "
          f"{torch.get_num_threads()}")
    base = compute_only(cfg, device, args.steps, args.warmup)
    print(f"  compute-only           {base:8.1f} clips/s")
    pretrain(cfg, tmp / "run1")
    e2e = steady_rate(tmp / "run1", args.warmup)
    print(f"  end-to-end, 1 process  {e2e:8.1f} clips/s   ({e2e / base:.2f}x compute-only)")
    if args.nproc > 1:
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, torch.get_num_threads() // args.nproc)))
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}", "--master_port=29533",
               "-m", "avssl", "pretrain", "--config", args.config, "--output-dir", str(tmp / "run2")]
        for o in over:
            cmd += ["--set", o]
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        multi = steady_rate(tmp / "run2", args.warmup)
        print(f"  end-to-end, {args.nproc} processes {multi:8.1f} clips/s   ({multi / e2e:.2f}x 1 process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
