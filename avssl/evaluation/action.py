"""Action recognition accuracy of a classifier on labeled test videos: video-level (softmax averaged over
uniformly spaced clips and crops), clip-level (clips at random times), per class, the confusion matrix, and
the mean over official splits."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .. import distributed as dist
from ..data.datasets import AVClipDataset, DataConfig, av_collate
from ..data.labeled import LabeledDataConfig, as_data_config, check_disjoint, labeled_entries

__all__ = ["evaluate_action", "evaluate_test_split", "mean_over_folds"]


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
    stage (:class:`~avssl.models.classifier.StageProbe`) is scored per stage, the last stage's figures at the top level."""
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops}")
    model.eval()
    world, rank = dist.world_size(), dist.rank()
    mine = entries[rank::world]
    dcfg = as_data_config(data, train=False)
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


def mean_over_folds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result per official split (each with its ``split``) -> their mean top-1/top-5/clip-level/chance,
    with the results kept under ``folds``."""
    splits = [r["split"] for r in results]
    if len(set(splits)) != len(splits):
        raise ValueError(f"folds must be of different splits, got {splits}")
    out: dict[str, Any] = {"splits": splits, "folds": results}
    for key in ("top1", "top5", "clip_top1", "clip_top5", "chance"):
        out[key] = sum(r[key] for r in results) / len(results)
    return out


def evaluate_test_split(model: nn.Module, data: LabeledDataConfig, classes: list[str], out: Path,
                        device: torch.device, clips: int | None = None, crops: int = 1) -> dict[str, Any]:
    """:func:`evaluate_action` on the test split of ``data`` (its official files, probed into ``out``), whose
    classes must be the model's (and whose files none of its training split's); the result carries the split and
    the data report."""
    check_disjoint(data)
    entries, test_classes, report = labeled_entries(data, "test", out)
    if test_classes != classes:
        raise ValueError("the test split's classes differ from the checkpoint's")
    result = evaluate_action(model, entries, data, classes, clips or data.test_clips, device, out, crops=crops,
                             clip_clips=data.clip_test_clips)
    return {"split": data.split, **result, "data": report}
