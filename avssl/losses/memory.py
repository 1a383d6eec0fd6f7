"""Memory bank: one unit-norm slot per training instance and modality, updated with momentum."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_gather_cat

__all__ = ["MemoryBank", "sample_negatives", "sample_negatives_outside"]


def sample_negatives(index: torch.Tensor, size: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, k)`` uniformly random instance ids in ``[0, size)``, never the row's own ``index``."""
    if size < 2:
        raise ValueError("need at least 2 instances to draw negatives")
    draw = _to(torch.randint(0, size - 1, (index.shape[0], k), generator=generator, device="cpu"), index.device)
    return draw + (draw >= index[:, None]).long()  # skip the instance itself


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU draw (the same numbers on every device) moved to ``device`` without making the host wait: from pinned
    memory, non-blocking, on CUDA."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def sample_negatives_outside(
    exclude: torch.Tensor, size: int, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(B, k)`` uniformly random ids in ``[0, size)`` outside each row of ``exclude (B, E)`` (distinct ids)."""
    ex = exclude.sort(dim=1).values
    draw = _to(torch.randint(0, size - ex.shape[1], (ex.shape[0], k), generator=generator, device="cpu"), ex.device)
    ref = ex - torch.arange(ex.shape[1], device=ex.device)  # a draw >= ref[j] skips past the j-th excluded id
    return draw + (draw[:, :, None] >= ref[:, None, :]).sum(-1)


class MemoryBank(nn.Module):
    """Buffers ``video`` and ``audio`` of shape ``(N, D)``; part of the state dict (saved in checkpoints)."""

    def __init__(self, size: int, dim: int, momentum: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.momentum = momentum
        self.register_buffer("video", F.normalize(torch.randn(size, dim, generator=g), dim=1))
        self.register_buffer("audio", F.normalize(torch.randn(size, dim, generator=g), dim=1))

    @property
    def size(self) -> int:
        return self.video.shape[0]

    @torch.no_grad()
    def update(self, index: torch.Tensor, video: torch.Tensor, audio: torch.Tensor,
               keep: torch.Tensor | None = None) -> None:
        """``slot = normalize(m * slot + (1 - m) * embedding)`` for the instances of every process; ``keep`` (a 0-d
        bool on the device, the same on every process): false leaves the slots as they are (a skipped step)."""
        index = all_gather_cat(index)
        for bank, emb in ((self.video, video), (self.audio, audio)):
            emb = all_gather_cat(emb.detach().to(bank.dtype))
            old = bank[index]
            new = F.normalize(self.momentum * old + (1 - self.momentum) * emb, dim=1)
            bank[index] = new if keep is None else torch.where(keep, new, old)
