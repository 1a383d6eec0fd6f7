"""The next batch on its way to the device while this one computes (timm's ``PrefetchLoader``, for any batch).

:class:`Prefetcher` takes ``(epoch, batch)`` pairs from the loader and a ``prepare(batch)`` that puts the batch's
inputs on the device (copies from pinned memory with ``non_blocking=True``, the batch preprocessing: jitter,
normalization, log-mel). On CUDA it runs ``prepare`` for batch k+1 on a side stream before it hands batch k to
the caller, so that the copy and the preprocessing overlap batch k's step; the caller's stream waits for the side
stream (a wait between streams on the device, not of the host), and the tensors made on the side stream are
recorded as used on the caller's stream so that the allocator does not reuse their memory too early. Elsewhere
(CPU) ``prepare`` runs inline: the same order, nothing to overlap.

``on_epoch(epoch, step)`` (optional) runs when the caller asks for an epoch's first batch, after it is done with
the previous epoch's last step, on every device alike: on CUDA the loader is read one batch ahead, so a hook run
where the batches are made (CMA's positive sets, drawn from the memory bank) would run before the last step of the
previous epoch had updated it. ``step`` is the step of the first pair (a resumed run's).

``timer`` (optional, :class:`~avssl.train.timing.PhaseTimer`) learns how long the host waited for the loader and
how long ``prepare`` took.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable

import torch

__all__ = ["Prefetcher"]

Prepared = tuple[int, dict[str, Any], dict[str, torch.Tensor]]


class Prefetcher:
    """``for epoch, batch, inputs in Prefetcher(pairs, prepare, device)``; ``inputs`` is what ``prepare`` returned
    (a dict of tensors on the device), ready on the caller's current stream."""

    def __init__(self, pairs: Iterable[tuple[int, dict[str, Any]]], prepare: Callable[[dict[str, Any]], dict[str, Any]],
                 device: torch.device, timer: Any = None, on_epoch: Callable[[int, int], None] | None = None,
                 step: int = 0) -> None:
        self.pairs, self.prepare, self.device, self.timer = pairs, prepare, device, timer
        self.on_epoch, self.step = on_epoch, step

    def _span(self, name: str, stream: torch.cuda.Stream | None = None) -> contextlib.AbstractContextManager:
        return self.timer.span(name, stream) if self.timer is not None else contextlib.nullcontext()

    def _next(self, it: Iterator[tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]] | None:
        t0 = time.perf_counter()
        item = next(it, None)
        if self.timer is not None:
            self.timer.add_host("data", time.perf_counter() - t0)
        return item

    def __iter__(self) -> Iterator[Prepared]:
        it = iter(self.pairs)
        try:
            epoch, step = None, self.step
            for item in self._prefetched(it):
                if item[0] != epoch and self.on_epoch is not None:  # the caller has finished the previous epoch
                    self.on_epoch(item[0], step)
                epoch = item[0]
                yield item
                step += 1
        finally:  # closed early (an error, a stop): the loader below is closed too, its workers stopped
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _prefetched(self, it: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[Prepared]:
        if self.device.type != "cuda":
            while (item := self._next(it)) is not None:
                epoch, batch = item
                with self._span("prepare"):
                    inputs = self.prepare(batch)
                yield epoch, batch, inputs
            return
        stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)

        def load() -> Prepared | None:
            item = self._next(it)
            if item is None:
                return None
            epoch, batch = item
            with torch.cuda.stream(stream), self._span("prepare", stream):
                inputs = self.prepare(batch)
            return epoch, batch, inputs

        ready = load()
        while ready is not None:
            current.wait_stream(stream)
            epoch, batch, inputs = ready
            for t in inputs.values():
                if isinstance(t, torch.Tensor) and t.is_cuda:
                    t.record_stream(current)
            ready = load()  # batch k+1's copy and preprocessing, queued before batch k's step
            yield epoch, batch, inputs
