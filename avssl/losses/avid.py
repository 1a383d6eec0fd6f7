"""AVID: audio-visual instance discrimination against a memory bank (Morgado et al., CVPR 2021).

Cross-modal terms contrast a video embedding with the *audio* memory (its own clip's audio slot is
the positive, other instances' slots are negatives) and vice versa; within-modal terms contrast
with the same modality's memory. ``xmodal``/``wmodal`` weight them: Cross-AVID (1, 0), Self-AVID
(0, 1), Joint-AVID (1, 1). Two forms: ``nce`` (noise-contrastive estimation with a fixed partition
estimate, as in the paper) and ``infonce`` (softmax cross-entropy over positive and negatives).

``av_pool`` says how a video meets an audio: ``mean`` compares the audio with the embedding of the
pooled feature map (AVID); ``max`` takes per-location video embeddings ``(B, D, H, W)`` and scores a
video against an audio by its best-matching location (multiple-instance learning, as in EZ-VSL), so
that the locations of the sounding object are the ones pulled towards its sound. The video memory
then keeps, for each instance, the embedding of the location that matched its own audio best.

Two options for per-location video, against silent objects and bright backgrounds:

- ``av_negatives: own`` scores a clip against other clips' sounds at the location its own sound chose,
  not at its best location for each of them. With ``max``, a silent object of another kind in the frame is
  pushed away from its own kind's sound whenever that sound is drawn as a negative, the opposite of what
  the clips where it sounds teach. Measured on composed clips, it loses the localization (docs/results.md):
  the location that wins need not be the object's when no other location meets the other sounds.
- ``frame_negatives: q`` adds one hard negative per clip, from its own frame: the mean similarity to its own
  sound over the share ``q`` of locations that match it least (as "Localizing Visual Sounds the Hard Way",
  Chen et al., 2021, contrasts a frame's background with its sounding region), so that the map under a clip's
  own sound is dark away from the source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import ConfigError
from ..distributed import all_reduce_mean
from .memory import MemoryBank, sample_negatives

__all__ = ["AVIDLoss", "LossConfig", "best_location", "contrast", "pool_locations"]


@dataclass
class LossConfig:
    # avid, cma: against a memory bank; batch: InfoNCE within the batch, both directions (losses/batch.py);
    # ezvsl, slavc: the field's localizers' objectives, in-batch (losses/localizers.py; temperature is their tau)
    kind: Literal["avid", "cma", "batch", "ezvsl", "slavc"] = "avid"
    # video-audio similarity: the pooled video ("mean"), the best location ("max"), or the mean of the best
    # av_topk locations ("topk": a softer multiple-instance pooling that rewards a whole object, not an edge)
    av_pool: Literal["mean", "max", "topk"] = "mean"
    av_topk: int = 4
    form: Literal["nce", "infonce"] = "nce"
    num_negatives: int = 1024
    temperature: float = 0.07
    momentum: float = 0.5  # memory bank
    xmodal: float = 1.0
    wmodal: float = 0.0
    # CMA
    cma_topk: int = 32
    cma_every: int = 1  # recompute positive sets every N epochs
    cma_chunk: int = 1024  # rows compared with the whole memory at once: 2 x chunk x N floats
    cma_wmodal: float = 1.0  # weight of the within-modal positive-set term
    cma_start_epoch: int = 0  # epochs of plain AVID before agreement is used
    # "set": one softmax over the instance and its positive set against random negatives (ours);
    # "nce": the released AVID-CMA form: NCE of each positive against negatives drawn outside the positive
    # set, averaged over the set, with cma_negatives of them in the within-modal term
    cma_form: Literal["set", "nce"] = "set"
    cma_negatives: int | None = None  # within-modal negatives for cma_form nce (released: 64); None: num_negatives
    # NCE partition estimate Z, fixed once estimated: "per_term" (ours: one per term, from its first batch's
    # positive and negative scores) or "shared" (released: the mean exp(negative score) of the first term's first
    # batch, used by every term, and restored with the memory when a run starts from another, e.g. CMA from AVID)
    nce_partition: Literal["per_term", "shared"] = "per_term"
    # batch: pairs whose audio embeddings are more similar than this are not each other's negatives; None: all are
    false_negative_threshold: float | None = None
    # per-location video (av_pool max/topk) against a memory bank: where a clip meets other clips' sounds, at its
    # best location for each ("max") or at the location its own sound chose ("own"); and the share of a frame's
    # locations, least like its own sound, whose mean joins its negatives (0: none)
    av_negatives: Literal["max", "own"] = "max"
    frame_negatives: float = 0.0

    def __post_init__(self) -> None:
        spatial = ("loss.av_negatives: own" if self.av_negatives == "own" else None,
                   "loss.frame_negatives" if self.frame_negatives else None)
        for key in filter(None, spatial):
            if self.av_pool == "mean":
                raise ConfigError(f"{key} needs per-location video (loss.av_pool: max or topk), not mean")
            if self.kind == "batch":
                raise ConfigError(f"{key} applies to the memory-bank losses (loss.kind: avid or cma), not batch")
        if not 0.0 <= self.frame_negatives < 1.0:
            raise ConfigError(f"loss.frame_negatives: a share of locations in [0, 1), got {self.frame_negatives}")
        if self.cma_form == "nce" and self.form != "nce":
            raise ConfigError("loss.cma_form: nce needs loss.form: nce (the released CMA scores its positive sets "
                              "by NCE against the same partition estimate)")

    @property
    def location_topk(self) -> int | None:
        """How many best locations a clip's similarity to a sound averages (None: the best one, or pooled video)."""
        return self.av_topk if self.av_pool == "topk" else None


