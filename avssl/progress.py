"""Progress of long loops: a bar when writing to a terminal, plain lines otherwise.

Under a batch scheduler, or with output sent to a file, a bar's carriage-return updates fill the log with
one endless line; there a line is printed every ``every_n`` updates or ``every_s`` seconds instead (and at
the end), each readable on its own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["Progress", "counted", "track"]

T = TypeVar("T")


class Progress:
    """``update(n, **postfix)`` and ``close()``; nothing at all when ``enabled`` is false."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0, enabled: bool = True,
                 every_n: int | None = None, every_s: float = 30.0, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.every_n, self.every_s = every_n, every_s
        self.enabled = enabled
        self.bar = None
        self.postfix: dict[str, Any] = {}
        self._last_print, self._last_n = time.monotonic(), initial
        self._start, self._initial = time.monotonic(), initial
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc or None, unit=unit, file=self.stream)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        if postfix:
            self.postfix.update(postfix)
        if not self.enabled:
            return
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        due_n = self.every_n is not None and self.done - self._last_n >= self.every_n
        if due_n or now - self._last_print >= self.every_s:
            self._line()

    def _line(self) -> None:
        self._last_print, self._last_n = time.monotonic(), self.done
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc or 'progress'}: {self.done}{of} {self.unit}{pct}{extra}{self._eta()}", file=self.stream,
              flush=True)

    def _eta(self) -> str:
        """`` eta 1h02m`` from the rate since the start (nothing before the first update or without a total)."""
        done, elapsed = self.done - self._initial, time.monotonic() - self._start
        if not self.total or done <= 0 or elapsed <= 0 or self.done >= self.total:
            return ""
        left = int((self.total - self.done) * elapsed / done)
        h, m, s = left // 3600, left // 60 % 60, left % 60
        return f" eta {h}h{m:02d}m" if h else f" eta {m}m{s:02d}s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.done != self._last_n:
            self._line()


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 video``, ``5 videos`` (``plural`` where adding ``s`` is wrong: ``process`` -> ``processes``)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True
          ) -> Iterator[T]:
    """Iterate ``items`` with a :class:`Progress` (``total`` defaults to ``len(items)`` where it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    p = Progress(total, desc, unit, enabled=enabled)
    try:
        for item in items:
            yield item
            p.update()
    finally:
        p.close()
