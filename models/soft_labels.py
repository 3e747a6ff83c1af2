"""A trained network's predictions on the training images, stored once, so a small net can distill from it
without running it: soft labels (ReLabel, Yun et al. 2021; FKD, Shen & Xing 2021, store a teacher's outputs
for the crops a recipe draws).

    python train_baselines.py soft-labels --from outputs/vgg16/vgg16_float_unfused.pth --model vgg16
    python train_baselines.py float --soft-labels outputs/soft_labels_vgg16_w1_pad1.npz

The file holds the teacher's logits (float16) for every image of the training
split (models/data.py: never the validation or test images) under each
augmentation view the float recipe can draw at its crop padding
(models/batching.view_index: (2 pad + 1)^2 crops, each flipped or not; 18 at
padding 1), or fewer views (`flip`: the two uncropped ones; `one`: the
uncropped image) that stand in for the views they leave out. Its header says
which teacher made it (sha256, width, accuracy), on which data source and
images (their count and a hash of their indices), at which padding, and the
logits' sha256, so that a file for other images, another padding or with
altered contents is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from common.files import atomic_write, file_sha256, missing_file
from common.progress import progress
from models.batching import crop_flip, normalize, view_count

FORMAT = "tapquant-soft-labels"
VIEWS = ("all", "flip", "one")


def stored_views(pad: int, views: str) -> list[tuple[int, int, int]]:
    """The (flip, dy, dx) views a file stores, in order."""
    if views == "all":
        return [(f, dy, dx) for f in (0, 1) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return [(f, pad, pad) for f in ((0, 1) if views == "flip" else (0,))]


def view_map(pad: int, views: str) -> torch.Tensor:
    """For each view the recipe draws (view_index), the stored view that stands for it."""
    out = torch.zeros(view_count(pad), dtype=torch.long)
    side = 2 * pad + 1
    for v in range(view_count(pad)):
        flip = v // (side * side)
        out[v] = v if views == "all" else (flip if views == "flip" else 0)
    return out


def indices_sha256(idx: torch.Tensor) -> str:
    return hashlib.sha256(idx.to(torch.int64).numpy().tobytes()).hexdigest()


@torch.no_grad()
def make(model, teacher_meta: dict, teacher_path, data, pad: int, views: str, device, bf16: bool = False,
         batch_size: int = 500, show_progress: bool = True) -> tuple[dict, np.ndarray]:
    """The teacher `model`'s logits on the training split under each stored view, and the file's header."""
    if teacher_meta.get("data_hash") != data.source_hash:
        raise UserError(f"{teacher_path} was trained on another data source ({teacher_meta.get('data_source')}); "
                        f"its soft labels would cover images it may have trained on differently: use its data, or "
                        f"train a teacher on this one")
    train_idx, _ = data.split()
    x = data.train_x[train_idx]
    model = model.to(device).eval()
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    todo = stored_views(pad, views)
    out = np.zeros((len(x), len(todo), model(normalize(x[:1].to(device))).shape[1]), dtype=np.float16)
    t0 = time.perf_counter()
    jobs = [(v, lo) for v in range(len(todo)) for lo in range(0, len(x), batch_size)]
    for v, lo in progress(jobs, len(jobs), f"[Soft labels] {len(todo)} views x {len(x)} images", "batch",
                          not show_progress):
        flip, dy, dx = todo[v]
        xb = x[lo:lo + batch_size].to(device)
        n = len(xb)
        full = lambda value: torch.full((n,), value, device=device)  # noqa: E731
        xb = normalize(crop_flip(xb, full(dy), full(dx), full(flip).bool(), pad))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(xb.contiguous(memory_format=torch.channels_last) if bf16 else xb)
        out[lo:lo + n, v] = logits.float().cpu().numpy().astype(np.float16)
    header = {"format": FORMAT, "version": 1,
              "teacher": {"path": str(Path(teacher_path).resolve()), "sha256": file_sha256(teacher_path),
                          "model": teacher_meta["model"], "width": teacher_meta.get("width", 1.0),
                          "test_acc": teacher_meta.get("test_acc"), "val_acc": teacher_meta.get("val_acc")},
              "data_hash": data.source_hash, "data_source": data.source,
              "images": {"split": "training split (models/data.py): never the validation or test images",
                         "count": len(train_idx), "indices_sha256": indices_sha256(train_idx)},
              "crop_pad": pad, "views": views, "stored_views": todo, "classes": int(out.shape[2]),
              "precision": "bf16" if bf16 else "fp32", "logits_sha256": hashlib.sha256(out.tobytes()).hexdigest(),
              "seconds": round(time.perf_counter() - t0, 1)}
    return header, out


def write(path: str | os.PathLike, header: dict, logits: np.ndarray) -> None:
    def save(tmp: Path):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, logits=logits, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    atomic_write(path, save)


@dataclass
class SoftLabels:
    logits: torch.Tensor  # (images, stored views, classes), float32
    views: torch.Tensor  # view_index -> stored view
    header: dict
    sha256: str

    def to(self, device) -> "SoftLabels":
        return SoftLabels(self.logits.to(device), self.views.to(device), self.header, self.sha256)

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch keys (image * view_count + view, models/batching.iterate) -> (training-split image, its logits)."""
        n_views = len(self.views)
        image = keys // n_views
        return image, self.logits[image, self.views[keys % n_views]]