def nce_loss(pos: torch.Tensor, neg: torch.Tensor, log_z: torch.Tensor, size: int) -> torch.Tensor:
    """NCE with uniform noise ``1/size``: ``pos (B,)`` or ``(B, P)`` (a positive set: its terms are
    averaged, as in the released CMA), ``neg (B, K)`` are logits (similarity / t)."""
    k = neg.shape[1]
    log_noise = math.log(k / size)  # log(K * Pn)

    def log_h(s: torch.Tensor) -> torch.Tensor:  # log P(data | x), P(x) = exp(s) / Z
        return -F.softplus(log_noise - (s - log_z))

    def log_1mh(s: torch.Tensor) -> torch.Tensor:
        return -F.softplus((s - log_z) - log_noise)

    pos_term = log_h(pos) if pos.dim() == 1 else log_h(pos).mean(dim=1)
    return -(pos_term + log_1mh(neg).sum(dim=1)).mean()


def infonce_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    logits = torch.cat([pos[:, None], neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))


def pool_locations(sim: torch.Tensor, topk: int | None = None) -> torch.Tensor:
    """Similarities per location ``(..., L)`` -> ``(...)``: the best (``topk`` None or 1), or the mean of the best
    ``topk``."""
    if not topk or topk <= 1:
        return sim.amax(-1)
    return sim.topk(min(topk, sim.shape[-1]), dim=-1).values.mean(-1)


