"""2x2 max-pooling, stride 2: the one pooling every model, the QAT model, the
integer reference and the search's scorer use.

Why not F.max_pool2d: on the CPU it computes an int64 argmax for every
output with a scalar loop; for LeNet-5's conv1 output (128 x 6 x 28 x 28)
that is 2.3 ms of a ~15 ms training step. Two elementwise maxima do the
forward in ~0.25 ms, and the backward below routes the gradient with a few
vectorised float ops (benchmarks/README.md). Its values equal F.max_pool2d's
exactly; so do its gradients wherever a window's maximum is unique.

The maxima pair rows first (x[..., 0::2, :] with x[..., 1::2, :] keeps whole
rows contiguous, so those ops vectorise), then columns. A tie goes to the
left column, then the top row; F.max_pool2d takes the first maximum in
raster order. The two differ only where the top-right and bottom-left
elements tie above the top-left one, and either is a valid subgradient: one
maximal element of the window receives the window's gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _second_wins(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """1.0 where second > first, else 0.0 (ties: first). Float arithmetic only:
    a comparison's bool tensor and its conversion cost ~4x more here."""
    return torch.sub(second, first).clamp_(0, 1).ceil_()


def _pool_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.maximum(x[..., 0::2, :], x[..., 1::2, :])  # (N, C, H/2, W)


def _pool_columns(rows: torch.Tensor) -> torch.Tensor:
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rows = _pool_rows(x)
        ctx.save_for_backward(x, rows)
        return _pool_columns(rows)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        x, rows = ctx.saved_tensors
        # Columns: the right column's share is g where it won, the left gets the rest.
        g_rows = torch.empty_like(rows)
        g_right = torch.mul(g, _second_wins(rows[..., 0::2], rows[..., 1::2]), out=g_rows[..., 1::2])
        torch.sub(g, g_right, out=g_rows[..., 0::2])
        # Rows: the same split between the top and bottom row of each pair.
        gx = torch.empty_like(x)
        g_bottom = torch.mul(g_rows, _second_wins(x[..., 0::2, :], x[..., 1::2, :]), out=gx[..., 1::2, :])
        torch.sub(g_rows, g_bottom, out=gx[..., 0::2, :])
        return gx


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2) for float tensors and integer code tensors alike (NCHW).

    An odd last row or column is dropped, as F.max_pool2d does.
    """
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = x[..., : h - h % 2, : w - w % 2]
    if x.requires_grad and torch.is_grad_enabled():
        if x.device.type != "cpu":  # the scalar loop above is a CPU problem
            return F.max_pool2d(x, 2)
        return _MaxPool2x2.apply(x)
    return _pool_columns(_pool_rows(x))
