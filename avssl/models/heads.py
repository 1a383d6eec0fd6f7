"""Projection heads into the shared embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """MLP on the last dimension -> L2-normalized embedding; works per location on channels-last maps.

    ``dims`` lists every layer's output width (the last is the embedding), e.g. the released AVID heads
    ``[512, 512, 128]``; without it: ``[hidden or in_dim, out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None,
                 dims: list[int] | None = None, out_bn: bool = False) -> None:
        """``out_bn``: batch-normalize the output (no affine) before the L2 normalization, so embeddings are
        centred over the batch (and its locations) from the first step; contrastive training from scratch
        within a batch otherwise starts with all embeddings pointing one way."""
        super().__init__()
        dims = list(dims) if dims else [hidden or in_dim, out_dim]
        layers: list[nn.Module] = []
        for i, d in enumerate(dims):
            layers.append(nn.Linear(in_dim, d))
            if i < len(dims) - 1:
                layers.append(nn.ReLU(inplace=True))
            in_dim = d
        self.mlp = nn.Sequential(*layers)
        self.out_bn = nn.BatchNorm1d(in_dim, affine=False) if out_bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(x)
        if self.out_bn is not None:
            y = self.out_bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)
        return F.normalize(y, dim=-1)

