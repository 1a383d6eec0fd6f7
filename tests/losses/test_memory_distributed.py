from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from avssl.losses.memory import MemoryBank


@contextmanager
def _gloo(rank: int, world: int, init: str):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _worker(rank: int, world: int, init: str, out: str) -> None:
    with _gloo(rank, world, init):
        bank = MemoryBank(8, 4, momentum=0.5, seed=0)
        idx = torch.tensor([rank * 2, rank * 2 + 1])  # rank 0 owns 0,1; rank 1 owns 2,3
        emb = F.normalize(torch.full((2, 4), float(rank + 1)) + torch.arange(4.0), dim=1)
        bank.update(idx, emb, emb)
        torch.save(bank.state_dict(), f"{out}/bank{rank}.pt")


@pytest.mark.distributed
def test_memory_bank_update_is_gathered_across_two_processes(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    b0 = torch.load(tmp_path / "bank0.pt", weights_only=True)
    b1 = torch.load(tmp_path / "bank1.pt", weights_only=True)
    assert torch.equal(b0["video"], b1["video"])  # every process holds the same bank
    ref = MemoryBank(8, 4, momentum=0.5, seed=0)
    for rank in range(2):
        emb = F.normalize(torch.full((2, 4), float(rank + 1)) + torch.arange(4.0), dim=1)
        ref.update(torch.tensor([rank * 2, rank * 2 + 1]), emb, emb)
    assert torch.allclose(b0["video"], ref.video) and torch.allclose(b0["audio"], ref.audio)


def _cma_worker(rank: int, world: int, init: str, out: str) -> None:
    from avssl.losses.avid import LossConfig
    from avssl.losses.cma import CMALoss

    with _gloo(rank, world, init):
        loss = CMALoss(11, 4, LossConfig(kind="cma", cma_topk=3, cma_chunk=2), seed=0)  # 11 rows: uneven split
        loss.update_positives()
        torch.save(loss.positives, f"{out}/pos{rank}.pt")


@pytest.mark.distributed
def test_cma_positive_sets_are_split_across_processes_and_gathered(tmp_path):
    from avssl.losses.avid import LossConfig
    from avssl.losses.cma import CMALoss

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_cma_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    single = CMALoss(11, 4, LossConfig(kind="cma", cma_topk=3), seed=0)
    single.update_positives()
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"pos{rank}.pt", weights_only=True), single.positives)
