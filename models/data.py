"""CIFAR-10 as uint8 tensors: loading, caching, the fixed splits, batching.

Two sources, one API (`load_cifar10`):
  * an image-folder tree `train/<class>/*.jpg`, `test/<class>/*.jpg`, as a
    directory or a `.tar.gz` (the project's shared JPEG copy);
  * torchvision's CIFAR-10 root (downloaded there when missing).

JPEGs are decoded once, in batches, and cached as uint8 tensors under the
cache directory, keyed by a hash of the source so a changed source is never
served stale. Images stay uint8 until a batch is drawn (models/batching.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from common.cli import default_data_path
from common.errors import UserError
from common.files import file_sha256
from models.checkpoint import atomic_save

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
VAL_PER_CLASS = 500  # 5,000 validation images held out of the 50,000 training images
SPLIT_SEED = 0  # fixed for every run: the validation split is the search split
CACHE_VERSION = 1
HOW_TO_GET = ("pass --data (or set TAPQUANT_DATA) to a CIFAR-10 image-folder .tar.gz or directory "
              "(train/<class>/*.jpg, test/<class>/*.jpg), or to a directory where torchvision may "
              "download CIFAR-10")


@dataclass
class Cifar10:
    """All of CIFAR-10 as uint8 NCHW tensors, plus the fixed train/val split."""

    train_x: torch.Tensor  # (50000, 3, 32, 32) uint8
    train_y: torch.Tensor  # (50000,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    source_hash: str
    source: str

    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the 45,000 training and 5,000 validation images.

        Stratified (500 per class) and seeded with a constant, so every run,
        and the search, sees the same validation images.
        """
        g = torch.Generator().manual_seed(SPLIT_SEED)
        train_idx, val_idx = [], []
        for c in range(len(CLASSES)):
            idx = (self.train_y == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            n_val = min(VAL_PER_CLASS, len(idx) // 10)
            val_idx.append(idx[:n_val])
            train_idx.append(idx[n_val:])
        train_idx, val_idx = torch.cat(train_idx), torch.cat(val_idx)
        # Mix classes so that taking a prefix of the validation split (a smaller
        # search split) stays roughly balanced.
        val_idx = val_idx[torch.randperm(len(val_idx), generator=g)]
        return train_idx.sort().values, val_idx

    def _train_order(self) -> torch.Tensor:
        """The training split in a fixed, class-mixed order (the files are stored
        class by class, so a plain prefix would be all airplanes)."""
        train_idx, _ = self.split()
        return train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(SPLIT_SEED + 1))]

    def calibration_indices(self, n: int) -> torch.Tensor:
        """The first `n` training-split images of the fixed order: histograms, p90, tmax."""
        return self._train_order()[:n]

    def selection_indices(self, n: int) -> torch.Tensor:
        """The last `n` training-split images of the same order, disjoint from the calibration
        images while n + calibration images <= 45,000: where a search confirms its choice."""
        return self._train_order()[-n:] if n else self._train_order()[:0]


def default_cache_dir() -> Path:
    return Path(os.environ.get("TAPQUANT_CACHE", Path.home() / ".cache" / "tapquant"))


