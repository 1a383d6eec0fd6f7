"""Frozen features of a pretrained model, and the linear probe trained on them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.datasets import AVClipDataset, av_collate
from ..models.avmodel import AVModel

__all__ = ["embed_batches", "extract", "linear_probe"]


@torch.no_grad()
def extract(model: AVModel, dataset: AVClipDataset, batch_size: int = 32, num_workers: int = 0,
            device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Per-clip video/audio embeddings, pooled video encoder features, labels and video indices."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=av_collate)
    return embed_batches(model, loader, device)


@torch.no_grad()
def embed_batches(model: AVModel, batches: Iterable[dict[str, Any]], device: str | torch.device = "cpu"
                  ) -> dict[str, torch.Tensor]:
    """:func:`extract` over batches already made (``av_collate``'s): a loader, or batches kept in memory."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {"video_emb": [], "audio_emb": [], "video_feat": [], "index": [], "label": []}
    for batch in batches:
        if batch["failures"]:
            raise RuntimeError(f"evaluation clips failed to decode: {batch['failures']}")
        video = batch["video"].to(device)
        feat = model.video(video)[1]
        out["video_feat"].append(feat.cpu())
        out["video_emb"].append(model.video_head(feat).cpu())
        out["audio_emb"].append(model.embed_audio(batch["audio"].to(device)).cpu())
        out["index"].append(batch["index"])
        if "label" in batch:
            out["label"].append(batch["label"])
    return {k: torch.cat(v) for k, v in out.items() if v}


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 epochs: int = 300, lr: float = 0.05, weight_decay: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Logistic regression on standardized frozen features (full batch, Adam); test accuracy."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    clf = torch.nn.Linear(xtr.shape[1], n_cls)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(clf(xtr), train_y).backward()
        opt.step()
    with torch.no_grad():
        acc = float((clf(xte).argmax(1) == test_y).float().mean())
        train_acc = float((clf(xtr).argmax(1) == train_y).float().mean())
    return {"accuracy": acc, "train_accuracy": train_acc, "chance": float(torch.bincount(test_y).max()) / len(test_y)}
