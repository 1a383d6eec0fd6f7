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
                 dims: list[int] | None = None) -> None:
        super().__init__()
        dims = list(dims) if dims else [hidden or in_dim, out_dim]
        layers: list[nn.Module] = []
        for i, d in enumerate(dims):
            layers.append(nn.Linear(in_dim, d))
            if i < len(dims) - 1:
                layers.append(nn.ReLU(inplace=True))
            in_dim = d
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)

