"""The demo: synthesize a sounding-objects collection, pretrain AVID on it on the CPU, and show what
was learned against the same model at random initialization (retrieval and a linear probe), then where
the model hears each sound: heatmaps of a few held-out clips (``localize/index.html``) and a localization
score against the centre prior."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .config import CONFIG_DIR, load_config
from .data.collection import build_manifest, read_manifest, write_jsonl
from .data.datasets import AVClipDataset
from .data.formats.localization import read_vggss
from .data.synthetic import SynthSpec, synthesize
from .localize.evaluate import score_samples
from .localize.heatmap import Localizer
from .localize.render import localize_video, write_index
from .models.avmodel import AVModel
from .report import write_report
from .evaluation.features import extract, linear_probe
from .evaluation.retrieval import rank_metrics
from .train.configs import PretrainConfig
from .train.pretrain import load_pretrained, pretrain
from .fileio import write_json

__all__ = ["run_demo"]

DEFAULT_CONFIG = CONFIG_DIR / "pretrain" / "avid_small_cpu.yaml"
LOCALIZE_CONFIG = CONFIG_DIR / "pretrain" / "localize_small_cpu.yaml"
LOCALIZE_EPOCHS = 40  # on the demo's training clips: about 2 minutes on 2 cores


def _scores(model: AVModel, train_ds: AVClipDataset, test_ds: AVClipDataset) -> dict[str, Any]:
    tr, te = extract(model, train_ds), extract(model, test_ds)
    v2a, a2v = ({k: m[k] for k in ("R@1", "R@5")} for m in (rank_metrics(te["video_emb"], te["audio_emb"], (1, 5)),
                                                            rank_metrics(te["audio_emb"], te["video_emb"], (1, 5))))
    probe = linear_probe(tr["video_feat"], tr["label"], te["video_feat"], te["label"])
    return {"video_to_audio": v2a, "audio_to_video": a2v, "linear_probe": probe}


def _heldout_boxes(out: Path, rows: list[dict[str, Any]]) -> Path:
    """The held-out clips' boxes (the sounding object on the middle frame, from the synthetic ground truth) as
    VGG-SS annotations, ``OUT/localize/heldout_vggss.json``."""
    loc_dir = out / "localize"
    loc_dir.mkdir(parents=True, exist_ok=True)
    boxes = []
    for r in rows:
        truth = json.loads(Path(r["path"]).with_suffix(".json").read_text())
        x0, y0, x1, y1 = truth["boxes"][min(int(truth["duration"] * truth["fps"] / 2), len(truth["boxes"]) - 1)]
        w, h = truth["width"], truth["height"]
        boxes.append({"file": Path(r["path"]).stem, "class": truth["class_name"], "bbox": [[x0 / w, y0 / h, x1 / w,
                                                                                            y1 / h]]})
    (loc_dir / "heldout_vggss.json").write_text(json.dumps(boxes, indent=1))
    return loc_dir / "heldout_vggss.json"


def _localization(out: Path, rows: list[dict[str, Any]], model: AVModel, cfg: PretrainConfig, pages: int = 4
                  ) -> dict[str, Any]:
    """Score the localization model's maps on the held-out clips beside the centre prior, with the same maps under
    other classes' sounds and under silence, and render a few of them."""
    loc_dir = out / "localize"
    data = read_vggss(_heldout_boxes(out, rows), Path(rows[0]["path"]).parent)
    localizer = Localizer(model, cfg.data, cfg.localize)  # the config's map settings, as `avssl localize` uses
    scores = score_samples(localizer, data, ["median", "adaptive"], loc_dir / "per_sample.csv")
    shown = {}
    for k, r in enumerate(rows[:pages]):  # the same files and page as `avssl localize`, listening check included
        other = rows[(k + 1) % len(rows)]["path"]
        shown[Path(r["path"]).stem] = localize_video(localizer, r["path"], loc_dir / Path(r["path"]).stem, other=other)
    index = write_index(loc_dir, shown, "avssl demo: where the sound comes from (held-out clips)",
                        f"{Path(LOCALIZE_CONFIG).name} pretrained on the demo's synthetic clips; maps normalized "
                        "per frame")
    return {"index": str(index), "median": scores["median"], "adaptive": scores["adaptive"],
            "listening": scores["listening"]}


def _localization_model(out: Path, seed: int, overrides: list[str], boxes: Path) -> tuple[AVModel, PretrainConfig,
                                                                                        dict]:
    """The localization config pretrained on the demo's training clips (its own run folder, resumed like any),
    evaluated on the held-out clips' boxes every 10 epochs."""
    cfg = load_config(PretrainConfig, LOCALIZE_CONFIG, [f"data.manifest={out / 'train.jsonl'}", f"run.seed={seed}",
                                                        f"optim.epochs={LOCALIZE_EPOCHS}", "eval.holdout=0",
                                                        f"eval.localization={boxes}", "eval.localization_clips=24",
                                                        f"eval.localization_media={out / 'media'}",
                                                        *overrides])
    summary = pretrain(cfg, out / "localize_run")
    return load_pretrained(out / "localize_run" / "last.pt"), cfg, summary


