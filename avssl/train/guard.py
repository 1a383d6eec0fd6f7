"""A run that goes wrong says so, and stops where asked: a non-finite loss, or embeddings that collapse.

The guard adds no wait on the device to a step. Each step it only updates two counters on the device (steps
with a non-finite loss since the last look, the first of them); it reads them on log steps (``run.log_every``)
and before a checkpoint is written, where the step reads the device anyway.

- **A non-finite loss** (``run.on_divergence``): ``stop`` (the default) ends the run at the next log or
  checkpoint step with one line saying when it began; no checkpoint is written after it, so ``last.pt`` keeps
  the last good state (or the line says that none was written). ``skip_batch`` makes a step with a
  non-finite loss leave the weights, the optimizer's state and the memory bank as they were, decided on the
  device (every process agrees through an all-reduce), and goes on. ``warn`` reports and goes on.
- **Collapsing embeddings** (``run.on_collapse``: ``warn`` by default, ``stop``, ``off``): on log steps, each
  modality's batch embeddings are scored by the standard deviation of the L2-normalized embeddings times
  sqrt(D) (:func:`std_of_l2_normalized`, the centred figure SimSiam and lightly monitor: about 1 for
  embeddings spread over the sphere, 0 when they all coincide). The figure is judged only once warm-up has
  ended and the memory bank has been filled once (before that, NCE with a partition estimate fixed at step 1
  has no active negatives and a fresh network's embeddings share one direction: neither is a collapse), over
  a window: a modality collapses when at least 3/4 of its last ``run.collapse_window`` judged log steps are
  below ``run.collapse_std``. The event names the modality. Under ``stop``, checkpoints are held while the
  last judged figure is below the threshold.

Every event is a row of ``metrics.jsonl`` (``"kind": "event"``); the figures are in every training row
(``emb_std_video``, ``emb_std_audio``; beside them, not judged, the effective rank of each centred batch,
``emb_rank_*``: over how many directions the embeddings' differences spread).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import distributed as dist

__all__ = ["DivergenceGuard", "RunDiverged", "effective_rank", "std_of_l2_normalized"]

WINDOW_SHARE = 0.75  # of a full window below the threshold: a collapse


class RunDiverged(RuntimeError):
    """The run stopped because it diverged; the message says what and when."""


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` float embeddings; per-location maps ``(B, D, ...)`` averaged over their locations."""
    x = x.detach().float()
    return x.flatten(2).mean(2) if x.dim() > 2 else x


def std_of_l2_normalized(x: torch.Tensor) -> torch.Tensor:
    """The mean over dimensions of the batch's standard deviation of the L2-normalized rows of ``x``, times
    sqrt(D): near 1 for embeddings spread over the sphere, 0 for embeddings that coincide (a 0-d tensor on
    ``x``'s device; nothing is read)."""
    z = F.normalize(_rows(x), dim=1)
    if len(z) < 2:
        return z.new_ones(())
    return z.std(0).mean() * math.sqrt(z.shape[1])


