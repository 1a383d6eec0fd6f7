"""torchrun environment and collectives that are no-ops on one process (used by losses and the loop)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "FlagVote",
    "all_gather_cat",
    "all_reduce",
    "all_reduce_mean",
    "barrier",
    "gather_lists",
    "init_from_env",
    "is_main",
    "rank",
    "world_size",
]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(backend: str | None = None, timeout_min: float | None = None) -> tuple[int, int, int]:
    """Start the process group when launched by torchrun; returns (rank, local_rank, world_size).

    ``backend`` None: NCCL when CUDA is available, else gloo (pass "gloo" to train on the CPUs of a GPU machine).
    ``timeout_min``: how long a collective may wait for the slowest process (PyTorch's default, 10 minutes for
    NCCL, when None) before the job is stopped.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        timeout = {"timeout": timedelta(minutes=timeout_min)} if timeout_min else {}
        if restart is None:
            dist.init_process_group(backend, **timeout)
        else:
            # torchrun's workers share the agent's store, which outlives a restart: keys of the failed attempt
            # (the dead workers' gloo addresses, NCCL ids) would be read by the restarted ones and leave them
            # waiting on processes that are gone. Each attempt gets its own key space.
            store, rank_, world = next(dist.rendezvous("env://"))
            store = dist.PrefixStore(f"avssl/attempt_{restart}/", store)
            dist.init_process_group(backend, store=store, rank=rank_, world_size=world, **timeout)
    return rank(), int(os.environ.get("LOCAL_RANK", "0")), world_size()


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process along dim 0 (equal sizes); ``x`` itself on one process."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _comm_device() -> torch.device | None:
    """Where the process group's collectives need their tensors: the current CUDA device under NCCL (which
    cannot reduce CPU tensors), else wherever the tensor is."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None


_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


def all_reduce(x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``x`` reduced over the processes (``sum``, ``min`` or ``max``), a new tensor on ``x``'s device (a CPU flag
    too, under NCCL). On the device nothing is read: the reduction is queued like any other operation."""
    if world_size() == 1:
        return x
    device = _comm_device()
    y = x.to(device, copy=True) if device is not None else x.clone()
    dist.all_reduce(y, op=_OPS[op])
    return y.to(x.device)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the processes, on ``x``'s device (a CPU flag or figure too, under NCCL)."""
    if world_size() == 1:
        return x
    return all_reduce(x) / world_size()


class FlagVote:
    """Processes agree, step by step, whether any of them raised a flag (a signal received), without waiting:
    each :meth:`poll` starts an all-reduce of this process's flag over a CPU (gloo) group and returns the result
    of the one started at the previous poll, so every process learns of a flag at the same poll, one poll after
    the first process raised it. On one process it returns the flag itself."""

    def __init__(self) -> None:
        self.group = None
        self.pending: tuple[Any, torch.Tensor] | None = None
        if world_size() > 1:
            self.group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def poll(self, flag: bool) -> bool:
        if self.group is None:
            return flag
        mine = torch.tensor([1 if flag else 0], dtype=torch.int32)
        work = dist.all_reduce(mine, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        previous, self.pending = self.pending, (work, mine)
        if previous is None:
            return False
        previous[0].wait()
        return bool(previous[1].item())

    def close(self) -> None:
        """Wait for the last all-reduce started (every process calls it at the same poll)."""
        if self.pending is not None:
            self.pending[0].wait()
            self.pending = None


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def gather_lists(items: list) -> list:
    """Concatenate a (usually empty) list of picklable objects from every process, on every process.

    One small all-reduce tells whether any process has items; objects move only when one does.
    """
    if world_size() == 1:
        return list(items)
    count = torch.tensor([len(items)], device=_comm_device())
    dist.all_reduce(count)
    if int(count) == 0:
        return []
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]
