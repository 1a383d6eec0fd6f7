#!/usr/bin/env python
"""The divergence guard's collapse figure on healthy runs and on a collapse forced on purpose (docs/results.md).

Each run pretrains on small synthetic clips on the CPU and logs, at every log step, each modality's spread: the
standard deviation of its L2-normalized batch embeddings times sqrt(D) (about 1 spread over the sphere, 0 when
they coincide), beside the uncentred mean pairwise cosine the guard used to judge (above 0.99 for 20 steps in a
row was a "collapse"). The table says, per run, the spread's range before the guard judges it (warm-up and the
first epoch) and after, the lowest mean cosine, and the events the guard raised.

  healthy   the config as it is (on small clips: batch and clip count set below)
  forced    the same config with a term that pulls every embedding towards one fixed direction
            (weight 100), so that the network collapses through its own gradients

Usage:
  python tools/guard_curves.py                                   # small, localize, paper and tv configs, forced
  python tools/guard_curves.py --runs small forced_small --epochs 10
On the 2-core CPU machine the default set takes about half an hour (the R(2+1)D-18 configs at 8 clips a step).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from avssl.config import CONFIG_DIR, load_config
from avssl.data.collection import build_manifest
from avssl.data.synthetic import SynthSpec, synthesize
from avssl.train.configs import PretrainConfig
from avssl.train.pretrain import PretrainJob, pretrain

P = CONFIG_DIR / "pretrain"
SMALL_EPOCHS, LARGE_EPOCHS = 20, 6
RUNS = {  # name: (config, overrides on top of the common ones, epochs)
    "small": (P / "avid_small_cpu.yaml", [], SMALL_EPOCHS),
    "localize": (P / "localize_small_cpu.yaml", [], SMALL_EPOCHS),
    "paper": (P / "avid_r2plus1d18_kinetics.yaml", ["data.clips_per_video=1", "optim.batch_size=8"], LARGE_EPOCHS),
    "tv": (P / "avid_r2plus1d18tv_8x112_200e_kinetics.yaml", ["optim.batch_size=8", "optim.warmup_epochs=2"],
           LARGE_EPOCHS),
    "tv_long": (P / "avid_r2plus1d18tv_8x112_200e_kinetics.yaml", ["optim.batch_size=8", "optim.warmup_epochs=2"],
                5 * LARGE_EPOCHS),
    "forced_small": (P / "avid_small_cpu.yaml", [], SMALL_EPOCHS),
    "forced_tv": (P / "avid_r2plus1d18tv_8x112_200e_kinetics.yaml", ["optim.batch_size=8", "optim.warmup_epochs=2"],
                  LARGE_EPOCHS),
}


def mean_cosine(x: torch.Tensor) -> float:
    """The figure the guard used before: the uncentred mean pairwise cosine of a batch."""
    x = F.normalize(x.detach().float().flatten(2).mean(2) if x.dim() > 2 else x.detach().float(), dim=1)
    b = len(x)
    total = x.sum(0)
    return float(((total @ total) - b) / (b * (b - 1)))


def run(name: str, manifest: Path, out: Path, epochs: int | None) -> dict:
    config, extra, default_epochs = RUNS[name]
    epochs = epochs or default_epochs
    over = [f"data.manifest={manifest}", "data.num_workers=0", "run.device=cpu", "run.progress=false",
            "run.log_every=1", f"optim.epochs={epochs}", "eval.every=0", "data.cache=false", *extra]
    if "batch_size" not in " ".join(extra):
        over.append("optim.batch_size=16")
    cfg = load_config(PretrainConfig, config, over)
    cosines: list[float] = []
    real = PretrainJob.loss
    forced = name.startswith("forced")

    def loss(self, model, video, audio, batch, step):
        value, metrics = real(self, model, video, audio, batch, step)
        v, a = self._last[1], self._last[2]
        cosines.append(max(mean_cosine(v), mean_cosine(a)))
        if forced:  # pull every embedding towards one direction: a collapse the network makes itself
            d = torch.zeros(v.shape[1], device=v.device)
            d[0] = 1.0
            vv = v.flatten(2).mean(2) if v.dim() > 2 else v
            value = value + 100 * ((1 - F.normalize(vv, dim=1) @ d).mean() + (1 - F.normalize(a, dim=1) @ d).mean())
        return value, metrics

    PretrainJob.loss = loss
    try:
        summary = pretrain(cfg, out)
    finally:
        PretrainJob.loss = real
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    spe = max(1, round(train[-1]["step"] / train[-1]["epochs"]))
    arm = max(spe, int(cfg.optim.warmup_epochs * spe), 1)
    res = {"run": name, "config": Path(config).name, "steps": summary["steps"], "judged_from_step": arm,
           "events": [e["event"] for e in rows if e["kind"] == "event"],
           "max_mean_cosine": max(cosines) if cosines else None,
           "steps_above_0.99": sum(c > 0.99 for c in cosines)}
    for m in ("video", "audio"):
        ranks = [r[f"emb_rank_{m}"] for r in train if r["step"] >= arm and f"emb_rank_{m}" in r]
        res[f"{m}_rank_after"] = (min(ranks), max(ranks)) if ranks else None
        before = [r[f"emb_std_{m}"] for r in train if r["step"] < arm and f"emb_std_{m}" in r]
        after = [r[f"emb_std_{m}"] for r in train if r["step"] >= arm and f"emb_std_{m}" in r]
        res[f"{m}_before"] = (min(before), max(before)) if before else None
        res[f"{m}_after"] = (min(after), max(after)) if after else None
        res[f"{m}_last"] = after[-1] if after else None
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"default: {SMALL_EPOCHS} for the small configs, {LARGE_EPOCHS} for the R(2+1)D-18 ones")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="guard_curves_"))
    media = work / "media"
    if not (work / "manifest.jsonl").exists():
        synthesize(media, args.clips, seed=0, spec=SynthSpec(width=160, height=128, fps=16, duration=3.0,
                                                            sample_rate=24000))
        build_manifest(media, work / "manifest.jsonl", progress=False)
    results = []
    for name in args.runs:
        r = run(name, work / "manifest.jsonl", work / f"run_{name}", args.epochs)
        results.append(r)
        fmt = lambda x: "-" if x is None else f"{x[0]:.3f}-{x[1]:.3f}"  # noqa: E731
        print(f"{name:13s} {r['config']:45s} steps {r['steps']:4d} judged from {r['judged_from_step']:3d}  "
              f"video {fmt(r['video_before'])} then {fmt(r['video_after'])}  audio {fmt(r['audio_before'])} then "
              f"{fmt(r['audio_after'])}  rank after {fmt(r['video_rank_after'])} / {fmt(r['audio_rank_after'])}  "
              f"mean cosine max {r['max_mean_cosine']:.3f} "
              f"({r['steps_above_0.99']} steps > 0.99)  events: {r['events'] or 'none'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
