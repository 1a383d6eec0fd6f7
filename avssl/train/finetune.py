"""Supervised fine-tuning of a pretrained video encoder on labeled videos (UCF-101, HMDB-51, Kinetics, a
``path label`` list, class folders): full fine-tuning, or a linear classifier on the frozen encoder; then
video-level evaluation of the test split (softmax averaged over uniformly spaced clips).

Read top to bottom: labeled entries (official annotation files -> probed durations), the classifier
(the pretraining checkpoint's video encoder, or a random one), the loop (the machinery of ``engine.py``:
device, DDP, AMP, atomic ``last.pt`` and resume, metrics, skipped files), and evaluation.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

from .. import distributed as dist
from ..config import from_dict, to_dict
from ..data.clips import ClipConfig
from ..data.collection import build_manifest, read_manifest
from ..data.datasets import AVClipDataset, BatchPreprocess, DataConfig, av_collate
from ..data.formats import read_labeled
from ..data.transforms import VideoAugConfig
from ..models.video import R2Plus1D, VideoEncoderConfig
from .checkpoint import load_checkpoint
from .engine import (
    Checkpointer,
    OptimConfig,
    RunConfig,
    RunLog,
    lr_at,
    make_optimizer,
    optimizer_step,
    setup,
    train_batches,
)

__all__ = ["FinetuneConfig", "VideoClassifier", "evaluate_action", "finetune", "labeled_entries", "load_classifier"]


def _video_only_clip() -> ClipConfig:
    return ClipConfig(audio_duration=0.0)


@dataclass
class LabeledDataConfig:
    format: Literal["kinetics", "ucf101", "hmdb51", "list", "folders"] = "ucf101"
    root: str | None = None  # the videos
    annotations: str | None = None  # the official annotation file or folder (train split for Kinetics/lists)
    test_annotations: str | None = None  # Kinetics and lists: the evaluation CSV/list
    split: int = 1  # UCF-101 / HMDB-51: official split 1-3
    clip: ClipConfig = field(default_factory=_video_only_clip)
    video_aug: VideoAugConfig = field(default_factory=VideoAugConfig)
    clips_per_video: int = 5  # training clips per video per epoch
    test_clips: int = 10  # uniformly spaced clips per test video, softmax averaged
    test_size: int | None = None  # test: short side decoded at and resized to before the centre crop; None: crop
    clip_test_clips: int = 25  # clip-level accuracy: random-time clips per test video (released: 25); 0: none
    num_workers: int = 2
    on_error: Literal["skip", "raise"] = "skip"
    preprocess: Literal["auto", "worker", "device"] = "auto"


@dataclass
class ClassifierModelConfig:
    checkpoint: str | None = None  # an avssl pretraining checkpoint; empty: random initialization
    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)  # used without a checkpoint


@dataclass
class FinetuneSection:
    # full: train everything; linear: frozen encoder (batch norm in eval mode), batch-normalized linear
    # classifier on the pooled feature; stages: frozen encoder, one batch-normalized linear classifier per
    # stage on its max-pooled map (the released Kinetics linear protocol), each reported
    mode: Literal["full", "linear", "stages"] = "full"
    stage_grids: list[int] = field(default_factory=lambda: [12, 8, 6, 4])  # stages: max-pool grid over space
    # linear, stages: the frozen encoder's batch norm while the classifier trains: "eval" (running statistics) or
    # "train" (batch statistics, running ones updated: the released linear evaluation's model.train(True))
    encoder_bn: Literal["eval", "train"] = "eval"
    dropout: float = 0.5  # on the pooled feature
    # full mode: train the classifier alone first, with its own optimizer at the base lr (released: 5 epochs);
    # the main optimizer starts fresh after it
    classifier_warmup_epochs: float = 0.0


@dataclass
class FinetuneConfig:
    data: LabeledDataConfig = field(default_factory=LabeledDataConfig)
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _data_config(d: LabeledDataConfig, train: bool) -> DataConfig:
    """The clip pipeline of AVClipDataset, video only (a file without audio is normal here); test clips are
    decoded at ``test_size`` when it is set."""
    clip, aug = d.clip, d.video_aug
    if not train and d.test_size is not None:
        clip, aug = replace(clip, size=d.test_size), replace(aug, resize=d.test_size)
    return DataConfig(clip=clip, video_aug=aug, missing_audio="silence", on_error=d.on_error,
                      clips_per_video=d.clips_per_video if train else 1, num_workers=d.num_workers,
                      preprocess=d.preprocess)


def labeled_entries(d: LabeledDataConfig, subset: str, work_dir: Path, progress: bool = False
                    ) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """(entries with probe facts and ``label``, class names, report) of a split. Files listed but absent, and
    files that fail to probe, are counted in the report and left out."""
    if not d.root:
        raise ValueError("set data.root (the videos)")
    ann = d.test_annotations if subset == "test" and d.format in ("kinetics", "list") else d.annotations
    if subset == "test" and d.format in ("kinetics", "list") and not ann:
        raise ValueError(f"{d.format}: set data.test_annotations (the evaluation split)")
    root = str(Path(d.root).resolve())
    labeled = read_labeled(d.format, root, ann, d.split, subset)
    lst = work_dir / f"{subset}_files.txt"
    manifest = work_dir / f"{subset}_manifest.jsonl"
    if dist.is_main():
        lst.write_text("".join(e["path"] + "\n" for e in labeled.entries))
        build_manifest(lst, manifest, require_audio=False, progress=progress)
    dist.barrier()
    probed = {r["path"]: r for r in read_manifest(manifest)}
    entries = []
    for e in labeled.entries:
        row = probed.get(str(Path(e["path"]).resolve()))
        if row is not None:
            entries.append({**row, "label": e["label"], "class": e["class"]})
    report = {"listed": len(labeled.entries) + len(labeled.missing), "missing": len(labeled.missing),
              "unreadable": len(labeled.entries) - len(entries), "used": len(entries),
              "missing_examples": labeled.missing[:5]}
    return entries, labeled.classes, report


class VideoClassifier(nn.Module):
    """A video encoder, dropout and a linear classifier on its pooled feature. With ``frozen`` the encoder
    is not trained (its batch norm in eval mode, unless ``encoder_bn`` is "train"), and the classifier is
    batch-normalized (a linear probe on standardized features, as the released linear evaluations do)."""

    def __init__(self, encoder: R2Plus1D, num_classes: int, dropout: float = 0.5, frozen: bool = False,
                 encoder_bn: str = "eval") -> None:
        super().__init__()
        self.encoder = encoder
        self.frozen = frozen
        self.encoder_bn = encoder_bn
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(encoder.out_dim, num_classes)
        self.norm = nn.BatchNorm1d(encoder.out_dim, affine=False) if frozen else nn.Identity()
        if frozen:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.frozen and self.encoder_bn == "eval":
            self.encoder.eval()
        return self

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                feat = self.encoder(video)[1]
        else:
            feat = self.encoder(video)[1]
        return self.fc(self.dropout(self.norm(feat.float())))


class StageProbe(nn.Module):
    """Frozen encoder; for each stage, max-pooling to ``grid x grid`` over space (and all of time), batch
    norm and a linear classifier. Returns one logit tensor per stage."""

    def __init__(self, encoder: R2Plus1D, num_classes: int, grids: list[int], encoder_bn: str = "eval") -> None:
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.encoder_bn = encoder_bn
        widths = list(encoder.cfg.widths)
        if len(grids) != len(widths):
            raise ValueError(f"finetune.stage_grids needs {len(widths)} values, got {grids}")
        self.grids = list(grids)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.BatchNorm1d(w * g * g), nn.Linear(w * g * g, num_classes)) for w, g in zip(widths, grids)
        )

    def train(self, mode: bool = True) -> StageProbe:
        super().train(mode)
        if self.encoder_bn == "eval":
            self.encoder.eval()
        return self

    def forward(self, video: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            maps = self.encoder.stage_maps(video)
        out = []
        for fmap, g, head in zip(maps, self.grids, self.heads):
            pooled = F.adaptive_max_pool3d(fmap.float(), (1, g, g)).flatten(1)
            out.append(head(pooled))
        return out


def _make_model(cfg: FinetuneConfig, encoder: R2Plus1D, num_classes: int) -> nn.Module:
    f = cfg.finetune
    if f.mode == "stages":
        return StageProbe(encoder, num_classes, f.stage_grids, f.encoder_bn)
    return VideoClassifier(encoder, num_classes, f.dropout, f.mode == "linear", f.encoder_bn)


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[VideoClassifier, FinetuneConfig,
                                                                                   list[str]]:
    """(classifier in eval mode, its fine-tuning config, class names) from a fine-tuning checkpoint."""
    ck = load_checkpoint(path)
    cfg = from_dict(FinetuneConfig, ck["config"])
    encoder = R2Plus1D(from_dict(VideoEncoderConfig, ck["video_config"]))
    model = _make_model(cfg, encoder, len(ck["classes"]))
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), cfg, list(ck["classes"])


def build_classifier(cfg: FinetuneConfig, num_classes: int) -> tuple[VideoClassifier, VideoEncoderConfig]:
    """The classifier, with the pretraining checkpoint's video encoder (weights and architecture) when set."""
    video_cfg = cfg.model.video
    state = None
    if cfg.model.checkpoint:
        from .pretrain import PretrainConfig

        ck = load_checkpoint(cfg.model.checkpoint)
        video_cfg = from_dict(PretrainConfig, ck["config"]).model.video
        state = {k[len("video."):]: v for k, v in ck["model"].items() if k.startswith("video.")}
    encoder = R2Plus1D(video_cfg)
    if state is not None:
        encoder.load_state_dict(state)
    return _make_model(cfg, encoder, num_classes), video_cfg