def contrast(
    emb: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, neg_index: torch.Tensor, temperature: float,
    topk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``emb`` against its own slot (``index (B,)``) or a set of slots (``index (B, P)``) and the
    sampled negative slots of ``bank``. ``emb`` is ``(B, D)``, or ``(B, L, D)`` locations, of which each
    slot's logit takes the best (the max over locations, or the mean of the best ``topk``)."""
    if emb.dim() == 3:
        pos = pool_locations(torch.einsum("bld,b...d->b...l", emb, bank[index]), topk) / temperature
        neg = pool_locations(torch.einsum("bld,bkd->bkl", emb, bank[neg_index]), topk) / temperature
        return pos, neg
    pos = torch.einsum("bd,b...d->b...", emb, bank[index]) / temperature
    neg = torch.einsum("bd,bkd->bk", emb, bank[neg_index]) / temperature
    return pos, neg


def frame_negative(locs: torch.Tensor, audio: torch.Tensor, share: float) -> torch.Tensor:
    """``(B,)``: each clip's mean similarity to its own ``audio (B, D)`` over the ``share`` of its locations
    ``(B, L, D)`` that match it least (at least one location)."""
    sim = torch.einsum("bld,bd->bl", locs, audio)
    k = max(1, int(round(share * sim.shape[1])))
    return (-(-sim).topk(k, dim=1).values).mean(1)


def _locations(video: torch.Tensor) -> torch.Tensor | None:
    """``(B, D, H, W)`` per-location embeddings -> ``(B, H*W, D)``; None for pooled ``(B, D)``."""
    return rearrange(video, "b d h w -> b (h w) d") if video.dim() > 2 else None


def best_location(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """The video embedding ``(B, D)`` of each clip: itself when pooled, else the embedding of the location
    most similar to the clip's own audio (what the memory bank keeps with ``av_pool: max``)."""
    locs = _locations(video)
    if locs is None:
        return video
    with torch.no_grad():
        best = torch.einsum("bld,bd->bl", locs, audio).argmax(1)
    return locs[torch.arange(len(locs), device=locs.device), best]


class AVIDLoss(nn.Module):
    """Returns the loss and a dict of its terms; call ``memory.update`` after the optimizer step."""

    def __init__(self, num_instances: int, dim: int, cfg: LossConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg = cfg or LossConfig()
        self.memory = MemoryBank(num_instances, dim, cfg.momentum, seed)
        self.num_negatives = min(cfg.num_negatives, num_instances - 1)
        # log of the NCE partition estimate per (embedding, bank) pair; set from the first batch.
        self.register_buffer("log_z", torch.full((4,), float("nan")))
        self._z_known: list[bool] | None = None  # which estimates are set, read from log_z once (not every step)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._z_known = None  # a checkpoint's estimates: read them again

    def _term(self, slot: int, emb, bank, index, neg_index, extra: torch.Tensor | None = None) -> torch.Tensor:
        """One term; ``extra (B,)``: one more negative similarity per row (a frame's own hard negative)."""
        pos, neg = contrast(emb, bank, index, neg_index, self.cfg.temperature, self.cfg.location_topk)
        if extra is not None:
            neg = torch.cat([extra[:, None] / self.cfg.temperature, neg], dim=1)
        if self.cfg.form == "infonce":
            return infonce_loss(pos, neg)
        shared = self.cfg.nce_partition == "shared"
        slot = 0 if shared else slot
        if self._z_known is None:
            self._z_known = (~torch.isnan(self.log_z)).tolist()
        if not self._z_known[slot]:
            self._z_known[slot] = True
            with torch.no_grad():  # Z ~ N * E[exp(s)], estimated once (Wu et al., 2018)
                if shared:  # released: the mean over processes of each batch's mean exp(negative score)
                    self.log_z[slot] = all_reduce_mean(neg.float().exp().mean()).log() + math.log(self.memory.size)
                else:
                    scores = torch.cat([pos.reshape(len(pos), -1), neg], 1).float().flatten()
                    est = torch.logsumexp(scores, 0) - math.log(scores.numel()) + math.log(self.memory.size)
                    self.log_z[slot] = all_reduce_mean(est)
        return nce_loss(pos.float(), neg.float(), self.log_z[slot], self.memory.size)

    @torch.no_grad()
    def update(self, index: torch.Tensor, video: torch.Tensor, audio: torch.Tensor,
               keep: torch.Tensor | None = None) -> None:
        """After the optimizer step: the memory takes the step's embeddings (a clip's best location when per
        location); not where ``keep`` is false (a skipped step)."""
        self.memory.update(index, best_location(video, audio), audio, keep)

    def forward(
        self, video: torch.Tensor, audio: torch.Tensor, index: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        neg = sample_negatives(index, self.memory.size, self.num_negatives, generator)
        return self._instance_loss(video, audio, index, neg)

    def _instance_loss(
        self, video: torch.Tensor, audio: torch.Tensor, index: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, mem = self.cfg, self.memory
        terms: dict[str, torch.Tensor] = {}
        locs, video = _locations(video), best_location(video, audio)
        if cfg.xmodal:
            hard = None if locs is None or not cfg.frame_negatives else frame_negative(
                locs, mem.audio[index], cfg.frame_negatives)
            at = video if locs is None or cfg.av_negatives == "own" else locs
            terms["v2a"] = self._term(0, at, mem.audio, index, neg, hard)
            terms["a2v"] = self._term(1, audio, mem.video, index, neg)
        if cfg.wmodal:
            terms["v2v"] = self._term(2, video, mem.video, index, neg)
            terms["a2a"] = self._term(3, audio, mem.audio, index, neg)
        loss = video.new_zeros(())
        for name, t in terms.items():
            loss = loss + (cfg.xmodal if name in ("v2a", "a2v") else cfg.wmodal) * t
        return loss, {k: v.detach() for k, v in terms.items()}  # read on log steps only