def _hash_tree(root: Path) -> str:
    """Cheap content key for a directory: relative names, sizes and mtimes."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decode(blobs: list[bytes], where: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    try:
        imgs = decode_jpeg(datas)  # batched: ~3 s for all 60k on one core
    except RuntimeError:
        # Not all JPEG (e.g. PNG folders): fall back to the generic decoder.
        try:
            imgs = [decode_image(d, mode=ImageReadMode.RGB) for d in datas]
        except RuntimeError as e:
            raise UserError(f"cannot decode an image in {where}: {e}; the data source is corrupted, "
                            f"replace it ({HOW_TO_GET})") from None
    bad = next((im for im in imgs if tuple(im.shape) not in ((3, 32, 32), (1, 32, 32))), None)
    if bad is not None:
        raise UserError(f"an image in {where} has shape {tuple(bad.shape)}, expected 3x32x32 (CIFAR-10)")
    return torch.stack([im.expand(3, -1, -1) for im in imgs])


def _collect(entries: dict[str, list[tuple[str, bytes]]], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """entries: class name -> [(file name, bytes)] for one part (train or test)."""
    unknown = sorted(set(entries) - set(CLASSES))
    if unknown:
        raise UserError(f"{where} has unknown class folders {unknown}; expected {CLASSES}")
    missing = [c for c in CLASSES if not entries.get(c)]
    if missing:
        raise UserError(f"{where} has no images for classes {missing}; expected train/<class>/ and "
                        f"test/<class>/ for all of {', '.join(CLASSES)}")
    blobs, labels = [], []
    for label, cls in enumerate(CLASSES):
        for _, blob in sorted(entries[cls]):
            blobs.append(blob)
            labels.append(label)
    return _decode(blobs, where), torch.tensor(labels, dtype=torch.int64)


def _read_image_folder(path: Path) -> dict[str, dict[str, list[tuple[str, bytes]]]]:
    """Returns part ("train"/"test") -> class -> [(name, bytes)] from a dir or tar.gz."""
    parts: dict[str, dict[str, list]] = {"train": {}, "test": {}}

    def add(rel: str, read):
        bits = Path(rel).parts
        # Accept an optional top-level folder (e.g. "cifar10/train/cat/1.jpg").
        while bits and bits[0] not in parts:
            bits = bits[1:]
        if len(bits) != 3 or bits[2].startswith("."):
            return
        parts[bits[0]].setdefault(bits[1], []).append((bits[2], read()))

    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                add(str(p.relative_to(path)), p.read_bytes)
    else:
        try:
            # Decompress in one go: tarfile's member reads then seek in memory,
            # not through the gzip stream (about 2x faster for 60k small files).
            raw = path.read_bytes()
            if raw[:2] == b"\x1f\x8b":  # gzip magic; plain .tar is read as it is
                raw = gzip.decompress(raw)
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                for m in tar:
                    if m.isfile():
                        add(m.name, lambda m=m: tar.extractfile(m).read())
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
            raise UserError(f"cannot read {path}: {e}; the archive is corrupted or truncated, "
                            f"fetch it again ({HOW_TO_GET})") from None
    return parts


def _load_image_folder(path: Path) -> tuple[torch.Tensor, ...]:
    parts = _read_image_folder(path)
    if not parts["train"] or not parts["test"]:
        raise UserError(f"{path} does not hold train/<class>/ and test/<class>/ image folders; {HOW_TO_GET}")
    train_x, train_y = _collect(parts["train"], f"{path} (train)")
    test_x, test_y = _collect(parts["test"], f"{path} (test)")
    return train_x, train_y, test_x, test_y


def _load_torchvision(root: Path) -> tuple[torch.Tensor, ...]:
    from torchvision.datasets import CIFAR10

    out = []
    for train in (True, False):
        try:
            ds = CIFAR10(str(root), train=train, download=True)
        except Exception as e:  # network errors, corrupted archives, ...
            raise UserError(f"torchvision could not provide CIFAR-10 in {root}: {e}; {HOW_TO_GET}") from None
        out.append(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous())
        out.append(torch.tensor(ds.targets, dtype=torch.int64))
    return tuple(out)


def _is_image_folder(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir()


def load_cifar10(data: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 verbose: bool = False) -> Cifar10:
    """Loads CIFAR-10 from `data` (see module docstring), through the cache."""
    path = Path(data if data is not None else default_data_path()).expanduser()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    if path.is_file():
        if not (path.name.endswith(".tar.gz") or path.name.endswith(".tgz") or path.name.endswith(".tar")):
            raise UserError(f"{path} is a file but not a .tar.gz archive; {HOW_TO_GET}")
        kind, key = "image-folder", file_sha256(path)
    elif _is_image_folder(path):
        kind, key = "image-folder", _hash_tree(path)
    elif path.suffix in (".gz", ".tgz", ".tar") or str(path).endswith(".tar.gz"):
        raise UserError(f"data archive {path} not found; {HOW_TO_GET}")
    else:
        kind, key = "torchvision", None

    if kind == "torchvision":
        tensors = _load_torchvision(path)
        h = hashlib.sha256()
        for t in tensors:
            h.update(t.contiguous().numpy().data)
        key = h.hexdigest()
        return Cifar10(*tensors, source_hash=key, source=str(path))

    cache_file = cache_dir / f"cifar10-{key[:16]}-v{CACHE_VERSION}.pt"
    if cache_file.is_file():
        try:
            blob = torch.load(cache_file, weights_only=True)
            return Cifar10(blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"],
                           source_hash=key, source=str(path))
        except Exception:
            pass  # a damaged cache is rebuilt, never trusted
    if verbose:
        print(f"[data] decoding {path} once; cached at {cache_file}", flush=True)
    tensors = _load_image_folder(path)
    try:
        atomic_save(dict(zip(["train_x", "train_y", "test_x", "test_y"], tensors)), cache_file)
    except OSError as e:
        print(f"[data] warning: could not write the cache {cache_file} ({e}); set --cache-dir "
              f"to a writable directory to skip decoding next time", flush=True)
    return Cifar10(*tensors, source_hash=key, source=str(path))