def effective_rank(x: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the normalized singular values of the centred, L2-normalized batch (Roy & Vetterli, 2007):
    how many directions the batch's differences spread over (a 0-d tensor on ``x``'s device)."""
    z = F.normalize(_rows(x), dim=1)
    finite = torch.isfinite(z).all()
    s = torch.linalg.svdvals(torch.nan_to_num(z - z.mean(0, keepdim=True), nan=0.0, posinf=0.0, neginf=0.0))
    p = s / s.sum().clamp_min(1e-12)
    rank = torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
    return torch.where(finite, rank, torch.full_like(rank, float("nan")))  # NaN embeddings: no rank (no read)


class DivergenceGuard:
    """See the module's description. ``record(row)`` writes an event (rank 0's metrics); ``arm_step``: the first
    step at which a collapse is judged; ``device``: where the step's loss lives."""

    def __init__(self, on_nonfinite: str, on_collapse: str, threshold: float, window: int, arm_step: int,
                 device: torch.device, record: Callable[[dict[str, Any]], None], steps_per_epoch: int = 1) -> None:
        self.on_nonfinite, self.on_collapse = on_nonfinite, on_collapse
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.threshold, self.window, self.arm_step = threshold, max(1, window), arm_step
        self.record = record
        self.bad = torch.zeros((), dtype=torch.int64, device=device)  # steps with a non-finite loss since the last look
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.judged: dict[str, deque[float]] = {}
        self.suspect = False  # the last judged figure of some modality was below the threshold
        self.events = 0

    @property
    def skips(self) -> bool:
        """Whether a step with a non-finite loss makes no update (``skip_batch``)."""
        return self.on_nonfinite == "skip_batch"

    def finite(self, loss: torch.Tensor) -> torch.Tensor:
        """A 0-d bool on the loss's device: whether the step's loss is finite, on every process when the update
        depends on it (``skip_batch``: all processes apply the same all-reduced gradients). Nothing is read."""
        ok = torch.isfinite(loss.detach()).all()
        if self.skips and dist.world_size() > 1:
            ok = dist.all_reduce(ok.to(torch.float32), "min") > 0
        return ok

    def count(self, step: int, finite: torch.Tensor) -> None:
        """Add the step to the device counters (nothing is read)."""
        bad = (~finite).to(torch.int64)
        self.bad += bad
        self.first_bad.copy_(torch.where((bad > 0) & (self.first_bad < 0), step, self.first_bad))

    def _epoch(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch

    def poll(self, step: int, last_saved: int | None) -> None:
        """Read the counters (every process: one all-reduce), report steps with a non-finite loss since the last
        look and stop under ``stop``; then start counting anew."""
        bad = dist.all_reduce(self.bad.float())
        first = dist.all_reduce(torch.where(self.first_bad < 0, math.inf, self.first_bad.float()), "min")
        bad, first = torch.stack([bad, first]).tolist()
        self.bad.zero_()
        self.first_bad.fill_(-1)
        if bad <= 0:
            return
        first = int(first)
        what = ("non-finite loss" if bad == 1 and first == step
                else f"non-finite loss at {int(bad)} step(s) from step {first}")
        if self.on_nonfinite == "skip_batch":
            what += " (those batches made no update)"
        self._event(what, first, float("nan"), self.on_nonfinite, step, last_saved)

    def watch(self, step: int, embeddings: dict[str, torch.Tensor], last_saved: int | None) -> dict[str, float]:
        """On a log step: each modality's :func:`std_of_l2_normalized` (mean over processes), judged when armed;
        returns the figures for the log row."""
        if not embeddings or self.on_collapse == "off":
            return {}
        names = sorted(embeddings)
        both = dist.all_reduce_mean(torch.stack([std_of_l2_normalized(embeddings[n]) for n in names]
                                                + [effective_rank(embeddings[n]) for n in names])).tolist()
        figures = both[: len(names)]
        row = {f"emb_std_{n}": v for n, v in zip(names, figures)}
        row.update({f"emb_rank_{n}": v for n, v in zip(names, both[len(names):])})  # shown, not judged
        if step < self.arm_step:
            return row
        self.suspect = False
        for name, value in zip(names, figures):
            seen = self.judged.setdefault(name, deque(maxlen=self.window))
            seen.append(value)
            below = sum(v < self.threshold for v in seen)
            self.suspect = self.suspect or value < self.threshold
            if len(seen) == self.window and below >= WINDOW_SHARE * self.window:
                seen.clear()
                self._event(f"{name} embeddings collapsed: their spread (std of the L2-normalized embeddings x "
                            f"sqrt(D)) was below {self.threshold} at {below} of the last {self.window} log steps",
                            step, value, self.on_collapse, step, last_saved)
        return row

    def holds_checkpoint(self) -> bool:
        """Under ``run.on_collapse: stop``, no checkpoint while a collapse may be building up (the last judged figure
        below the threshold), so that ``last.pt`` keeps the state before it."""
        return self.on_collapse == "stop" and self.suspect

    def _event(self, what: str, step: int, value: float, action: str, now: int, last_saved: int | None) -> None:
        self.events += 1
        epoch = self._epoch(step)
        self.record({"kind": "event", "event": what, "step": step, "epoch": epoch,
                     "value": value if math.isfinite(value) else None, "action": action, "seen_at_step": now})
        message = f"step {step} (epoch {epoch}): {what}" + (f" ({value:.4g})" if math.isfinite(value) else "")
        if action == "stop":
            kept = (f"last.pt keeps step {last_saved}, the last state saved before it" if last_saved is not None
                    else "no checkpoint was written before it: nothing to resume from")
            raise RunDiverged(f"{message}; stopped at step {now}; {kept}")
        if dist.is_main():
            print(f"warning: {message}; going on (run.{'on_divergence' if 'non-finite' in what else 'on_collapse'}="
                  f"{action})", flush=True)
