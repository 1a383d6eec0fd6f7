"""In-batch contrastive localization loss (EZ-VSL's form): each clip's video is scored against every sound
of the batch by its best-matching location (max over locations), and InfoNCE runs in both directions
(video -> the batch's sounds, sound -> the batch's videos). No memory bank.

Sounds of one kind are near-identical, so an in-batch softmax counts clips of the same kind as negatives
(false negatives, FNAC's subject). With ``false_negative_threshold``, pairs whose sounds are that similar
(cosine of the audio embeddings) are left out of each other's negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .avid import LossConfig, _locations, pool_locations

__all__ = ["InBatchLoss"]


class InBatchLoss(nn.Module):
    """``video`` ``(B, D, H, W)`` per-location (or ``(B, D)`` pooled) and ``audio`` ``(B, D)`` unit-norm
    embeddings of the same clips, row by row -> (loss, terms). Per process: under DDP each process contrasts
    its own batch."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, video: torch.Tensor, audio: torch.Tensor, index: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        locs = _locations(video)
        locs = video[:, None] if locs is None else locs  # (B, L, D)
        sim = torch.einsum("bld,kd->bkl", locs, audio)  # video b, sound k, location l
        logits = pool_locations(sim, self.cfg.location_topk) / self.cfg.temperature
        n = len(audio)
        target = torch.arange(n, device=audio.device)
        masked = torch.zeros(n, n, dtype=torch.bool, device=audio.device)
        if self.cfg.false_negative_threshold is not None:
            with torch.no_grad():
                masked = (audio @ audio.T > self.cfg.false_negative_threshold) & ~torch.eye(
                    n, dtype=torch.bool, device=audio.device)
            logits = logits.masked_fill(masked, float("-inf"))
        v2a = F.cross_entropy(logits, target)
        a2v = F.cross_entropy(logits.T, target)
        loss = 0.5 * (v2a + a2v)
        return loss, {"v2a": v2a.detach(), "a2v": a2v.detach(), "false_negatives_per_clip": masked.sum() / n}

    def update(self, index: torch.Tensor, video: torch.Tensor, audio: torch.Tensor,
               keep: torch.Tensor | None = None) -> None:
        """Nothing to keep between steps."""
