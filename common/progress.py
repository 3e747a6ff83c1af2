"""Progress of long loops, on a terminal and in a log alike.

On a terminal, a tqdm bar. Anywhere else (output redirected to a file, a
pipe, a background job under nohup), tqdm draws nothing, so a job of hours
would look dead: there, one plain line every PROGRESS_INTERVAL seconds
with the count, the rate and the time left.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

PROGRESS_INTERVAL = float(os.environ.get("TAPQUANT_PROGRESS_INTERVAL", 30))  # seconds between lines in a log


def duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def progress(iterable, total: int, desc: str, unit: str = "batch", disable: bool = False):
    """Yields `iterable`'s items, showing progress: a bar on a terminal, a line every PROGRESS_INTERVAL s
    elsewhere, nothing when `disable`."""
    if disable:
        yield from iterable
        return
    if sys.stderr.isatty():
        yield from tqdm(iterable, total=total, desc=desc, leave=False, unit=unit)
        return
    lines = LogLines()
    for done, item in enumerate(iterable, 1):
        yield item
        if done < total and lines.due():
            print(f"{desc} | {done}/{total} {unit} | {lines.rate(done):.2f} {unit}/s | {lines.left(done, total)} left",
                  flush=True)


class LogLines:
    """When a long loop should write its next plain progress line (every PROGRESS_INTERVAL seconds), and its
    rate and time left since it started (`done` items were already done then, e.g. before a resume)."""

    def __init__(self, done: int = 0):
        self.first = done
        self.start = self.last = self.now = time.perf_counter()

    def due(self) -> bool:
        self.now = time.perf_counter()
        if self.now - self.last < PROGRESS_INTERVAL:
            return False
        self.last = self.now
        return True

    def rate(self, done: int) -> float:
        """Items per second since the start, as of the last due()."""
        return (done - self.first) / max(self.now - self.start, 1e-9)

    def left(self, done: int, total: int) -> str:
        rate = self.rate(done)
        return duration((total - done) / rate) if rate > 0 else "?"
