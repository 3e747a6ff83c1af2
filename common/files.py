"""Files written so that a kill never leaves half of one, and their content hashes."""

from __future__ import annotations

import difflib
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


def missing_file(what: str, path: str | os.PathLike, make: str) -> str:
    """The one line for a file that does not exist: the closest existing name of the same kind in its
    folder first (a typo is likelier than a missing run), then how to make one."""
    path = Path(path)
    folder = path.parent if path.parent.is_dir() else None
    names = [p.name for p in folder.iterdir() if p.suffix == path.suffix] if folder else []
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.9)  # a typo, not a sibling
    guess = f"did you mean {path.with_name(close[0])}? Otherwise " if close else ""
    return f"{what} {path} not found; {guess}{make}"