def finetune(cfg: FinetuneConfig, output_dir: str | Path) -> dict[str, Any]:
    """Train on the training split, then evaluate the test split (``eval.json``); returns a summary."""
    rt = setup(cfg.run)
    world, device = rt.world, rt.device
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run, opt_cfg = cfg.run, cfg.optim
    if dist.is_main():
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    # Data: the official split, probed once (durations), as clips of video only
    entries, classes, report = labeled_entries(cfg.data, "train", out, run.progress)
    if dist.is_main():
        (out / "data_report.json").write_text(json.dumps({"train": report}, indent=1))
        if report["missing"] or report["unreadable"]:
            print(f"train split: {report['missing']} listed files missing, {report['unreadable']} unreadable "
                  f"(see {out / 'train_manifest.rejected.jsonl'}); training on {report['used']}", flush=True)
    on_device = cfg.data.preprocess == "device" or (cfg.data.preprocess == "auto" and device.type == "cuda")
    dcfg = _data_config(cfg.data, train=True)
    dataset = AVClipDataset(entries, dcfg, train=True, seed=run.seed, defer=on_device)
    preprocess = BatchPreprocess(dcfg, train=True).to(device) if on_device else None
    steps_per_epoch = len(dataset) // (opt_cfg.batch_size * world)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} clips is fewer than one batch ({opt_cfg.batch_size} x {world} processes)")
    total_steps = steps_per_epoch * opt_cfg.epochs
    if run.max_steps is not None:
        total_steps = min(total_steps, run.max_steps)

    # Model and optimizer: encoder and classifier in separate groups (the classifier may warm up alone)
    torch.manual_seed(run.seed)
    model, video_cfg = build_classifier(cfg, len(classes))
    model = model.to(device)
    if device.type == "cuda" and run.channels_last:
        model.encoder.to(memory_format=torch.channels_last_3d)
    head = model.heads if cfg.finetune.mode == "stages" else model.fc
    groups = [{"params": list(head.parameters()), "name": "classifier"}]
    if cfg.finetune.mode == "full":
        groups.insert(0, {"params": list(model.encoder.parameters()), "name": "encoder"})
    optimizer = make_optimizer(groups, opt_cfg)
    # the classifier's warm-up: its own optimizer at the base lr; the main one starts fresh after it (released)
    warmup_steps = round(cfg.finetune.classifier_warmup_epochs * steps_per_epoch) if cfg.finetune.mode == "full" else 0
    warmup_opt = make_optimizer(list(head.parameters()), opt_cfg) if warmup_steps else None
    scaler = rt.grad_scaler()

    step, skipped_total = 0, 0
    last = out / "last.pt"
    if last.exists():
        ck = load_checkpoint(last)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if warmup_opt is not None:
            warmup_opt.load_state_dict(ck["warmup_optimizer"])
        scaler.load_state_dict(ck["scaler"])
        step, skipped_total = int(ck["step"]), int(ck["skipped_total"])
        torch.set_rng_state(ck["rng_torch"])
        if dist.is_main():
            print(f"resuming from {last} at step {step}", flush=True)
    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)

    def state() -> dict[str, Any]:
        return {"config": to_dict(cfg), "video_config": to_dict(video_cfg), "classes": classes,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "epoch": step // steps_per_epoch, "skipped_total": skipped_total,
                "rng_torch": torch.get_rng_state(),
                **({"warmup_optimizer": warmup_opt.state_dict()} if warmup_opt is not None else {})}

    ckpt = Checkpointer(out, state, run.keep, step)
    log = RunLog(out, run.tensorboard, "finetune")
    if dist.is_main():
        print(f"fine-tuning ({cfg.finetune.mode}) on {len(entries)} videos x {cfg.data.clips_per_video} clips per "
              f"epoch, {len(classes)} classes, {world} process(es) on {device}, {total_steps} steps", flush=True)
    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not (run.progress and dist.is_main()), unit="step")
    t_start, clips_done, last_loss = time.perf_counter(), 0, float("nan")
    model.train()
    for epoch, batch in train_batches(dataset, run, opt_cfg.batch_size, dcfg.num_workers, rt, step, steps_per_epoch,
                                      total_steps):
        warm = step < warmup_steps
        lr = opt_cfg.lr if warm else lr_at(opt_cfg, step, steps_per_epoch)
        opt = warmup_opt if warm else optimizer
        for group in opt.param_groups:
            group["lr"] = lr
        if preprocess is not None:
            video, _ = preprocess(batch, device)
        else:
            video = batch["video"].to(device, non_blocking=True)
        if device.type == "cuda" and run.channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
        label = batch["label"].to(device)
        with rt.autocast():
            outputs = ddp_model(video)
        heads = outputs if isinstance(outputs, list) else [outputs]
        loss = sum(F.cross_entropy(o.float(), label) for o in heads)  # stages: one classifier per stage
        logits = heads[-1]
        optimizer_step(loss, opt, scaler)
        step += 1
        clips_done += len(label) * world
        last_loss = float(loss.detach())
        skipped_total += log.failures(step, batch["failures"])
        bar.update(1)
        if dist.is_main() and (step % run.log_every == 0 or step == total_steps):
            elapsed = time.perf_counter() - t_start
            acc = float((logits.argmax(1) == label).float().mean())
            bar.set_postfix(loss=f"{last_loss:.3f}", acc=f"{acc:.2f}")
            log.row(step, {"step": step, "epoch": epoch, "loss": last_loss, "batch_accuracy": acc, "lr": lr,
                           "classifier_only": warm, "clips_per_s": clips_done / elapsed, "clips": clips_done,
                           "seconds": round(elapsed, 3), "time": time.time(), "skipped_total": skipped_total})
        ckpt.after_step(step, steps_per_epoch, run)
    ckpt.save_last(step)
    bar.close()
    log.close()

    # Evaluation of the test split
    test_entries, test_classes, test_report = labeled_entries(cfg.data, "test", out, run.progress)
    if test_classes != classes:
        raise ValueError("the test split's classes differ from the training split's")
    result = evaluate_action(model, test_entries, cfg.data, classes, cfg.data.test_clips, device, out,
                             clip_clips=cfg.data.clip_test_clips)
    result["data"] = {"train": report, "test": test_report}
    summary = {"steps": step, "final_loss": last_loss, "skipped_files": skipped_total, "output_dir": str(out),
               "top1": result.get("top1"), "clip_top1": result.get("clip_top1")}
    if dist.is_main():
        (out / "eval.json").write_text(json.dumps(result, indent=1))
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


