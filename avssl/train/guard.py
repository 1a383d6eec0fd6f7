"""A run that goes wrong stops cleanly: a non-finite loss, or embeddings that collapse to one point.

:class:`DivergenceGuard` watches each step: the loss (every process agrees, so that all stop together) and,
where the job gives them, the batch's embeddings: their mean pairwise cosine above ``run.collapse_cosine`` for
``run.collapse_steps`` steps in a row, after they had been spread (below it: a freshly initialized network's
embeddings often start close together, which is not a collapse), is a collapse. ``run.on_divergence`` says what happens:

- ``stop``: the run ends with one line saying what and when (:class:`RunDiverged`); ``last.pt`` keeps the last
  good state, because checkpoints are not written while the run is suspect (a collapse building up);
- ``skip_batch``: a step with a non-finite loss makes no update (a collapse is reported and the run goes on);
- ``warn``: the event is reported and the run goes on.

Every event is a row of ``metrics.jsonl`` (``"kind": "event"``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import distributed as dist

__all__ = ["DivergenceGuard", "RunDiverged", "mean_pairwise_cosine"]


class RunDiverged(RuntimeError):
    """The run stopped because it diverged; the message says what and when."""


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """The mean cosine similarity between distinct rows of ``x`` ``(B, D, ...)`` (spatial maps averaged first)."""
    x = x.detach().float()
    if x.dim() > 2:
        x = x.flatten(2).mean(2)
    b = x.shape[0]
    if b < 2:
        return 0.0
    x = F.normalize(x, dim=1)
    total = x.sum(0)
    return float(((total @ total) - b) / (b * (b - 1)))


class DivergenceGuard:
    """``check(step, epoch, loss, embeddings)`` -> whether to apply this step's update; ``suspect`` while a
    collapse builds up (no checkpoint then). ``record(row)`` writes an event (rank 0's metrics)."""

    def __init__(self, action: str, cosine: float, steps: int, record: Callable[[dict[str, Any]], None]) -> None:
        self.action, self.cosine, self.steps, self.record = action, cosine, max(1, steps), record
        self.collapsed = 0  # consecutive steps above the threshold
        self.armed = False  # the embeddings have been spread (below the threshold) at least once
        self.events = 0

    @property
    def suspect(self) -> bool:
        return self.collapsed > 0

    def _event(self, what: str, step: int, epoch: int, value: float) -> None:
        self.events += 1
        self.record({"kind": "event", "event": what, "step": step, "epoch": epoch, "value": value,
                     "action": self.action})
        message = f"step {step} (epoch {epoch}): {what} ({value:.4g})"
        if self.action == "stop":
            raise RunDiverged(f"{message}: stopped; last.pt keeps the last good state (run.on_divergence=stop)")
        if dist.is_main():
            print(f"warning: {message}; going on (run.on_divergence={self.action})", flush=True)

    def check(self, step: int, epoch: int, loss: torch.Tensor, embeddings: tuple[torch.Tensor, ...] = ()) -> bool:
        value = float(loss.detach())
        worst = max((mean_pairwise_cosine(e) for e in embeddings), default=0.0)
        # one reduction a step: every process stops, or skips, together, and judges a collapse on the same figure
        bad, worst = dist.all_reduce_mean(torch.tensor([0.0 if math.isfinite(value) else 1.0, worst])).tolist()
        if bad > 0:
            self._event("non-finite loss", step, epoch, value)
            return self.action != "skip_batch"
        if embeddings:
            self.armed = self.armed or worst <= self.cosine
            self.collapsed = self.collapsed + 1 if self.armed and worst > self.cosine else 0
            if self.collapsed >= self.steps:
                self.collapsed = 0
                self._event(f"embeddings collapsed: mean pairwise cosine above {self.cosine} for {self.steps} steps",
                            step, epoch, worst)
        return True
