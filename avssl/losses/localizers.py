"""The field's localization objectives on per-location video embeddings, with in-batch negatives (no memory bank).

- :class:`EZVSLLoss` (Mo and Morgado, ECCV 2022; stoneMo/EZ-VSL ``max_xmil_loss``): a frame and a sound scored by
  the frame's best-matching location (cosine over ``temperature``), cross-entropy over the batch's sounds for each
  frame and over the batch's frames for each sound, the two summed.
- :class:`SLAVCLoss` (Mo and Morgado, NeurIPS 2022; stoneMo/SLAVC): two projections per modality and momentum
  copies of both encoders as targets. For each frame and sound, the first projection's cosines, over the batch's
  sounds, give a softmax across sounds; the second's, over the frame's locations, a softmax across locations; the
  frame-sound score is the log of their product summed over locations. The frames' trained embeddings meet the
  momentum sounds, and the momentum frames meet the trained sounds; the two cross-entropies are summed.

Both are per process: under DDP each process contrasts its own batch, as their code does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EZVSLLoss", "SLAVCLoss"]


class EZVSLLoss(nn.Module):
    """``video`` ``(B, D, H, W)`` unit-norm per-location and ``audio`` ``(B, D)`` unit-norm embeddings of the same
    clips, row by row -> (loss, terms)."""

    def __init__(self, temperature: float = 0.03) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, video: torch.Tensor, audio: torch.Tensor, index: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = torch.einsum("nchw,mc->nmhw", video, audio).flatten(-2).amax(-1) / self.temperature
        target = torch.arange(len(audio), device=audio.device)
        v2a = F.cross_entropy(logits, target)
        a2v = F.cross_entropy(logits.T, target)
        return v2a + a2v, {"v2a": v2a.detach(), "a2v": a2v.detach()}

    def update(self, index: torch.Tensor, video: torch.Tensor, audio: torch.Tensor,
               keep: torch.Tensor | None = None) -> None:
        """Nothing to keep between steps."""


def _scores(img: list[torch.Tensor], aud: list[torch.Tensor], tau: float) -> torch.Tensor:
    """SLAVC's frame-sound scores ``(N, M)`` from two projections' per-location frames ``(N, D, H, W)`` and sounds
    ``(M, D)``: log of (softmax over sounds of the first) x (softmax over locations of the second), summed over
    locations."""
    across_sounds = F.softmax(torch.einsum("nchw,mc->nmhw", img[0], aud[0]).flatten(-2) / tau, dim=1)
    across_places = F.softmax(torch.einsum("nchw,mc->nmhw", img[1], aud[1]).flatten(-2) / tau, dim=2)
    return torch.log((across_sounds * across_places).sum(2))


class SLAVCLoss(nn.Module):
    """``video``, ``audio``: the trained encoders' per-branch embeddings (lists of two: ``(B, D, H, W)``, ``(B, D)``);
    ``video_target``, ``audio_target``: the momentum encoders' (no gradient) -> (loss, terms)."""

    def __init__(self, temperature: float = 0.03) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, video: list[torch.Tensor], audio: list[torch.Tensor], video_target: list[torch.Tensor],
                audio_target: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if len(video) != 2 or len(audio) != 2:
            raise ValueError("SLAVC's loss needs two projections per modality (model.head_branches: 2)")
        tau = self.temperature
        i2a = _scores(video, audio_target, tau)
        a2i = _scores(video_target, audio, tau)
        target = torch.arange(len(audio[0]), device=audio[0].device)
        v2a, a2v = F.cross_entropy(i2a, target), F.cross_entropy(a2i, target)
        return a2v + v2a, {"v2a": v2a.detach(), "a2v": a2v.detach()}

    def update(self, index: torch.Tensor, video: torch.Tensor, audio: torch.Tensor,
               keep: torch.Tensor | None = None) -> None:
        """Nothing to keep between steps (the momentum copies are the model's)."""