@torch.no_grad()
def _clip_probs(model: nn.Module, entries: list[dict[str, Any]], dcfg: DataConfig, clips: int,
                positions: tuple[float, ...], random_times: bool, device: torch.device, batch_size: int
                ) -> list[torch.Tensor]:
    """Per classifier head: softmax ``(videos, clips, crops, classes)`` of ``clips`` clips per video (uniformly
    spaced, or at seeded random times), each at the crop ``positions`` of one decode."""
    ds = AVClipDataset(entries, dcfg, train=False, clips_per_video=clips, crop_positions=positions,
                       random_times=random_times, seed=0 if random_times else None)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=dcfg.num_workers, collate_fn=av_collate)
    per_head: list[list[torch.Tensor]] = []
    for batch in loader:
        if batch["failures"]:
            raise RuntimeError(f"test clips failed to decode: {batch['failures'][:3]}")
        video = batch["video"].to(device)  # (B, C, T, H, W), or (B, crops, C, T, H, W): one decode per clip
        outputs = model(video.flatten(0, 1) if len(positions) > 1 else video)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        per_head = per_head or [[] for _ in outputs]
        for h, o in enumerate(outputs):
            per_head[h].append(F.softmax(o.float(), dim=1).cpu().view(len(batch["label"]), len(positions), -1))
    return [torch.cat(p).view(len(entries), clips, len(positions), -1) for p in per_head]


