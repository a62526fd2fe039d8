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

    The ETA comes from `total` (notes, when known up front) or else from `fraction()` (how much of the input
    has been read); the rate counts only notes done since the display started."""

    def __init__(self, total: int | None = None, fraction: Callable[[], float | None] | None = None,
                 enabled: bool = False, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.fraction, self.enabled = total, fraction, enabled
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._first: int | None = None  # notes done at the first update (a resumed run starts above 0)
        self._shown_at = float("-inf")
        self._width = 0

    def advance(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = done
        if self._first is None:
            self._first = done
        if not self.enabled:
            return
        now = self.clock()
        if now - self._shown_at < MIN_INTERVAL:
            return
        self._shown_at = now
        self._show(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The text of the progress line."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = (self.done - (self._first or 0)) / elapsed
        parts = [f"{self.done:,} notes", f"{rate:,.1f} notes/s"]
        remaining = None
        if self.total:
            parts.append(f"{min(self.done / self.total, 1):.0%}")
            remaining = (self.total - self.done) / rate if rate > 0 else None
        else:
            fraction = self.fraction() if self.fraction else None
            if fraction:
                parts.append(f"{fraction:.0%}")
                remaining = elapsed * (1 - fraction) / fraction
        if remaining is not None:
            parts.append(f"ETA {_clock_time(remaining)}")
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
