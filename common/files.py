"""Files written so that a kill never leaves half of one, and their content hashes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def atomic_write(path: str | os.PathLike, write) -> None:
    """`write(tmp)` to a temp file in `path`'s directory, then rename it over `path`.

    A run killed mid-write leaves the previous file whole: every checkpoint,
    result and cache file of the project is written this way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
