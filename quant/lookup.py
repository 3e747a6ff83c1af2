"""Applying a 256-entry lookup table to a tensor of activation codes (the TAP student).

The search applies tables to ~10 M codes per episode, so the lookup is built
for speed on the CPU:

  * codes are taken two at a time, in memory order, as one index c0 + 256*c1
    into a 65,536-entry *pair table* whose entry holds (T[c0], T[c1]) viewed
    as one double-width integer: one gather fetches two results, and
    torch's 1-D index_select (single-threaded, ~1.2-1.5 ns an element on
    this project's 2-core CPU) has half as many to do;
  * that index order is the one in which a little-endian machine stores two
    bytes: adjacent uint8 codes read as one uint16 *are* the pair index, with
    no arithmetic (~10x faster than computing it);
  * a channels-last map is read in its own memory order and stays
    channels-last;
  * callers that apply many tables to the same codes (the search's cached
    teacher codes) compute the pair indices once with `code_pairs`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from quant.tap import N_CODES

_WIDER = {1: torch.int16, 2: torch.int32, 4: torch.int64}  # an integer twice as wide as the table's entries


def is_channels_last(t: torch.Tensor) -> bool:
    """True for a 4-D map stored channels-last (NHWC memory) and not also plain contiguous."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _memory_order(q: torch.Tensor) -> tuple[torch.Tensor, Callable]:
    """q's elements as a flat tensor in memory order, and how to give a flat result q's shape and layout."""
    if is_channels_last(q):
        nhwc = q.permute(0, 2, 3, 1)  # a plain contiguous view of the same memory
        return nhwc.reshape(-1), lambda flat: flat.view(nhwc.shape).permute(0, 3, 1, 2)
    q = q.contiguous()
    return q.view(-1), lambda flat: flat.view(q.shape)


def code_pairs(q: torch.Tensor) -> torch.Tensor:
    """Adjacent codes of q (memory order) as int32 indices c0 + 256*c1; an odd count is padded with code 0."""
    return _flat_pairs(_memory_order(q)[0])


def _flat_pairs(flat: torch.Tensor) -> torch.Tensor:
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    if flat.dtype == torch.uint8 and sys.byteorder == "little" and flat.storage_offset() % 2 == 0:
        return flat.view(torch.uint16).to(torch.int32)  # the bytes c0, c1 read as c0 + 256*c1
    if flat.dtype not in (torch.float32, torch.float64, torch.int32, torch.int64):
        flat = flat.to(torch.int32)  # c0 + 256*c1 overflows uint8 and is inexact in float16
    return flat[0::2].add(flat[1::2], alpha=N_CODES).to(torch.int32)  # exact: codes are integers 0..255


def pair_table(table: torch.Tensor) -> torch.Tensor:
    """Entry i + 256*j holds (table[i], table[j]) in that memory order, viewed as one integer of twice the width."""
    if table.shape != (N_CODES,):
        raise ValueError(f"a lookup table has {N_CODES} entries, got shape {tuple(table.shape)}")
    second, first = torch.meshgrid(table, table, indexing="ij")  # [j, i] = (table[j], table[i])
    return torch.stack((first, second), -1).view(_WIDER[table.element_size()]).flatten()


def apply_table(q: torch.Tensor, table: torch.Tensor, pairs: torch.Tensor | None = None,
                pair_tab: torch.Tensor | None = None) -> torch.Tensor:
    """Replaces each code c of q by table[c], keeping q's shape and memory layout.

    The result has the table's dtype (a float q gets a float table). `pairs`
    (from code_pairs(q)) and `pair_tab` (from pair_table(table)) may be passed
    precomputed when the same codes or the same table are used again.
    """
    table = table.to(device=q.device, dtype=q.dtype if q.dtype.is_floating_point else table.dtype)
    flat, restore = _memory_order(q)
    if table.element_size() not in _WIDER:  # float64 and 64-bit ints: one gather per code
        return restore(table.index_select(0, flat.to(torch.int32)))
    if pairs is None:
        pairs = _flat_pairs(flat)
    if pair_tab is None:
        pair_tab = pair_table(table)
    out = pair_tab.index_select(0, pairs).view(table.dtype)
    return restore(out[: flat.numel()])  # drops the padding of an odd count


class _TableSTE(torch.autograd.Function):
    """table[q] forward. Backward: the gradient passes where q <= table[255] and stops above.

    A TAP's table rounds codes to levels up to tmax and saturates above it, and
    its last level is tmax itself, so table[255] = tmax: the gradient is a
    straight-through estimate of the rounding and a clamp's zero gradient
    beyond tmax, as for the activation codes themselves (quant/fake_quant.py).
    """

    @staticmethod
    def forward(ctx, q, table):
        ctx.save_for_backward(q <= table[-1].to(q.dtype))
        return apply_table(q, table)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def apply_table_ste(q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """apply_table with a straight-through gradient (see _TableSTE) when q needs one."""
    if not q.requires_grad:
        return apply_table(q, table)
    return _TableSTE.apply(q, table)


class _LearnedClipSTE(torch.autograd.Function):
    """table[q] forward, for a table whose clip tmax = table[255] follows a learned `alpha` (quant/finetune.py).

    Backward to q: as _TableSTE. Backward to alpha, in the manner of LSQ (Esser
    et al., 2020) and PACT (Choi et al., 2018): the table's levels scale with
    the clip, so d out / d alpha = (out - q) / alpha up to tmax (the
    straight-through derivative of alpha * T(q / alpha)) and 1 above it (a
    saturated code *is* the clip); the sum is multiplied by `grad_scale`.
    """

    @staticmethod
    def forward(ctx, q, alpha, table, grad_scale):
        out = apply_table(q, table)
        ctx.save_for_backward(q, out, alpha)
        ctx.tmax, ctx.grad_scale = table[-1].item(), grad_scale
        return out

    @staticmethod
    def backward(ctx, grad):
        q, out, alpha = ctx.saved_tensors
        inside = q <= ctx.tmax
        d_alpha = torch.where(inside, (out - q) / alpha, torch.ones_like(q))
        return grad * inside, (grad * d_alpha).sum().reshape(alpha.shape) * ctx.grad_scale, None, None


def apply_table_learned_clip(q: torch.Tensor, alpha: torch.Tensor, table: torch.Tensor,
                             grad_scale: float = 1.0) -> torch.Tensor:
    """apply_table with the gradients of _LearnedClipSTE: to q, and to the clip `alpha` (codes) that made `table`."""
    return _LearnedClipSTE.apply(q, alpha, table, grad_scale)
