"""Where a training step's time goes (``run.time_phases``), so that the next limit is named by a measurement.

Per step, in milliseconds, averaged over each log interval and written into the training rows of
``metrics.jsonl``:

- ``time_data_ms``: the host waiting for the loader's next batch;
- ``time_prepare_ms``: copying the batch to the device and preprocessing it there (jitter, normalization,
  log-mel): on CUDA the side stream's own time between CUDA events, which overlaps the step;
- ``time_compute_ms``: the step (forward, loss, backward, optimizer, memory update): on CUDA the device's time
  between events around it on the training stream, on the CPU the host's;
- ``time_log_ms``: log steps (reading the figures, the guard, writing the row), spread over the interval's
  steps; on CUDA it includes waiting for the device to finish the interval's queued work;
- ``time_step_ms``: wall time per step over the interval.

CUDA events are read only on log steps, where the loop reads the device anyway.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["PhaseTimer"]


class PhaseTimer:
    """``span(name)`` around a phase (host or device time, see the module), ``add_host(name, s)``, ``step()`` once per
    step, ``read()`` on log steps: ``{"time_<name>_ms": mean per step}``. Disabled: every call does nothing."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.cuda, self.enabled = device.type == "cuda", enabled
        self.host: dict[str, float] = defaultdict(float)
        self.events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self.steps, self.t0 = 0, time.perf_counter()

    def add_host(self, name: str, seconds: float) -> None:
        if self.enabled:
            self.host[name] += seconds

    @contextmanager
    def span(self, name: str, stream: torch.cuda.Stream | None = None) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            yield
            end.record(stream)
            self.events.append((name, start, end))
            return
        t0 = time.perf_counter()
        yield
        self.host[name] += time.perf_counter() - t0

    def step(self) -> None:
        self.steps += 1

    def read(self) -> dict[str, float]:
        if not self.enabled or not self.steps:
            return {}
        totals = dict(self.host)
        for name, start, end in self.events:
            end.synchronize()
            totals[name] = totals.get(name, 0.0) + start.elapsed_time(end) / 1000
        now = time.perf_counter()
        row = {f"time_{k}_ms": 1000 * v / self.steps for k, v in sorted(totals.items())}
        row["time_step_ms"] = 1000 * (now - self.t0) / self.steps
        self.host.clear()
        self.events.clear()
        self.steps, self.t0 = 0, now
        return row
