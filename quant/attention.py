"""Attention transfer (Zagoruyko & Komodakis, 2017), as docs/tap.md section 5.

A layer's attention map is its *energy* (sum_c A_c^2 per position of a conv
map, a^2 per feature of an fc vector) scaled to unit norm per sample. The map
is scale-free, so activation codes give the same map as dequantised values.
"""

from __future__ import annotations

import torch

from quant.lookup import apply_table, code_pairs, is_channels_last


def energy(a: torch.Tensor) -> torch.Tensor:
    """(N, H*W) channel sums of squares of a conv map, (N, F) squares of an fc vector; float32.

    A conv map is summed over channels as an (N, H*W, C) view: for the
    search's channels-last maps that is their memory order, ~1.5x faster
    than summing dim 1.
    """
    if a.dim() == 4:
        a = a.permute(0, 2, 3, 1).flatten(1, 2)
    sq = a.float()
    sq = sq.square_() if sq is not a else sq.square()  # in place on a fresh copy: no second buffer
    return sq.sum(-1) if sq.dim() == 3 else sq.flatten(1)


def square_pair_table(table: torch.Tensor) -> torch.Tensor:
    """float32 entry c0 + 256*c1 = T[c0]^2 + T[c1]^2 (quant/lookup.py's pair order); exact for codes."""
    sq = table.float().square()
    return (sq[None, :] + sq[:, None]).flatten()


def tabled_energy(q: torch.Tensor, table: torch.Tensor, pairs: torch.Tensor | None = None,
                  sq_pair_tab: torch.Tensor | None = None) -> torch.Tensor:
    """energy(table[q]) for a map of codes q, without materialising table[q] where it can.

    For a channels-last conv map with an even channel count, each pair of
    adjacent codes in memory lies in one position, so one gather from the
    table of pair squares yields half a channel sum: the search's conv2
    attention costs one gather instead of a lookup, a float copy and a
    square. Sums of squares of codes are integers below 2^24, exact in
    float32 in any order.
    """
    if not (is_channels_last(q) and q.shape[1] % 2 == 0):
        return energy(apply_table(q, table, pairs=pairs))
    if pairs is None:
        pairs = code_pairs(q)
    if sq_pair_tab is None:
        sq_pair_tab = square_pair_table(table)
    n, c, h, w = q.shape
    return sq_pair_tab.index_select(0, pairs).view(n, h * w, c // 2).sum(-1)


def unit(e: torch.Tensor) -> torch.Tensor:
    """Each sample's energy scaled to unit L2 norm: the attention map."""
    return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)


def attention_map(a: torch.Tensor) -> torch.Tensor:
    """Per-sample unit-norm attention map of a conv map or fc vector."""
    return unit(energy(a))


def map_distance(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Batch mean of ||q_student - q_teacher||_2 between two attention maps."""
    return (student_map - teacher_map).norm(dim=1).mean()


def attention_loss(student: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """The layer's loss: map_distance(attention_map(student), teacher_map)."""
    return map_distance(attention_map(student), teacher_map)