@torch.no_grad()
def evaluate_action(model: nn.Module, entries: list[dict[str, Any]], data: LabeledDataConfig,
                    classes: list[str], clips: int, device: torch.device, out: Path | None = None,
                    batch_size: int = 16, crops: int = 1, clip_clips: int = 0) -> dict[str, Any]:
    """Video-level top-1/top-5 with softmax averaged over ``clips`` uniformly spaced clips per video (and
    ``crops`` 3: left, centre and right crops of each), and clip-level top-1/top-5 of ``clip_clips`` clips per
    video at random times, centre crop (the released Clip@1; with 0, of the uniform clips' centre crops). Under
    DDP each process takes every world-th video (none counted twice) and rank 0 gathers the results; with
    ``out`` it writes the per-class CSV and the confusion-matrix PNG there. A model with one classifier per
    stage (:class:`StageProbe`) is scored per stage, the last stage's figures at the top level."""
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops}")
    model.eval()
    world, rank = dist.world_size(), dist.rank()
    mine = entries[rank::world]
    dcfg = _data_config(data, train=False)
    probs: list[list] = []  # per head: per video class probabilities
    labels, clip_hits = [], []
    if mine:
        positions = (0.5,) if crops == 1 else (0.5, 0.0, 1.0)  # centre first: clip-level scores may use it
        video_probs = _clip_probs(model, mine, dcfg, clips, positions, False, device, batch_size)
        probs = [p.flatten(1, 2).mean(1).tolist() for p in video_probs]  # the mean over clips and crops
        clip_level = (_clip_probs(model, mine, dcfg, clip_clips, (0.5,), True, device, batch_size) if clip_clips
                      else [p[:, :, :1] for p in video_probs])
        labels = [int(e["label"]) for e in mine]
        truth = torch.tensor(labels)[:, None, None]
        k = min(5, len(classes))
        clip_hits = [[int((p.argmax(-1) == truth).sum()), int((p.topk(k, -1).indices == truth[..., None]).any(-1).sum())]
                     for p in clip_level]
    gathered = dist.gather_lists([(probs, labels, clip_hits)])
    gathered = [g for g in gathered if g[1]]  # processes with no video hold nothing
    all_labels = torch.tensor([lbl for g in gathered for lbl in g[1]])
    n_heads = len(gathered[0][0])
    per_clip = clip_clips or clips
    heads = []
    for h in range(n_heads):
        all_probs = torch.tensor([p for g in gathered for p in g[0][h]])
        hits = [sum(g[2][h][j] for g in gathered) for j in (0, 1)]
        heads.append(_action_scores(all_probs, all_labels, hits, per_clip, len(classes)))
    confusion = heads[-1].pop("confusion")
    result = {"num_videos": len(all_labels), "clips_per_video": clips, "crops": crops,
              "clip_level": {"clips_per_video": per_clip, "times": "random" if clip_clips else "uniform",
                             "crop": "centre"}, **heads[-1]}
    if n_heads > 1:
        names = [f"stage{i + 1}" for i in range(n_heads)]
        result["stages"] = {nm: {k: v for k, v in hd.items() if k != "confusion"} for nm, hd in zip(names, heads)}
    if out is not None and dist.is_main():
        per_class = [(c, int(confusion[i].sum()), float(confusion[i, i] / confusion[i].sum())
                      if confusion[i].sum() else float("nan")) for i, c in enumerate(classes)]
        with open(out / "per_class_accuracy.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "videos", "accuracy"])
            w.writerows(per_class)
        _confusion_png(confusion, out / "confusion.png", classes)
        result["per_class_csv"] = str(out / "per_class_accuracy.csv")
        result["confusion_png"] = str(out / "confusion.png")
    return result


def _action_scores(probs: torch.Tensor, labels: torch.Tensor, clip_hits: list[int], clips: int, k: int
                   ) -> dict[str, Any]:
    n = len(labels)
    top5 = probs.topk(min(5, k), dim=1).indices
    pred = top5[:, 0]
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones(n, dtype=torch.long), accumulate=True)
    return {"top1": float((pred == labels).float().mean()),
            "top5": float((top5 == labels[:, None]).any(1).float().mean()),
            "clip_top1": clip_hits[0] / (n * clips), "clip_top5": clip_hits[1] / (n * clips),
            "chance": float(torch.bincount(labels, minlength=k).max()) / n, "num_classes": k, "confusion": confusion}


