"""Cross-Modal Agreement (CMA): instances whose clips agree in *both* modalities become extra positives.

An instance's positive set is its top-k neighbours by ``min(video similarity, audio similarity)`` in
the memory bank (computed in chunks that fit memory, refreshed every few epochs). The loss is AVID's
cross-modal instance term plus a within-modal term in which the positive set (and the instance
itself) is contrasted against random negatives of the same modality's memory.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import distributed as dist
from .avid import AVIDLoss, LossConfig, best_location
from .batch import InBatchLoss
from .localizers import EZVSLLoss, SLAVCLoss
from .memory import sample_negatives, sample_negatives_outside

__all__ = ["CMALoss", "agreement_topk", "build_loss", "positive_set_loss"]


@torch.no_grad()
def agreement_topk(
    video: torch.Tensor, audio: torch.Tensor, k: int, chunk: int = 1024, rows: range | None = None
) -> torch.Tensor:
    """Indices of each row's top-k other rows by ``min(v_i.v_j, a_i.a_j)``: ``(len(rows), k)``.

    ``chunk`` rows are compared with all N at once (two ``chunk x N`` float matrices in memory).
    """
    n = video.shape[0]
    k = min(k, n - 1)
    rows = rows if rows is not None else range(n)
    out = torch.empty(len(rows), k, dtype=torch.long, device=video.device)
    for s in range(rows.start, rows.stop, chunk):
        e = min(rows.stop, s + chunk)
        agree = torch.minimum(video[s:e] @ video.T, audio[s:e] @ audio.T)
        agree[torch.arange(e - s), torch.arange(s, e)] = -float("inf")  # not itself
        out[s - rows.start : e - rows.start] = agree.topk(k, dim=1).indices
    return out


def positive_set_loss(
    emb: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, positives: torch.Tensor,
    neg_index: torch.Tensor, temperature: float,
) -> torch.Tensor:
    """``-log(sum_pos exp(s) / (sum_pos exp(s) + sum_neg exp(s)))``; positives include the instance."""
    pos_idx = torch.cat([index[:, None], positives[index]], dim=1)
    pos = torch.einsum("bd,bkd->bk", emb, bank[pos_idx]) / temperature
    neg = torch.einsum("bd,bkd->bk", emb, bank[neg_index]) / temperature
    return (torch.logsumexp(torch.cat([pos, neg], 1), 1) - torch.logsumexp(pos, 1)).mean()


class CMALoss(AVIDLoss):
    def __init__(self, num_instances: int, dim: int, cfg: LossConfig | None = None, seed: int = 0) -> None:
        cfg = cfg or LossConfig(kind="cma")
        super().__init__(num_instances, dim, cfg, seed)
        k = min(cfg.cma_topk, num_instances - 1)
        self.register_buffer("positives", torch.full((num_instances, k), -1, dtype=torch.long))
        self._has_positives: bool | None = None  # read from the buffer once, not every step

    @property
    def has_positives(self) -> bool:
        if self._has_positives is None:
            self._has_positives = bool((self.positives >= 0).all())
        return self._has_positives

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._has_positives = None

    def update_positives(self) -> None:
        """Recompute positive sets from the current memory; each process computes a share of the rows
        and all receive the whole table."""
        n, k = self.positives.shape
        world, rank = dist.world_size(), dist.rank()
        share = -(-n // world)  # ceil
        rows = range(min(n, rank * share), min(n, (rank + 1) * share))
        mine = torch.full((share, k), -1, dtype=torch.long, device=self.positives.device)
        mine[: len(rows)] = agreement_topk(self.memory.video, self.memory.audio, k, self.cfg.cma_chunk, rows)
        self.positives.copy_(dist.all_gather_cat(mine)[:n])
        self._has_positives = None

    def forward(self, video, audio, index, generator=None):
        cfg = self.cfg
        if cfg.cma_form == "nce" and self.has_positives:
            return self._released_form(video, audio, index, generator)
        loss, terms = super().forward(video, audio, index, generator)
        if not self.has_positives or not cfg.cma_wmodal:
            return loss, terms
        neg = sample_negatives(index, self.memory.size, self.num_negatives, generator)
        video = best_location(video, audio)
        v = positive_set_loss(video, self.memory.video, index, self.positives, neg, cfg.temperature)
        a = positive_set_loss(audio, self.memory.audio, index, self.positives, neg, cfg.temperature)
        terms.update(v2v_cma=v.detach(), a2a_cma=a.detach())
        return loss + cfg.cma_wmodal * (v + a), terms


    def _released_form(self, video, audio, index, generator):
        """Instance terms against negatives outside the positive set, plus each modality's positive set
        scored by NCE against the first ``cma_negatives`` of those negatives."""
        cfg, mem = self.cfg, self.memory
        pos = self.positives[index]
        k = min(self.num_negatives, mem.size - pos.shape[1] - 1)
        neg = sample_negatives_outside(torch.cat([index[:, None], pos], 1), mem.size, k, generator)
        loss, terms = self._instance_loss(video, audio, index, neg)
        if not cfg.cma_wmodal:
            return loss, terms
        within = neg[:, : cfg.cma_negatives or k]
        v = self._term(2, best_location(video, audio), mem.video, pos, within)
        a = self._term(3, audio, mem.audio, pos, within)
        terms.update(v2v_cma=v.detach(), a2a_cma=a.detach())
        return loss + cfg.cma_wmodal * (v + a), terms


def build_loss(num_instances: int, dim: int, cfg: LossConfig, seed: int = 0) -> nn.Module:
    """AVIDLoss, CMALoss, InBatchLoss, EZVSLLoss or SLAVCLoss by ``cfg.kind``; each has ``update(index, video, audio)`` for after the
    optimizer step."""
    if cfg.kind == "batch":
        return InBatchLoss(cfg)
    if cfg.kind == "ezvsl":
        return EZVSLLoss(cfg.temperature)
    if cfg.kind == "slavc":
        return SLAVCLoss(cfg.temperature)
    return (CMALoss if cfg.kind == "cma" else AVIDLoss)(num_instances, dim, cfg, seed)