def read(path: str | os.PathLike, data, pad: int) -> SoftLabels:
    """Loads a soft-label file for `data`'s training split at crop padding `pad`; UserError if it does not fit."""
    path = Path(path)
    remake = "make it with: python train_baselines.py soft-labels --from <float checkpoint>"
    if not path.is_file():
        raise UserError(missing_file("soft-label file", path, remake))
    raw = path.read_bytes()  # read once: hashed for the checkpoint's record and parsed
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            logits = z["logits"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"soft-label file {path} is damaged or not one ({type(e).__name__}); {remake}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UserError(f"{path} is not a soft-label file (no '{FORMAT}' header); {remake}")
    if hashlib.sha256(np.ascontiguousarray(logits).tobytes()).hexdigest() != header.get("logits_sha256"):
        raise UserError(f"soft-label file {path} was altered or truncated (its logits' sha256 differs from its "
                        f"header's); {remake}")
    train_idx, _ = data.split()
    if header.get("data_hash") != data.source_hash:
        raise UserError(f"soft-label file {path} was made for another data source ({header.get('data_source')}); "
                        f"{remake} on this data")
    if header["images"]["count"] != len(train_idx) or logits.shape[0] != len(train_idx):
        raise UserError(f"soft-label file {path} covers {header['images']['count']} images, the training split "
                        f"has {len(train_idx)}; {remake} on this data")
    if header["images"]["indices_sha256"] != indices_sha256(train_idx):
        raise UserError(f"soft-label file {path} covers another split of the training images; {remake}")
    if header.get("crop_pad") != pad:
        raise UserError(f"soft-label file {path} holds the views of crop padding {header.get('crop_pad')}, the "
                        f"recipe draws padding {pad}; pass --crop-pad {header.get('crop_pad')}, or {remake} "
                        f"--crop-pad {pad}")
    n_classes = int(data.train_y.max()) + 1
    if header.get("classes") != n_classes or logits.shape[2] != n_classes:
        raise UserError(f"soft-label file {path} has {header.get('classes')} classes, the data {n_classes}; {remake}")
    if logits.shape[1] != len(stored_views(pad, header["views"])):
        raise UserError(f"soft-label file {path}: its logits do not match its views; {remake}")
    return SoftLabels(torch.from_numpy(logits.astype(np.float32)), view_map(pad, header["views"]), header,
                      hashlib.sha256(raw).hexdigest())

