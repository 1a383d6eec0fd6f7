"""The prefetcher's order of events: on CUDA it prepares batch k+1 before it hands over batch k, yet an epoch's hook
(CMA's positive sets, drawn from the memory bank) runs only once the caller is done with the previous epoch's last
step, as on the CPU. The CUDA path runs here with its stream calls faked (CPU tensors are never recorded)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from avssl.train.prefetch import Prefetcher


class _FakeStream:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def wait_stream(self, other) -> None:
        pass


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's stream calls as no-ops, so the CUDA branch of the prefetcher runs on the CPU."""
    @contextmanager
    def stream(s):
        yield

    monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", stream)


def _events(device: torch.device, epochs: int = 3, steps: int = 3, start: int = 0) -> list[tuple]:
    events: list[tuple] = []

    def pairs():
        for step in range(start, epochs * steps):
            events.append(("load", step))
            yield step // steps, {"step": step}

    def prepare(batch):
        events.append(("prepare", batch["step"]))
        return {"x": torch.zeros(1)}

    loop = Prefetcher(pairs(), prepare, device, on_epoch=lambda e, s: events.append(("on_epoch", e, s)), step=start)
    for epoch, batch, _ in loop:
        events.append(("step", batch["step"]))
    return events


def _hook_order(events: list[tuple]) -> list[tuple]:
    """Each epoch hook with the steps taken before it."""
    out, taken = [], []
    for e in events:
        if e[0] == "step":
            taken.append(e[1])
        elif e[0] == "on_epoch":
            out.append((e[1], e[2], list(taken)))
    return out


def test_epoch_hooks_run_after_the_last_step_of_the_previous_epoch_on_cuda_as_on_the_cpu(fake_cuda):
    cpu, cuda = _events(torch.device("cpu")), _events(torch.device("cuda"))
    assert _hook_order(cpu) == _hook_order(cuda) == [(0, 0, []), (1, 3, [0, 1, 2]), (2, 6, [0, 1, 2, 3, 4, 5])]
    # and the CUDA path does read ahead: batch 3 is prepared before step 2 is taken
    assert cuda.index(("prepare", 3)) < cuda.index(("step", 2))
    assert cuda.index(("on_epoch", 1, 3)) > cuda.index(("step", 2))


def test_a_resumed_run_calls_the_hook_of_the_epoch_it_resumes_in_with_its_step(fake_cuda):
    for device in ("cpu", "cuda"):
        assert _hook_order(_events(torch.device(device), start=4)) == [(1, 4, []), (2, 6, [4, 5])]
