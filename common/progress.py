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
    start = last = time.perf_counter()
    for done, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if now - last >= PROGRESS_INTERVAL and done < total:
            last = now
            rate = done / (now - start)
            print(f"{desc} | {done}/{total} {unit} | {rate:.2f} {unit}/s | {duration((total - done) / rate)} left",
                  flush=True)
