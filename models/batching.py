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


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = CROP_PAD) -> torch.Tensor:
    """Random crop with `pad`-pixel zero padding and horizontal flip, per image, batched.

    `x` is uint8 NCHW; random numbers come from `generator` (on the CPU) so a
    resumed run draws the same crops as an uninterrupted one.

    Each output row is a contiguous run of a padded image's row, so the whole
    crop is one `index_select` of N*C*H row starts from a view of every W-long
    run of the flat padded batch: it copies rows, where an element-wise
    gather (`take`, 1.1 ms for a batch of 128 here) computes and reads an
    index per pixel (0.57 ms; benchmarks/README.md). A flipped image's crop is the
    crop of the flipped padded image at the mirrored column offset.
    """
    n, c, h, w = x.shape
    dev = x.device
    offs = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(dev)
    flip = (torch.rand(n, generator=generator) < 0.5).to(dev)
    padded = F.pad(x, (pad, pad, pad, pad))
    ph, pw = padded.shape[-2:]
    images = torch.cat([padded, padded.flip(3)]).reshape(-1)  # image i flipped is image n + i
    col = torch.where(flip, 2 * pad - offs[1], offs[1])
    first = (torch.arange(n, device=dev) + n * flip) * (c * ph * pw) + offs[0] * pw + col  # (N,)
    starts = (first[:, None, None] + (torch.arange(c, device=dev) * (ph * pw))[None, :, None]
              + (torch.arange(h, device=dev) * pw)[None, None, :])  # (N, C, H)
    runs = images.as_strided((images.numel() - w + 1, w), (1, 1))  # a view: run k = images[k:k+w]
    return runs.index_select(0, starts.reshape(-1)).view(n, c, h, w)


def iterate(x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device | str,
            generator: torch.Generator | None = None, train: bool = False, crop_pad: int = CROP_PAD):
    """Yields normalised (x, y) batches on `device`; shuffled and augmented when `train`."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if train else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        # index_select copies whole images (0.04 ms for 128 here); x[idx] goes pixel by pixel (0.35 ms).
        xb = x.index_select(0, idx).to(device, non_blocking=True)
        if train:
            xb = augment(xb, generator, crop_pad)
        yield normalize(xb), y.index_select(0, idx).to(device, non_blocking=True)


def input_abs_max() -> float:
    """Largest |value| a normalised pixel can take: fixes the input INT8 scale."""
    return max(max(abs(0 - m) / s, abs(1 - m) / s) for m, s in zip(MEAN, STD))