def _confusion_png(confusion: torch.Tensor, path: Path, classes: list[str]) -> None:
    """Rows: true class, columns: predicted; each row's share shaded white (0) to dark blue (all), with class
    names, a title and, while cells are large enough, the counts written in them."""
    from PIL import Image, ImageDraw

    k = confusion.shape[0]
    cell = max(3, min(36, 900 // k))
    labelled = cell >= 12  # room for names beside rows and numbers above columns
    left, top = (150, 36) if labelled else (10, 28)
    img = Image.new("RGB", (max(left + k * cell + 10, 470), top + k * cell + 10), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 6), "confusion: rows = true class, columns = predicted (shade: share of the row)", fill="black")
    frac = (confusion.float() / confusion.sum(1, keepdim=True).clamp_min(1)).tolist()
    for i in range(k):
        if labelled:
            draw.text((6, top + i * cell + cell // 2 - 5), f"{i} {classes[i][:20]}", fill="black")
            draw.text((left + i * cell + 2, top - 13), str(i), fill="black")
        for j in range(k):
            f = frac[i][j]
            shade = (round(255 * (1 - f)), round(255 * (1 - 0.8 * f)), round(255 * (1 - 0.3 * f)))
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=shade, outline=(220, 220, 220) if labelled else None)
            if labelled and cell >= 20 and confusion[i, j]:
                draw.text((box[0] + 3, box[1] + cell // 2 - 5), str(int(confusion[i, j])),
                          fill="white" if f > 0.5 else "black")
    img.save(path)
