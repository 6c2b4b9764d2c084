"""A minimal progress line on stderr for long logs (no tqdm): ``label: done/total (pct%)``.

Shown only when stderr is a terminal or when forced (``--progress``); redrawn at most ten
times a second with a carriage return, and finished with a newline. Disabled, every call
is a cheap no-op.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """One progress line; ``update(done)`` moves it, ``close()`` ends it."""

    def __init__(
        self, label: str, total: int, *, enabled: bool | None = None, stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self._last = 0.0
        self._started = time.monotonic()

    def update(self, done: int) -> None:
        """Set the amount done; redraws when enough time has passed."""
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= 0.1 or done >= self.total:
            self._last = now
            pct = 100.0 * min(done, self.total) / self.total
            took = now - self._started
            self.stream.write(f"\r{self.label}: {done}/{self.total} ({pct:.0f}%, {took:.0f} s)")
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        """Add ``n`` to the amount done."""
        self.update(self.done + n)

    def close(self) -> None:
        """Finish the line."""
        if self.enabled:
            self.update(self.done)
            self.stream.write("\n")
            self.stream.flush()
