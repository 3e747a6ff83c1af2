"""Attention transfer (Zagoruyko & Komodakis, 2017), as TAP.md section 5."""

from __future__ import annotations

import torch


def attention_map(a: torch.Tensor) -> torch.Tensor:
    """Per-sample unit-norm attention: sum_c A_c^2 for conv maps, a^2 for fc vectors."""
    a = a.float()
    q = a.pow(2).sum(1).flatten(1) if a.dim() == 4 else a.pow(2).flatten(1)
    return q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)


def attention_loss(student: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Batch mean of ||q_student - q_teacher||_2; `teacher_map` from attention_map()."""
    return (attention_map(student) - teacher_map).norm(dim=1).mean()
