"""torchrun environment and collectives that are no-ops on one process (used by losses and the loop)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_cat",
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


def init_from_env(backend: str | None = None) -> tuple[int, int, int]:
    """Start the process group when launched by torchrun; returns (rank, local_rank, world_size).

    ``backend`` None: NCCL when CUDA is available, else gloo (pass "gloo" to train on the CPUs of a GPU machine).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is None:
            dist.init_process_group(backend)
        else:
            # torchrun's workers share the agent's store, which outlives a restart: keys of the failed attempt
            # (the dead workers' gloo addresses, NCCL ids) would be read by the restarted ones and leave them
            # waiting on processes that are gone. Each attempt gets its own key space.
            store, rank_, world = next(dist.rendezvous("env://"))
            store = dist.PrefixStore(f"avssl/attempt_{restart}/", store)
            dist.init_process_group(backend, store=store, rank=rank_, world_size=world)
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


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the processes, on ``x``'s device (a CPU flag or figure too, under NCCL)."""
    if world_size() == 1:
        return x
    device = _comm_device()
    y = x.to(device, copy=True) if device is not None else x.clone()
    dist.all_reduce(y)
    return (y / world_size()).to(x.device)


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
