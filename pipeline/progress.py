"""A one-line progress display on stderr: notes done, notes/s and an ETA. Never shows note text.

Shown only on a terminal (stderr is a TTY), not in CI (`CI` set) and not with `--no-progress`; at most
four updates a second; the line is cleared at the end.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

MIN_INTERVAL = 0.25  # seconds between two updates of the line


def progress_wanted(stream: TextIO | None = None, no_progress: bool = False) -> bool:
    """True on a terminal, outside CI, unless switched off."""
    stream = stream or sys.stderr
    return not no_progress and not os.environ.get("CI") and hasattr(stream, "isatty") and stream.isatty()


class Progress:
    """`set(done)` the number of notes done (or `advance()` by one); `close()` clears the line.

    The rate counts from the first update on (so neither start-up nor the notes of a resumed run's skipped
    chunks inflate or deflate it). The ETA comes from `total` notes when known up front, else from an
    estimate: the records `read()` so far over the `fraction()` of the input they came from."""

    def __init__(self, total: int | None = None, fraction: Callable[[], float | None] | None = None,
                 read: Callable[[], int] | None = None, enabled: bool = False, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.fraction, self.read, self.enabled = total, fraction, read, enabled
        self.stream = stream or sys.stderr
        self.clock = clock
        self.done = 0
        self._base: tuple[float, int] | None = None  # (time, notes done) at the first update
        self._shown_at = float("-inf")
        self._width = 0

    def advance(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = self.clock()
        if self._base is None:
            self._base = (now, done)
        if now - self._shown_at < MIN_INTERVAL:
            return
        self._shown_at = now
        self._show(self.line(now))

    def estimated_total(self) -> int | None:
        if self.total is not None:
            return self.total
        fraction = self.fraction() if self.fraction else None
        read = self.read() if self.read else None
        return max(self.done, round(read / fraction)) if fraction and read else None

    def line(self, now: float | None = None) -> str:
        """The text of the progress line."""
        now = self.clock() if now is None else now
        since, first = self._base or (now, self.done)
        rate = (self.done - first) / (now - since) if now > since and self.done > first else None
        parts = [f"{self.done:,} notes", f"{rate:,.1f} notes/s" if rate else "-- notes/s"]
        total = self.estimated_total()
        if total:
            parts.append(f"{min(self.done / total, 1):.0%}")
            if rate:
                parts.append(f"ETA {_clock_time((total - self.done) / rate)}")
        return "  ".join(parts)

    def _show(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _clock_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
