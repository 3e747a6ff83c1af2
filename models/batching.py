"""Batches of CIFAR-10 for training and evaluation: normalisation and augmentation.

Images stay uint8 until a batch is drawn; normalisation and augmentation run
on whole batches of tensors on the target device, never image by image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

_AFFINE_CACHE: dict = {}


def normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float32 normalised with the CIFAR-10 channel statistics."""
    dev = x_uint8.device
    if dev not in _AFFINE_CACHE:
        mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
        _AFFINE_CACHE[dev] = (1 / (255 * std), -mean / std)
    scale, shift = _AFFINE_CACHE[dev]
    return x_uint8.float().mul_(scale).add_(shift)


CROP_PAD = 1  # random 32x32 crop of the padded image; 1 beat 0, 2, 3 and the usual 4 on validation (benchmarks/README.md)


def view_count(pad: int) -> int:
    """The distinct augmentations at crop padding `pad`: (2 pad + 1)^2 crop offsets, each flipped or not."""
    return 2 * (2 * pad + 1) ** 2


def view_index(dy, dx, flip, pad: int):
    """An augmentation's number in 0..view_count(pad) - 1: flip, then the row offset, then the column offset."""
    side = 2 * pad + 1
    return (flip * side + dy) * side + dx


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = CROP_PAD, views: bool = False):
    """Random crop with `pad`-pixel zero padding and horizontal flip, per image, batched; with `views`, also each
    image's view_index (the soft labels of the view drawn, models/soft_labels.py).

    `x` is uint8 NCHW; random numbers come from `generator` (on the CPU) so a
    resumed run draws the same crops as an uninterrupted one.

    Each output row is a contiguous run of a padded image's row, so the whole
    crop is one `index_select` of N*C*H row starts from a view of every W-long
    run of the flat padded batch: it copies rows, where an element-wise
    gather (`take`, 1.1 ms for a batch of 128 here) computes and reads an
    index per pixel (0.57 ms; benchmarks/README.md). A flipped image's crop is the
    crop of the flipped padded image at the mirrored column offset.
    """
    n = len(x)
    offs = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = crop_flip(x, offs[0].to(x.device), offs[1].to(x.device), flip.to(x.device), pad)
    return (out, view_index(offs[0], offs[1], flip.long(), pad)) if views else out


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Image i padded by `pad`, cropped to its size at row dy[i], column dx[i], flipped where flip[i]."""
    n, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    ph, pw = padded.shape[-2:]
    images = torch.cat([padded, padded.flip(3)]).reshape(-1)  # image i flipped is image n + i
    col = torch.where(flip, 2 * pad - dx, dx)
    first = (torch.arange(n, device=dev) + n * flip) * (c * ph * pw) + dy * pw + col  # (N,)
    starts = (first[:, None, None] + (torch.arange(c, device=dev) * (ph * pw))[None, :, None]
              + (torch.arange(h, device=dev) * pw)[None, None, :])  # (N, C, H)
    runs = images.as_strided((images.numel() - w + 1, w), (1, 1))  # a view: run k = images[k:k+w]
    return runs.index_select(0, starts.reshape(-1)).view(n, c, h, w)


def iterate(x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device | str,
            generator: torch.Generator | None = None, train: bool = False, crop_pad: int = CROP_PAD,
            view_keys: bool = False):
    """Yields normalised (x, y) batches on `device`; shuffled and augmented when `train`.

    With `view_keys` (and `train`), each y becomes y * view_count(crop_pad) + the view drawn: pass the
    images' indices as `y` to look up per-view soft labels."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if train else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        # index_select copies whole images (0.04 ms for 128 here); x[idx] goes pixel by pixel (0.35 ms).
        xb = x.index_select(0, idx).to(device, non_blocking=True)
        yb = y.index_select(0, idx)
        if train and view_keys:
            xb, views = augment(xb, generator, crop_pad, views=True)
            yb = yb * view_count(crop_pad) + views
        elif train:
            xb = augment(xb, generator, crop_pad)
        yield normalize(xb), yb.to(device, non_blocking=True)


def input_abs_max() -> float:
    """Largest |value| a normalised pixel can take: fixes the input INT8 scale."""
    return max(max(abs(0 - m) / s, abs(1 - m) / s) for m, s in zip(MEAN, STD))
