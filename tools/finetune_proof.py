#!/usr/bin/env python
"""Does pretraining help fine-tuning? On the synthetic action set (`avssl data synth --actions`: four classes
that differ only by motion and sound), for each seed: pretrain AVID (small CPU config) on the training
split's videos without labels, then fine-tune (full) and train a linear probe (frozen encoder) from that
checkpoint and from a random initialization with the same budget; video-level top-1 on the test split.

Horizontal flips are off in both stages: a mirrored clip would swap SlideLeft and SlideRight.

Pretraining uses InfoNCE over the memory bank by default: with NCE (the paper's form, whose partition
estimate needs a large bank) the small model did not learn the audio-video correspondence on these 64
videos (``--pretrain-form nce`` reproduces it), and InfoNCE needs the 40 epochs (after 15 it had not learned yet).

Usage:
  python tools/finetune_proof.py --seeds 0 1 2 [--pretrain-form infonce|nce] [--work-dir DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


from avssl.config import CONFIG_DIR, load_config
from avssl.data.collection import build_manifest
from avssl.data.synthetic.actions import synthesize_actions
from avssl.train.finetune import FinetuneConfig, finetune
from avssl.train.configs import PretrainConfig
from avssl.train.pretrain import pretrain


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--clips-per-class", type=int, default=24)
    p.add_argument("--pretrain-epochs", type=int, default=40)
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--modes", nargs="+", default=["full", "linear"], choices=["full", "linear"])
    p.add_argument("--pretrain-form", default="infonce", choices=["nce", "infonce"],
                   help="loss.form of the pretraining (NCE did not learn the correspondence on 64 videos)")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="more overrides of avid_small_cpu.yaml for the pretraining (e.g. data.cache=false); the run "
                        "folders are named after --pretrain-tag")
    p.add_argument("--pretrain-tag", default="", help="a name for the --pretrain-set settings in the run folders")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ft_proof_")).resolve()
    videos = synthesize_actions(work / "actions", args.clips_per_class, seed=0)
    lists = work / "actions" / "ucfTrainTestlist"
    train_list = work / "train_videos.txt"
    train_list.write_text("".join(str(videos / ln.split()[0]) + "\n"
                                  for ln in (lists / "trainlist01.txt").read_text().splitlines() if ln.strip()))
    build_manifest(train_list, work / "train_manifest.jsonl", progress=False)
    common = ["run.progress=false", "run.device=cpu"]
    tag = f"{args.pretrain_form}_e{args.pretrain_epochs}{'_' + args.pretrain_tag if args.pretrain_tag else ''}"
    results: dict[str, list[float]] = {}
    for seed in args.seeds:
        ckpt = work / f"pretrain_{tag}_s{seed}" / "last.pt"
        if not ckpt.exists():
            t0 = time.perf_counter()
            pretrain(load_config(PretrainConfig, CONFIG_DIR / "pretrain/avid_small_cpu.yaml", [
                *common, f"data.manifest={work / 'train_manifest.jsonl'}", "data.clips_per_video=4",
                "data.video_aug.flip=0.0",  # a mirrored clip would swap SlideLeft and SlideRight
                f"optim.epochs={args.pretrain_epochs}", f"run.seed={seed}", "loss.num_negatives=32",
                f"loss.form={args.pretrain_form}", *args.pretrain_set]),
                ckpt.parent)
            (ckpt.parent / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        wall = ckpt.parent / "wall_seconds.txt"  # absent for runs made before the tool timed them
        if wall.exists():
            print(f"seed {seed}: pretraining took {wall.read_text().strip()} s", flush=True)
        for init in ("pretrained", "random"):
            for mode in args.modes:
                run = work / (f"ft_{init}_{mode}_s{seed}" if init == "random" else f"ft_{init}_{tag}_{mode}_s{seed}")
                over = [*common, f"data.root={videos}", f"data.annotations={lists}", "data.clips_per_video=3",
                        "data.video_aug.flip=0.0", f"optim.epochs={args.finetune_epochs}",
                        f"optim.lr_milestones=[{round(args.finetune_epochs * 0.7)}]", f"run.seed={seed}",
                        f"finetune.mode={mode}", f"run.init_from={ckpt if init == 'pretrained' else ''}"]
                if mode == "linear":
                    over += ["optim.lr=0.01", "finetune.classifier_warmup_epochs=0"]
                finetune(load_config(FinetuneConfig, CONFIG_DIR / "finetune/finetune_r2plus1d-small_4x56_8e_ucf101.yaml", over), run)
                top1 = json.loads((run / "eval.json").read_text())["top1"]
                results.setdefault(f"{mode} {init}", []).append(top1)
                print(f"seed {seed}: {mode:6s} from {init:10s} top-1 {top1:.3f}", flush=True)
    chance = json.loads((work / f"ft_random_{args.modes[0]}_s{args.seeds[0]}" / "eval.json").read_text())["chance"]
    print(f"\nvideo-level top-1 on the test split of split 1 ({len(args.seeds)} seeds; chance {chance:.3f}):")
    for k, v in results.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"  {k:20s} mean {statistics.mean(v):.3f}  sd {sd:.3f}  min {min(v):.3f}  max {max(v):.3f}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "chance": chance, "seeds": args.seeds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