def run_demo(output_dir: str | Path, num_clips: int = 240, held_out: int = 48, seed: int = 0,
             config: str | Path | None = None, overrides: list[str] | None = None, workers: int = 2,
             distractors: int = 0, localize_overrides: list[str] | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(output_dir)
    media = out / "media"
    # One sounding object per clip: with silent distractors the video alone says little about which
    # sound goes with it, which a small model learns only slowly (localization data keeps them).
    spec = SynthSpec(width=80, height=80, fps=16, duration=3.0, sample_rate=16000, num_distractors=distractors)
    meta = media / "classes.json"
    made = json.loads(meta.read_text()) if meta.exists() else {}
    same = made.get("spec") == asdict(spec) and made.get("seed") == seed
    if not same or len(list(media.glob("clip_*.mp4"))) < num_clips:
        for old in media.glob("clip_*"):
            old.unlink()
        print(f"synthesizing {num_clips} clips into {media}", flush=True)
        synthesize(media, num_clips, seed=seed, spec=spec, workers=workers, progress=True)
    clips = [str((media / f"clip_{i:05d}.mp4").resolve()) for i in range(num_clips)]
    build_manifest(clips, out / "manifest.jsonl", require_audio=True, progress=False)
    rows = read_manifest(out / "manifest.jsonl")
    for r in rows:
        r["label"] = json.loads(Path(r["path"]).with_suffix(".json").read_text())["label"]
    train_rows, test_rows = rows[:-held_out], rows[-held_out:]
    write_jsonl(out / "train.jsonl", train_rows)
    write_jsonl(out / "heldout.jsonl", test_rows)

    cfg = load_config(PretrainConfig, config or DEFAULT_CONFIG,  # evaluated on the held-out clips while it trains
                      [f"data.manifest={out / 'train.jsonl'}", f"run.seed={seed}", "eval.holdout=0",
                       f"eval.manifest={out / 'heldout.jsonl'}", "eval.labels_format=manifest",
                       f"eval.labels_root={out / 'train.jsonl'}", f"eval.labels_annotations={out / 'heldout.jsonl'}"]
                      + list(overrides or []))
    summary = pretrain(cfg, out / "run")

    train_ds = AVClipDataset(train_rows, cfg.data, train=False)
    test_ds = AVClipDataset(test_rows, cfg.data, train=False)
    torch.manual_seed(seed)  # the same initialization pretraining started from
    random_init = AVModel(cfg.model)
    pretrained = load_pretrained(out / "run" / "last.pt")
    loc_model, loc_cfg, loc_summary = _localization_model(out, seed, list(localize_overrides or []),
                                                          _heldout_boxes(out, test_rows))
    results = {
        "train_clips": len(train_rows),
        "heldout_clips": len(test_rows),
        "random_init": _scores(random_init, train_ds, test_ds),
        "pretrained": _scores(pretrained, train_ds, test_ds),
        "pretrain": summary,
        "localization": {**_localization(out, test_rows, loc_model, loc_cfg), "pretrain": loc_summary},
        "seconds": round(time.perf_counter() - t0, 1),
        "report": str(write_report([out / "run", out / "localize_run"], out / "report")),
    }
    write_json(out / "demo_results.json", results)
    text = _summary_text(results)
    (out / "summary.txt").write_text(text)
    print(text, flush=True)
    return results


def _summary_text(r: dict[str, Any]) -> str:
    lines = [
        f"avssl demo: AVID pretrained on {r['train_clips']} synthetic clips, evaluated on {r['heldout_clips']} held-out"
        f" clips ({r['pretrain']['steps']} steps, {r['seconds']:.0f} s in all)",
        "",
        f"{'metric':34s} {'random init':>12s} {'pretrained':>12s}",
    ]
    def row(label: str, before: float, after: float) -> str:
        return f"{label:34s} {before:12.3f} {after:12.3f}"

    rand, pre = r["random_init"], r["pretrained"]
    for key, name in (("video_to_audio", "video->audio"), ("audio_to_video", "audio->video")):
        for k in ("R@1", "R@5"):
            lines.append(row(f"retrieval {name} {k}", rand[key][k], pre[key][k]))
    lines.append(row("linear probe, object class", rand["linear_probe"]["accuracy"], pre["linear_probe"]["accuracy"]))
    chance = 1 / r["heldout_clips"]
    probe_chance = pre["linear_probe"]["chance"]
    lines += ["", f"chance: retrieval R@1 {chance:.3f}, R@5 {5 * chance:.3f}; probe (majority) {probe_chance:.3f}"]
    lines = lines + _localization_text(r["localization"], r["heldout_clips"])
    return "\n".join(lines + [f"how both runs learned (curves, held-out figures, maps): {r['report']}"]) + "\n"


def _localization_text(loc: dict[str, Any], clips: int) -> list[str]:
    lines = ["", f"localization ({LOCALIZE_CONFIG.name}, {loc['pretrain']['steps']} steps) on the held-out clips "
             "(sounding object's box, middle frame), cIoU@0.5 / AUC:",
             f"{'binarization':34s} {'centre prior':>12s} {'pretrained':>12s}"]
    for mode in ("median", "adaptive"):
        c, m = loc[mode]["centre"], loc[mode]["model"]
        cells = [f"{x['ciou_at_0.5']:.3f}/{x['auc']:.3f}" for x in (c, m)]
        lines.append(f"{mode:34s} {cells[0]:>12s} {cells[1]:>12s}")
    listen = loc["listening"]
    if listen and listen["num_samples"]:
        lines += [f"does the map listen? under another class's sound the cIoU drops by "
                  f"{listen['ciou_drop_mismatched']:.3f}, and the clip's own sound puts more of the map on the object "
                  f"in {listen['own_sound_more_mass_on_object']:.2f} of the pairs (a centred prior: 0 and 0)"]
    lines.append(f"heatmaps of {min(4, clips)} held-out clips: {loc['index']}")
    return lines
