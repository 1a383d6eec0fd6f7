"""Classifiers on a video encoder for fine-tuning and linear evaluation: a linear layer on the pooled feature
(full fine-tuning, or a batch-normalized linear probe on the frozen encoder), and one batch-normalized linear
probe per stage on its max-pooled map (the released Kinetics linear protocol)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .video import R2Plus1D

__all__ = ["StageProbe", "VideoClassifier", "make_classifier"]


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


def make_classifier(encoder: R2Plus1D, num_classes: int, mode: Literal["full", "linear", "stages"],
                    dropout: float = 0.5, stage_grids: list[int] | None = None, encoder_bn: str = "eval") -> nn.Module:
    """``full``: the whole network trains; ``linear``: a batch-normalized probe on the frozen encoder's pooled
    feature; ``stages``: a probe per stage (:class:`StageProbe`)."""
    if mode == "stages":
        return StageProbe(encoder, num_classes, stage_grids or [12, 8, 6, 4], encoder_bn)
    return VideoClassifier(encoder, num_classes, dropout, mode == "linear", encoder_bn)
