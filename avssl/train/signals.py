"""Ctrl-C and SIGTERM (what SLURM and Kubernetes send before they preempt a job) end a run where it can resume.

While the training loop runs, :class:`StopRequests` turns the first SIGINT or SIGTERM into a request: the loop
finishes the step it is in, every process agrees on the step to stop at (:class:`~avssl.distributed.FlagVote`),
``last.pt`` is written at that step, and the run ends with :class:`RunInterrupted` (the command says "interrupted
at step N; the same command resumes from here" and exits 130 for SIGINT, 143 for SIGTERM). A second Ctrl-C
(SIGINT after SIGINT) stops at once (``KeyboardInterrupt``), without saving; other repeats are ignored (torchrun's
agent passes a Ctrl-C on to its workers as SIGTERM, and a scheduler may signal every process of a job: the run is
already stopping). Loader workers ignore both signals (:func:`ignore_in_worker`):
the main process stops them when it is done with them.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["RunInterrupted", "StopRequests", "ignore_in_worker"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """A run stopped on a signal after saving ``last.pt`` at ``step``."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum
        super().__init__(f"interrupted at step {step} ({signal.Signals(signum).name}); the same command resumes "
                         "from here")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def ignore_in_worker(_: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: the worker leaves SIGINT and SIGTERM to the main process."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class StopRequests:
    """``with StopRequests(announce) as stop:`` ... ``stop.signum`` is the first signal received (None before).
    Handlers are installed only in the main thread, and the previous ones are put back on exit."""

    def __init__(self, announce: bool = True) -> None:
        self.signum: int | None = None
        self.announce = announce
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == self.signum == signal.SIGINT:  # Ctrl-C twice: stop now
                raise KeyboardInterrupt
            return
        self.signum = signum
        if self.announce:
            again = " (Ctrl-C again stops at once, without saving)" if signum == signal.SIGINT else ""
            print(f"\n{signal.Signals(signum).name} received: finishing this step and saving last.pt{again}",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
