#!/usr/bin/env python
"""Which pretraining localizes, and which map settings show it best? On a composed benchmark
(`avssl data compose`: a sounding cut-out and silent distractors on photos), pretrain each variant of
`configs/pretrain/localize_small_cpu.yaml` on the training split (no labels, no boxes), then score
its maps on a test split made with another seed: cIoU@0.5 and AUC under each binarization, beside the
centred prior, the oracle and a randomly initialized model. Then, for one variant (``--sweep-variant``),
the map settings: the short side of the frames given to the encoder (3D models: and the stride of its last
stage), and the smoothing of the maps.

Variants of the shipped config `localize_small_cpu.yaml` (a 2D frame model, memory-bank InfoNCE at the
best location at temperature 0.1, batch-normalized heads, Adam 1e-3, 40 epochs, decode-once cache):
  localize_small_cpu   the shipped config as it is
  frame_t07            at temperature 0.07 (the shipped config until 2026-12-02); the variants below marked
                       (t0.07) start from it
  frame_lr5e4_60e      Adam 5e-4 for 60 epochs (t0.07); frame_lr5e4_60e_t10 the same at temperature 0.1
  frame_topk4          a clip scored by the mean of its 4 best locations (loss.av_pool=topk; t0.07)
  frame_80e            80 epochs (t0.07)
  frame_mem_t03        temperature 0.03
  frame_cma            Cross-Modal Agreement (positive sets) from epoch 10 (t0.07)
  frame_batch          InfoNCE within the batch, both directions (EZ-VSL's form), temperature 0.07
  frame_batch_t03      the same at temperature 0.03; frame_batch_lr2e3 with Adam 2e-3; frame_batch_80e 80 epochs
  frame_batch_fn       frame_batch without same-kind sounds (audio cosine > 0.8) as negatives
  frame_own            other clips' sounds met at the location the clip's own sound chose (loss.av_negatives=own)
  frame_hard           the half of each frame least like its own sound as one more negative
                       (loss.frame_negatives=0.5); frame_own_hard both
  frame_s4             a last map of stride 4 (the third stage at stride 1), smoothed over 9 cells (the same
                       pixels as 5 at stride 8)
  frame_jitter         stronger scale jitter: crops of 25-100% of the frame (data.video_aug.crop_scale)
  frame_audio2s        2 s of sound per clip instead of 1
  frame_20e, frame_30e, frame_100e   20, 30, 100 epochs (100: 2.5x the steps, within 10 minutes on 2 cores)
  frame_100e_best      100 epochs, scored every 10 on a validation split of the composition (seed 3, composed
                       as large as the test split; the run scores its first eval.localization_clips, 48) and
                       kept where that score's cIoU@0.5 was best (best.pt, what its figures are of)
  frame_wide           a frame encoder 1.5x as wide (1.22M parameters in all, against 0.62M)
  frame_random_init    no pretraining
Variants of the earlier 3D config (avid-cma-mil_r2plus1d-small_4x64_36e_composed.yaml, shipped until
2026-12-01), in batches of 32 for 30 epochs unless said otherwise:
  mean     loss.av_pool=mean: AVID as published, the video pooled before it meets the audio
  max      loss.av_pool=max: the similarity of a clip and a sound is that of its best location (MIL)
  max_cma  max, with Cross-Modal Agreement from epoch 10
  max_cma_b16   max_cma in batches of 16 for 36 epochs (2.4x the steps in about 9 minutes): the 3D config as it is
  max_112  max, on 112x112 crops of frames with short side 128 (3x the pixels; 12 epochs, about the same time)
  max_cma_wide  max_cma with encoders twice as wide (about 4x the parameters; 20 epochs)
  max_cma_long  max_cma trained 4x longer (120 epochs)
  mean_infonce, max_infonce, max_cma_infonce  mean, max and max_cma with loss.form=infonce
  random_init   no pretraining (the 3D config's model at its initialization)

With ``--supervised EPOCHS ...``, the same video encoder is also trained *with* labels (the kind of the
sounding cut-out, from the training split's vggss.json; `avssl finetune` from random initialization, at the
localization config's clip size): how well it can learn to tell the kinds apart in that many epochs, an upper
bound for what the pretraining can learn to recognize. Its top-1 on the test split has a ceiling below 1: a
still frame does not say which of its two cut-outs is the one that sounds.

With ``--figure PATH``, the first variant's maps of the middle frames of the first test clips are drawn
under those frames (a contact sheet, JPEG), with each clip's adaptive cIoU printed.

Usage:
  python tools/localization_proof.py [--stamps DIR --backgrounds DIR | --synthetic] [--kinds N]
                                     [--supervised EPOCHS ...] [--figure PATH] [--work-dir DIR] [--json FILE]
Runs that finished (a run folder with summary.json) are reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


from avssl.config import CONFIG_DIR, load_config
from avssl.data.collection import build_manifest
from avssl.data.synthetic.compose import ComposeSpec, compose
from avssl.data.formats.localization import read_vggss
from avssl.localize.evaluate import score_samples
from avssl.localize.heatmap import Localizer, MapConfig
from avssl.localize.render import contact_sheet, overlay
from avssl.train.finetune import FinetuneConfig, finetune
from avssl.train.configs import PretrainConfig
from avssl.train.pretrain import load_pretrained, pretrain

CONFIG = CONFIG_DIR / "pretrain" / "localize_small_cpu.yaml"  # the shipped config: a frame model
OLD = CONFIG_DIR / "pretrain" / "avid-cma-mil_r2plus1d-small_4x64_36e_composed.yaml"  # shipped until 2026-12-01
B32 = ["optim.batch_size=32", "optim.epochs=30"]  # the schedule the earlier 3D variants were measured with
T07 = ["loss.temperature=0.07"]
BATCH = ["loss.kind=batch", *T07]
VARIANTS = {  # name: (config, overrides)
    "localize_small_cpu": (CONFIG, []),
    "frame_t07": (CONFIG, T07),  # the shipped config until 2026-12-02; the frame variants below start from it
    "frame_lr5e4_60e": (CONFIG, [*T07, "optim.lr=0.0005", "optim.epochs=60"]),
    "frame_lr5e4_60e_t10": (CONFIG, ["optim.lr=0.0005", "optim.epochs=60"]),
    "frame_topk4": (CONFIG, [*T07, "loss.av_pool=topk", "loss.av_topk=4"]),
    "frame_80e": (CONFIG, [*T07, "optim.epochs=80"]),
    "frame_mem_t03": (CONFIG, ["loss.temperature=0.03"]),
    "frame_cma": (CONFIG, [*T07, "loss.kind=cma", "loss.cma_form=set", "loss.cma_topk=16", "loss.cma_start_epoch=10",
                           "loss.cma_every=5"]),
    "frame_batch": (CONFIG, BATCH),
    "frame_batch_t03": (CONFIG, ["loss.kind=batch", "loss.temperature=0.03"]),
    "frame_batch_fn": (CONFIG, [*BATCH, "loss.false_negative_threshold=0.8"]),
    "frame_batch_lr2e3": (CONFIG, [*BATCH, "optim.lr=0.002"]),
    "frame_batch_80e": (CONFIG, [*BATCH, "optim.epochs=80"]),
    "frame_own": (CONFIG, ["loss.av_negatives=own"]),
    "frame_hard": (CONFIG, ["loss.frame_negatives=0.5"]),
    "frame_own_hard": (CONFIG, ["loss.av_negatives=own", "loss.frame_negatives=0.5"]),
    "frame_s4": (CONFIG, ["model.frame.strides=[1,2,1,1]", "localize.smooth=9"]),
    "frame_jitter": (CONFIG, ["data.video_aug.crop_scale=[0.25,1.0]"]),
    "frame_audio2s": (CONFIG, ["data.clip.audio_duration=2.0"]),
    "frame_20e": (CONFIG, ["optim.epochs=20"]),
    "frame_30e": (CONFIG, ["optim.epochs=30"]),
    "frame_100e": (CONFIG, ["optim.epochs=100"]),
    "frame_100e_best": (CONFIG, ["optim.epochs=100", "eval.localization=VAL_SPLIT", "eval.every=10",
                                 "run.keep_best=loc_ciou_at_0.5"]),
    "frame_wide": (CONFIG, ["model.frame.widths=[48,96,144,192]"]),
    "frame_random_init": (CONFIG, ["run.max_steps=0"]),
    "mean": (OLD, [*B32, "loss.av_pool=mean", "loss.kind=avid"]),
    "max": (OLD, [*B32, "loss.av_pool=max", "loss.kind=avid"]),
    "max_cma": (OLD, [*B32, "loss.av_pool=max", "loss.kind=cma", "loss.cma_start_epoch=10"]),
    "max_cma_b16": (OLD, ["optim.batch_size=16", "optim.epochs=36"]),
    "max_112": (OLD, [*B32, "loss.av_pool=max", "loss.kind=avid", "data.clip.size=128", "data.clip.crop=112",
                      "optim.epochs=12"]),
    "max_cma_wide": (OLD, [*B32, "model.video.widths=[16,32,64,128]", "model.audio.widths=[16,32,64,128]",
                           "optim.epochs=20"]),
    "max_cma_long": (OLD, [*B32, "optim.epochs=120"]),
    "mean_infonce": (OLD, [*B32, "loss.av_pool=mean", "loss.kind=avid", "loss.form=infonce"]),
    "max_infonce": (OLD, [*B32, "loss.av_pool=max", "loss.kind=avid", "loss.form=infonce"]),
    "max_cma_infonce": (OLD, [*B32, "loss.av_pool=max", "loss.kind=cma", "loss.cma_start_epoch=10",
                              "loss.form=infonce"]),
    "random_init": (OLD, ["run.max_steps=0"]),
}
MODES = ["adaptive", "median", "absolute"]  # the first is also the one the listening figures use
TUX_STAMPS, TUX_BACKGROUNDS = Path("/usr/share/tuxpaint/stamps"), Path("/usr/share/tuxpaint/templates")


def _scores(ckpt: Path, cfg: PretrainConfig, test, maps: MapConfig | None, csv: Path) -> dict:
    """Scores of a run's maps (``maps``: the run config's own map settings when None), with the listening
    figures."""
    loc = Localizer(load_pretrained(ckpt), cfg.data, maps or cfg.localize)
    return score_samples(loc, test, MODES, csv)


def _run_dir(work: Path, variant: str, seed: int) -> Path:
    return work / "runs" / (variant if seed == 0 else f"{variant}_s{seed}")


def _ucf_layout(work: Path) -> tuple[Path, Path]:
    """The composed splits as a UCF-101 tree of links (class: the sounding cut-out's kind) and its lists."""
    root, lists = work / "supervised" / "UCF-101", work / "supervised" / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    classes: list[str] = []
    listed: dict[str, list[str]] = {}
    for group, split in enumerate(("train", "test"), start=1):
        listed[split] = []
        for i, s in enumerate(read_vggss(work / split / "vggss.json", work / split).samples):
            name = "".join(ch for ch in s.class_name.split("/")[-1].title() if ch.isalnum())
            if name not in classes:
                classes.append(name)
            rel = f"{name}/v_{name}_g{group:02d}_c{i:03d}.mp4"
            (root / name).mkdir(parents=True, exist_ok=True)
            if not (root / rel).exists():
                (root / rel).symlink_to(Path(s.video).resolve())
            listed[split].append(f"{rel} {classes.index(name) + 1}" if split == "train" else rel)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for split in listed:
        (lists / f"{split}list01.txt").write_text("\n".join(listed[split]) + "\n")
    return root, lists


def _supervised(work: Path, epochs: int) -> dict:
    """Top-1 (and per class) of the localization config's video encoder trained with labels for ``epochs``."""
    run = work / "supervised" / f"e{epochs}"
    if not (run / "eval.json").exists():
        root, lists = _ucf_layout(work)
        clip = load_config(PretrainConfig, CONFIG).data.clip
        finetune(load_config(FinetuneConfig, CONFIG_DIR / "finetune/finetune_r2plus1d-small_4x56_8e_ucf101.yaml", [
            f"data.root={root}", f"data.annotations={lists}", f"data.clip.size={clip.size}",
            f"data.clip.crop={clip.crop}", "data.video_aug.crop_scale=[0.5,1.0]", "data.clips_per_video=1",
            f"optim.epochs={epochs}", f"optim.lr_milestones=[{round(epochs * 2 / 3)},{round(epochs * 0.87)}]",
            "run.progress=false"]), run)
    result = json.loads((run / "eval.json").read_text())
    with open(run / "per_class_accuracy.csv") as f:
        per_class = {row["class"]: round(float(row["accuracy"]), 3) for row in csv.DictReader(f)}
    return {"top1": result["top1"], "chance": result["chance"], "per_class": per_class}


def _per_class(csv_path: Path) -> dict[str, dict[str, float]]:
    """Mean adaptive cIoU of the model and of the centred prior per kind of sounding cut-out."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({r["class"] for r in rows}):
        mine = [r for r in rows if r["class"] == kind]
        out[kind] = {"clips": len(mine), **{k: round(sum(float(r[f"{k}_adaptive"]) for r in mine) / len(mine), 3)
                                            for k in ("model", "centre")}}
    return out


def _checkpoint(run: Path, cfg: PretrainConfig) -> Path:
    """What a run's scores, figure and sweep use: ``best.pt`` where the run kept one (``run.keep_best``), else
    ``last.pt``."""
    return run / ("best.pt" if cfg.run.keep_best and (run / "best.pt").exists() else "last.pt")


def _figure(ckpt: Path, cfg: PretrainConfig, test, csv_path: Path, path: Path, clips: int = 6) -> None:
    """Middle frames of the first ``clips`` test clips above, their maps blended over them below."""
    import torch
    from torchvision.io import write_jpeg

    loc = Localizer(load_pretrained(ckpt), cfg.data, cfg.localize)
    with open(csv_path) as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}  # the scored frame's time and its cIoU
    picks = [s for s in test.samples if s.id in rows][:clips]
    frames, overlays = [], []
    for s in picks:
        res = loc(s.video, [float(rows[s.id]["time"])])
        frames.append(res.frames[0])
        overlays.append(overlay(res.frames[0], res.maps[0]))
    sheet = contact_sheet(frames, overlays)
    write_jpeg(torch.from_numpy(sheet).permute(2, 0, 1).contiguous(), str(path), quality=90)
    print(f"{path}: adaptive cIoU " + ", ".join(f"{float(rows[s.id]['model_adaptive']):.2f}" for s in picks))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stamps", default=str(TUX_STAMPS) if TUX_STAMPS.exists() else None,
                   help="default: Tux Paint's stamps when installed, else the synthetic objects")
    p.add_argument("--backgrounds", default=str(TUX_BACKGROUNDS) if TUX_BACKGROUNDS.exists() else None)
    p.add_argument("--synthetic", action="store_true", help="the synthetic objects on procedural backgrounds")
    p.add_argument("--kinds", type=int, default=32)
    p.add_argument("--kind-offset", type=int, default=0, help="other kinds, as evenly spread (compose's kind_offset)")
    p.add_argument("--placement", default="uniform", choices=["uniform", "centre", "off_centre"])
    p.add_argument("--scale", type=float, nargs=2, default=list(ComposeSpec.scale), metavar=("LOW", "HIGH"))
    p.add_argument("--distractors", type=int, default=ComposeSpec.distractors)
    p.add_argument("--epochs", type=int, default=None, help="override the variants' optim.epochs")
    p.add_argument("--max-steps", type=int, default=None, help="override run.max_steps (a time budget in steps)")
    p.add_argument("--train-clips", type=int, default=480)
    p.add_argument("--test-clips", type=int, default=120)
    p.add_argument("--variants", nargs="+", default=["localize_small_cpu", "frame_random_init"], choices=list(VARIANTS))
    p.add_argument("--sweep-variant", default="none", help="the variant whose map settings are compared")
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 160, 192, 256],
                   help="short sides compared (3D models: each at last-stage stride 2 and 1), the rest of the map "
                        "settings the variant's own")
    p.add_argument("--smooths", type=int, nargs="+", default=[1, 3, 5, 7],
                   help="map smoothing compared (cells), at the variant's own map size")
    p.add_argument("--supervised", type=int, nargs="*", default=[], metavar="EPOCHS",
                   help="also train the video encoder with labels for this many epochs (each value a run)")
    p.add_argument("--figure", default=None, help="JPEG: the first variant's maps on the first test clips")
    p.add_argument("--pretrain-seed", type=int, default=0,
                   help="run.seed of the pretraining runs (runs other than seed 0 go to runs/<variant>_s<seed>)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="loc_proof_")).resolve()
    if args.synthetic:
        args.stamps = args.backgrounds = None
    spec = ComposeSpec(placement=args.placement, scale=tuple(args.scale), distractors=args.distractors)
    def split(name: str, n: int, seed: int) -> Path:
        """The composition's split ``name`` (composed once), by its annotations' path."""
        if not (work / name / "vggss.json").exists():
            compose(work / name, n, seed, args.stamps, args.backgrounds, spec, kinds=args.kinds, progress=True,
                    kind_offset=args.kind_offset)
        return work / name / "vggss.json"

    split("train", args.train_clips, 1)
    split("test", args.test_clips, 2)
    if not (work / "train.jsonl").exists():
        build_manifest(work / "train", work / "train.jsonl", require_audio=True, progress=False)
    test = read_vggss(work / "test" / "vggss.json", work / "test")
    results: dict = {"assets": args.stamps or "synthetic", "kinds": args.kinds, "kind_offset": args.kind_offset,
                     "placement": args.placement, "scale": args.scale, "distractors": args.distractors,
                     "train_clips": args.train_clips,
                     "test_clips": len(test.samples), "variants": {}, "sweep": {}}
    configs: dict[str, PretrainConfig] = {}
    for name in args.variants:
        run = _run_dir(work, name, args.pretrain_seed)
        config, overrides = VARIANTS[name]
        budget = ([f"optim.epochs={args.epochs}"] if args.epochs else []) + (
            [f"run.max_steps={args.max_steps}"] if args.max_steps and name != "frame_random_init" else [])
        if any("VAL_SPLIT" in o for o in overrides):  # a validation split of the same composition, to stop on
            val = split("val", args.test_clips, 3)
            overrides = [o.replace("VAL_SPLIT", str(val)) for o in overrides]
        cfg = load_config(PretrainConfig, config, [f"data.manifest={work / 'train.jsonl'}", "run.progress=false",
                                                   *overrides, *budget, f"run.seed={args.pretrain_seed}"])
        configs[name] = cfg
        if not (run / "summary.json").exists():
            t0 = time.perf_counter()
            pretrain(cfg, run)
            (run / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        summary = json.loads((run / "summary.json").read_text())
        wall = (run / "wall_seconds.txt").read_text().strip() if (run / "wall_seconds.txt").exists() else None
        scores = _scores(_checkpoint(run, cfg), cfg, test, None, run / "per_sample.csv")
        per_class = _per_class(run / "per_sample.csv")
        results["variants"][name] = {"pretrain": summary, "wall_seconds": wall, "scores": scores,
                                     "per_class_adaptive_ciou": per_class}
        listen = scores["listening"]
        print(f"{name}: " + ", ".join(f"{m} {scores[m]['model']['ciou_at_0.5']:.3f}/{scores[m]['model']['auc']:.3f}"
                                      for m in MODES)
              + f"; own sound more mass on the object {listen['own_sound_more_mass_on_object']:.2f}, cIoU drop "
                f"{listen['ciou_drop_mismatched']:.3f}, SLAVC extended AP {listen['slavc_extended']['ap']:.3f} / "
                f"max-F1 {listen['slavc_extended']['max_f1']:.3f}", flush=True)
        print("  mean adaptive cIoU per kind (model / centred prior): " + ", ".join(
            f"{k.split('/')[-1]} {v['model']:.2f}/{v['centre']:.2f}" for k, v in per_class.items()), flush=True)
    if args.figure and results["variants"]:
        name = next(iter(results["variants"]))
        run = _run_dir(work, name, args.pretrain_seed)
        _figure(_checkpoint(run, configs[name]), configs[name], test, run / "per_sample.csv", Path(args.figure))
    for epochs in args.supervised:
        r = results.setdefault("supervised", {})[f"{epochs} epochs"] = _supervised(work, epochs)
        print(f"supervised, {epochs} epochs: top-1 {r['top1']:.3f} (chance {r['chance']:.3f}); per class "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["per_class"].items()), flush=True)
    if args.sweep_variant in results["variants"]:
        run, cfg = _run_dir(work, args.sweep_variant, args.pretrain_seed), configs[args.sweep_variant]
        own = cfg.localize
        strides = (2, 1) if cfg.model.video_encoder == "r2plus1d" else (own.last_stride,)
        settings = [replace(own, size=size, last_stride=stride) for size in args.sizes for stride in strides]
        settings += [replace(own, smooth=k) for k in args.smooths]
        settings.append(replace(own, size=None, pad=0.0))  # twice the training crop, without padding
        for i, maps in enumerate(settings):
            if maps in settings[:i]:
                continue
            key = f"{maps.size}/{maps.last_stride}/{maps.pad}/{maps.smooth}"
            s = _scores(_checkpoint(run, cfg), cfg, test, maps, work / f"sweep_{key.replace('/', '_')}.csv")
            results["sweep"][key] = s
            print(f"size {maps.size} stride {maps.last_stride} pad {maps.pad} smooth {maps.smooth}: adaptive "
                  f"{s['adaptive']['model']['ciou_at_0.5']:.3f}/{s['adaptive']['model']['auc']:.3f}", flush=True)

    def cell(s: dict) -> str:
        return f"{s['ciou_at_0.5']:.3f} / {s['auc']:.3f}"

    print("\n| pretraining | " + " | ".join(f"{m}: cIoU@0.5 / AUC" for m in MODES)
          + " | own sound more mass on object | cIoU drop | SLAVC extended AP / max-F1 | pretraining time |")
    print("|---|" + "---|" * (len(MODES) + 4))
    for name, r in results["variants"].items():
        lst = r["scores"]["listening"]
        print(f"| {name} | " + " | ".join(cell(r["scores"][m]["model"]) for m in MODES)
              + f" | {lst['own_sound_more_mass_on_object']:.2f} | {lst['ciou_drop_mismatched']:.3f} | "
                f"{lst['slavc_extended']['ap']:.3f} / {lst['slavc_extended']['max_f1']:.3f} | {r['wall_seconds']} s |")
    any_r = next(iter(results["variants"].values()))["scores"]
    prior = any_r["listening"]["centre"]
    print("| centre | " + " | ".join(cell(any_r[m]["centre"]) for m in MODES)
          + f" | 0 | 0 | {prior['slavc_extended']['ap']:.3f} / {prior['slavc_extended']['max_f1']:.3f} | |")
    print("| oracle | " + " | ".join(cell(any_r[m]["oracle"]) for m in MODES) + " | | | | |")
    if results["sweep"]:
        print(f"\nmap settings ({args.sweep_variant}), cIoU@0.5 / AUC:")
        print("| short side | last stage stride | pad | smooth | " + " | ".join(MODES) + " |")
        print("|---|---|---|---|" + "---|" * len(MODES))
        for key, s in results["sweep"].items():
            size, stride, pad, smooth = key.split("/")
            size = "2 x crop" if size == "None" else size
            print(f"| {size} | {stride} | {pad} | {smooth} | " + " | ".join(cell(s[m]["model"]) for m in MODES) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
