"""The machinery every training loop shares (pretraining, fine-tuning): run and optimizer configs, the
device and process group, mixed precision, optimizers and learning-rate schedules, the epoch's batches of
each process, metrics and skipped-file logs, and the atomic ``last.pt`` with numbered copies.

The loops themselves stay readable top to bottom in ``pretrain.py`` and ``finetune.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from .. import distributed as dist
from ..data.datasets import av_collate
from .checkpoint import keep_copy, prune_checkpoints, save_atomic

__all__ = ["Checkpointer", "OptimConfig", "RunConfig", "RunLog", "Runtime", "epoch_indices", "lr_at",
           "make_optimizer", "optimizer_step", "resolve_device", "setup", "train_batches"]


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"  # adam: L2 weight decay in the gradient (the released AVID)
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-5
    batch_size: int = 32  # per process
    epochs: int = 10
    warmup_epochs: float = 0.0
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    lr_milestones: list[int] = field(default_factory=list)  # epochs, for "step"
    lr_gamma: float = 0.1


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: bool = True  # mixed precision (CUDA only)
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = True  # CUDA only
    log_every: int = 10  # steps
    checkpoint_every: int = 1  # epochs; a numbered checkpoint is kept besides last.pt
    save_every_steps: int = 0  # also rewrite last.pt every N steps (0: at epoch ends only)
    keep: int = 3
    max_steps: int | None = None  # stop early (tests, smoke runs)
    init_from: str | None = None  # start from this checkpoint's model and memory bank (e.g. CMA after AVID)
    tensorboard: bool = False
    progress: bool = True


@dataclass
class Runtime:
    """Where this process runs: rank, local rank, world size, device, and the mixed-precision settings."""

    rank: int
    local_rank: int
    world: int
    device: torch.device
    use_amp: bool
    amp_dtype: torch.dtype

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Active for float16 autocast only (bfloat16 needs no loss scaling)."""
        return torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":  # one GPU per process: torchrun's LOCAL_RANK picks it
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup(run: RunConfig) -> Runtime:
    """Join torchrun's process group (gloo when ``run.device`` is cpu) and pick this process's device."""
    rank, local_rank, world = dist.init_from_env("gloo" if run.device == "cpu" else None)
    device = resolve_device(run.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    use_amp = run.amp and device.type == "cuda"
    dtype = torch.bfloat16 if run.amp_dtype == "bfloat16" else torch.float16
    return Runtime(rank, local_rank, world, device, use_amp, dtype)


def make_optimizer(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum), Adam (L2 weight decay) or AdamW (decoupled weight decay) over ``params`` (tensors or
    parameter groups)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(cfg: OptimConfig, step: int, steps_per_epoch: int) -> float:
    epoch = step / steps_per_epoch
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return cfg.lr * (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-8)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (epoch - cfg.warmup_epochs) / span)))
    if cfg.schedule == "step":
        return cfg.lr * cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_milestones)
    return cfg.lr


def epoch_indices(n: int, epoch: int, seed: int, batch: int, rank: int, world: int) -> list[list[int]]:
    """This process's batches of an epoch: a seeded permutation split across processes, last partial
    batch dropped (every process runs the same number of steps)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    per_step = batch * world
    steps = n // per_step
    return [order[s * per_step + rank * batch : s * per_step + (rank + 1) * batch] for s in range(steps)]


def train_batches(dataset: Dataset, run: RunConfig, batch_size: int, num_workers: int, rt: Runtime, step: int,
                  steps_per_epoch: int, total_steps: int, on_epoch: Callable[[int, int], None] | None = None,
                  ) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(epoch, batch)`` for each step from ``step`` to ``total_steps``: every epoch's seeded batches of this
    process (from inside the epoch when resuming), loaded by a fresh DataLoader. Before an epoch's first
    batch the dataset learns its epoch and ``on_epoch(epoch, step)`` runs."""
    while step < total_steps:
        epoch = step // steps_per_epoch
        dataset.set_epoch(epoch)
        if on_epoch is not None:
            on_epoch(epoch, step)
        batches = epoch_indices(len(dataset), epoch, run.seed, batch_size, rt.rank, rt.world)
        batches = batches[step - epoch * steps_per_epoch :]  # resume inside an epoch
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=av_collate,
                            pin_memory=rt.device.type == "cuda")
        for batch in loader:
            yield epoch, batch
            step += 1
            if step >= total_steps:
                return


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward (scaled when the scaler is active) and one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


class RunLog:
    """``metrics.jsonl`` (a row per logging step), ``skipped.jsonl`` (files that failed to decode, gathered
    from every process) and TensorBoard when asked; written by rank 0 only."""

    def __init__(self, out: Path, tensorboard: bool, tag: str) -> None:
        self.main = dist.is_main()
        self.tag = tag
        self.metrics = (out / "metrics.jsonl").open("a") if self.main else None
        self.skipped = (out / "skipped.jsonl").open("a") if self.main else None
        self.writer = None
        if tensorboard and self.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError("run.tensorboard needs the tensorboard package: pip install tensorboard") from e
            self.writer = SummaryWriter(str(out / "tb"))

    def failures(self, step: int, local: list[dict[str, Any]]) -> int:
        """Gather this step's decoding failures from every process and record them; returns their count."""
        failures = dist.gather_lists(local)
        if failures and self.skipped is not None:
            for f in failures:
                self.skipped.write(json.dumps({"step": step, **f}) + "\n")
            self.skipped.flush()
        return len(failures)

    def row(self, step: int, row: dict[str, Any]) -> None:
        if not self.main:
            return
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        if self.writer is not None:
            for k, val in row.items():
                if isinstance(val, (int, float)):
                    self.writer.add_scalar(f"{self.tag}/{k}", val, step)

    def close(self) -> None:
        for f in (self.metrics, self.skipped, self.writer):
            if f is not None:
                f.close()


class Checkpointer:
    """The run folder's ``last.pt``, rewritten atomically at most once per step (rank 0), and numbered
    ``epoch_NNNN.pt`` copies (hard links) of which the newest ``keep`` stay."""

    def __init__(self, out: Path, state: Callable[[], dict[str, Any]], keep: int, step: int) -> None:
        self.out, self.state, self.keep = out, state, keep
        self.last = out / "last.pt"
        self.saved_step = step if self.last.exists() else -1  # last.pt already holds this step

    def save_last(self, step: int) -> None:
        if not dist.is_main() or self.saved_step == step:
            return
        self.saved_step = step
        save_atomic(self.state(), self.last)

    def keep_epoch(self, epoch: int) -> None:
        if dist.is_main():
            keep_copy(self.last, self.out / f"epoch_{epoch:04d}.pt")
            prune_checkpoints(self.out, "epoch_*.pt", self.keep)

    def after_step(self, step: int, steps_per_epoch: int, run: RunConfig) -> None:
        """``last.pt`` every ``run.save_every_steps`` steps and at each epoch's end, where every
        ``run.checkpoint_every``-th epoch is also kept as ``epoch_NNNN.pt``."""
        if run.save_every_steps and step % run.save_every_steps == 0:
            self.save_last(step)
        if step % steps_per_epoch == 0:
            self.save_last(step)
            epoch = step // steps_per_epoch
            if run.checkpoint_every and epoch % run.checkpoint_every == 0:
                self.keep_epoch(epoch)
