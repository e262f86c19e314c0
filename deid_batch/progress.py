"""Progress reporting for the CLI: a bar with files/s and ETA on a terminal, plain lines otherwise.

Only counts and rates are shown; never a file name or a header value.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class ProgressBar:
    """Callable ``(done, total)`` that draws progress on ``stream``."""

    def __init__(self, label: str, stream: TextIO | None = None, *, interval: float = 5.0,
                 enabled: bool = True) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0
        self.first_done: int | None = None
        self.finished = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.first_done is None:
            self.first_done, self.start = done, now
        if done < total and now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = (done - self.first_done) / elapsed
        eta = (total - done) / rate if rate > 0 else float("nan")
        eta_s = _fmt_eta(eta) if rate > 0 else "?"
        pct = 100.0 * done / total if total else 100.0
        if self.tty:
            width = 30
            fill = int(width * done / total) if total else width
            bar = "#" * fill + "-" * (width - fill)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {pct:5.1f}% "
                              f"{rate:7.1f} files/s ETA {eta_s} ")
            if done >= total:
                self.stream.write("\n")
        else:
            self.stream.write(f"{self.label}: {done}/{total} files ({pct:.1f}%), "
                              f"{rate:.1f} files/s, ETA {eta_s}\n")
        self.stream.flush()
