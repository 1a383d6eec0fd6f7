"""Projection heads into the shared embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead"]


def _mlp(in_dim: int, dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, d in enumerate(dims):
        layers.append(nn.Linear(in_dim, d))
        if i < len(dims) - 1:
            layers.append(nn.ReLU(inplace=True))
        in_dim = d
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """MLP on the last dimension -> L2-normalized embedding; works per location on channels-last maps.

    ``dims`` lists every layer's output width (the last is the embedding), e.g. the released AVID heads
    ``[512, 512, 128]``; without it: ``[hidden or in_dim, out_dim]``.

    ``branches`` > 1 (SLAVC's two projections per modality): that many MLPs side by side (``mlp``, ``mlp2``, ...),
    each output normalized, the embedding their concatenation divided by ``sqrt(branches)``: still unit norm, and
    the cosine of two such embeddings is the mean of the branches' cosines (SLAVC's map). :meth:`parts` gives the
    branches' embeddings one by one (SLAVC's loss uses them apart).
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None,
                 dims: list[int] | None = None, out_bn: bool = False, branches: int = 1) -> None:
        """``out_bn``: batch-normalize the output (no affine) before the L2 normalization, so embeddings are
        centred over the batch (and its locations) from the first step; contrastive training from scratch
        within a batch otherwise starts with all embeddings pointing one way."""
        super().__init__()
        dims = list(dims) if dims else [hidden or in_dim, out_dim]
        self.mlp = _mlp(in_dim, dims)
        for k in range(2, branches + 1):
            setattr(self, f"mlp{k}", _mlp(in_dim, dims))
        self.branches = branches
        self.out_bn = nn.BatchNorm1d(dims[-1], affine=False) if out_bn else None

    def _mlps(self) -> list[nn.Module]:
        return [self.mlp] + [getattr(self, f"mlp{k}") for k in range(2, self.branches + 1)]

    def parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each branch's unit-norm embedding of ``x`` (one for a plain head)."""
        out = []
        for mlp in self._mlps():
            y = mlp(x)
            if self.out_bn is not None:
                y = self.out_bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)
            out.append(F.normalize(y, dim=-1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join(self.parts(x))

    @staticmethod
    def join(parts: list[torch.Tensor], dim: int = -1) -> torch.Tensor:
        """The branches' unit-norm embeddings as one: side by side along ``dim``, divided by ``sqrt(branches)``."""
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim) / math.sqrt(len(parts))
