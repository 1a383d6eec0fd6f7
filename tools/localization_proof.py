#!/usr/bin/env python
"""Which pretraining localizes, and which map settings show it best? On a composed benchmark
(`avssl data compose`: a sounding cut-out and silent distractors on photos), pretrain each variant of
`configs/pretrain/avid_localize_small_cpu.yaml` on the training split (no labels, no boxes), then score
its maps on a test split made with another seed: cIoU@0.5 and AUC under each binarization, beside the
centred prior, the oracle and a randomly initialized model. Then, for one variant, the map settings:
the short side of the frames given to the encoder and the stride of its last stage.

Variants (config overrides of the shipped config, whose own values are max_cma's):
  mean     loss.av_pool=mean: AVID as published, the video pooled before it meets the audio
  max      loss.av_pool=max: the similarity of a clip and a sound is that of its best location (MIL)
  max_cma  max, with Cross-Modal Agreement from epoch 10
  max_112  max, on 112x112 crops of frames with short side 128 (3x the pixels; 12 epochs, about the same time)
  max_cma_wide  max_cma with encoders twice as wide (about 4x the parameters; 20 epochs)
  mean_infonce, max_infonce, max_cma_infonce  mean, max and max_cma with loss.form=infonce
  random_init   no pretraining (the config's model at its initialization)

Usage:
  python tools/localization_proof.py [--stamps DIR --backgrounds DIR | --synthetic] [--kinds N]
                                     [--work-dir DIR] [--json FILE]
Runs that finished (a run folder with summary.json) are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avssl.config import load_config  # noqa: E402
from avssl.data.collection import build_manifest  # noqa: E402
from avssl.data.compose import ComposeSpec, compose  # noqa: E402
from avssl.data.formats.localization import read_vggss  # noqa: E402
from avssl.localize.evaluate import score_samples  # noqa: E402
from avssl.localize.heatmap import Localizer, MapConfig  # noqa: E402
from avssl.train.pretrain import PretrainConfig, load_pretrained, pretrain  # noqa: E402

CONFIG = ROOT / "configs" / "pretrain" / "avid_localize_small_cpu.yaml"
VARIANTS = {
    "mean": ["loss.av_pool=mean", "loss.kind=avid"],
    "max": ["loss.av_pool=max", "loss.kind=avid"],
    "max_cma": ["loss.av_pool=max", "loss.kind=cma", "loss.cma_start_epoch=10"],
    "max_112": ["loss.av_pool=max", "loss.kind=avid", "data.clip.size=128", "data.clip.crop=112", "optim.epochs=12"],
    "max_cma_wide": ["model.video.widths=[16,32,64,128]", "model.audio.widths=[16,32,64,128]", "optim.epochs=20"],
    "mean_infonce": ["loss.av_pool=mean", "loss.kind=avid", "loss.form=infonce"],
    "max_infonce": ["loss.av_pool=max", "loss.kind=avid", "loss.form=infonce"],
    "max_cma_infonce": ["loss.av_pool=max", "loss.kind=cma", "loss.cma_start_epoch=10", "loss.form=infonce"],
    "random_init": ["run.max_steps=0"],
}
MODES = ["median", "absolute", "adaptive"]
TUX_STAMPS, TUX_BACKGROUNDS = Path("/usr/share/tuxpaint/stamps"), Path("/usr/share/tuxpaint/templates")


def _scores(ckpt: Path, cfg: PretrainConfig, test, maps: MapConfig, csv: Path) -> dict:
    loc = Localizer(load_pretrained(ckpt), cfg.data, maps)
    return score_samples(loc, test, MODES, csv)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stamps", default=str(TUX_STAMPS) if TUX_STAMPS.exists() else None,
                   help="default: Tux Paint's stamps when installed, else the synthetic objects")
    p.add_argument("--backgrounds", default=str(TUX_BACKGROUNDS) if TUX_BACKGROUNDS.exists() else None)
    p.add_argument("--synthetic", action="store_true", help="the synthetic objects on procedural backgrounds")
    p.add_argument("--kinds", type=int, default=32)
    p.add_argument("--train-clips", type=int, default=480)
    p.add_argument("--test-clips", type=int, default=120)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--sweep-variant", default="max_cma", help="the variant whose map settings are compared")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128],
                   help="short sides compared (each at last-stage stride 2 and 1, with the default padding)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="loc_proof_"))
    if args.synthetic:
        args.stamps = args.backgrounds = None
    spec = ComposeSpec()
    for split, n, seed in (("train", args.train_clips, 1), ("test", args.test_clips, 2)):
        if not (work / split / "vggss.json").exists():
            compose(work / split, n, seed, args.stamps, args.backgrounds, spec, kinds=args.kinds, progress=True)
    if not (work / "train.jsonl").exists():
        build_manifest(work / "train", work / "train.jsonl", require_audio=True, progress=False)
    test = read_vggss(work / "test" / "vggss.json", work / "test")
    results: dict = {"assets": args.stamps or "synthetic", "kinds": args.kinds, "train_clips": args.train_clips,
                     "test_clips": len(test.samples), "variants": {}, "sweep": {}}
    default_maps = MapConfig()
    for name in args.variants:
        run = work / "runs" / name
        cfg = load_config(PretrainConfig, CONFIG, [f"data.manifest={work / 'train.jsonl'}", "run.progress=false",
                                                   *VARIANTS[name]])
        if not (run / "summary.json").exists():
            t0 = time.perf_counter()
            pretrain(cfg, run)
            (run / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        summary = json.loads((run / "summary.json").read_text())
        wall = (run / "wall_seconds.txt").read_text().strip() if (run / "wall_seconds.txt").exists() else None
        scores = _scores(run / "last.pt", cfg, test, default_maps, run / "per_sample.csv")
        results["variants"][name] = {"pretrain": summary, "wall_seconds": wall, "scores": scores}
        print(f"{name}: " + ", ".join(f"{m} {scores[m]['model']['ciou_at_0.5']:.3f}/{scores[m]['model']['auc']:.3f}"
                                      for m in MODES), flush=True)
    if args.sweep_variant in results["variants"]:
        run = work / "runs" / args.sweep_variant
        cfg = load_config(PretrainConfig, CONFIG, [f"data.manifest={work / 'train.jsonl'}",
                                                   *VARIANTS[args.sweep_variant]])
        settings = [(size, stride, default_maps.pad) for size in args.sizes for stride in (2, 1)]
        settings.append((None, default_maps.last_stride, 0.0))  # the default without padding
        for size, stride, pad in settings:
            s = _scores(run / "last.pt", cfg, test, MapConfig(size=size, last_stride=stride, pad=pad),
                        work / f"sweep_{size}_{stride}_{pad}.csv")
            results["sweep"][f"{size}/{stride}/{pad}"] = s
            print(f"size {size} stride {stride} pad {pad}: adaptive {s['adaptive']['model']['ciou_at_0.5']:.3f}/"
                  f"{s['adaptive']['model']['auc']:.3f}", flush=True)

    def cell(s: dict) -> str:
        return f"{s['ciou_at_0.5']:.3f} / {s['auc']:.3f}"

    print("\n| pretraining | " + " | ".join(f"{m}: cIoU@0.5 / AUC" for m in MODES) + " | pretraining time |")
    print("|---|" + "---|" * (len(MODES) + 1))
    for name, r in results["variants"].items():
        print(f"| {name} | " + " | ".join(cell(r["scores"][m]["model"]) for m in MODES) + f" | {r['wall_seconds']} s |")
    any_r = next(iter(results["variants"].values()))["scores"]
    for base in ("centre", "oracle"):
        print(f"| {base} | " + " | ".join(cell(any_r[m][base]) for m in MODES) + " | |")
    if results["sweep"]:
        print(f"\nmap settings ({args.sweep_variant}), cIoU@0.5 / AUC:")
        print("| short side | last stage stride | pad | " + " | ".join(MODES) + " |")
        print("|---|---|---|" + "---|" * len(MODES))
        for key, s in results["sweep"].items():
            size, stride, pad = key.split("/")
            size = "2 x crop" if size == "None" else size
            print(f"| {size} | {stride} | {pad} | " + " | ".join(cell(s[m]["model"]) for m in MODES) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
