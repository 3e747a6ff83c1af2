"""The training loop's pieces, shared by every stage and by the speed benchmark."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean (Hinton et al., 2015)."""
    return F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                    log_target=True, reduction="batchmean") * temperature * temperature


def make_optimizer(model: nn.Module, lr: float, wd: float, epochs: int, steps_per_epoch: int, stage: str):
    """SGD (Nesterov, momentum 0.9): one-cycle for a float model from scratch, cosine decay when fine-tuning."""
    # fused: one kernel for all parameters. PyTorch's default on the CPU is a Python loop of
    # small ops, 0.46 against 0.12 ms a step for LeNet-5 (benchmarks/README.md).
    groups = model.optimizer_groups(lr, wd) if hasattr(model, "optimizer_groups") else model.parameters()
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd, fused=True)
    total = epochs * steps_per_epoch
    if stage == "float":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25)
    else:  # fine-tuning from a trained model: no warm-up, cosine decay
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return opt, sched


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: a CUDA GPU, or a CPU with AVX512-BF16 or AMX (oneDNN's
    check). Elsewhere bf16 autocast is emulated and about 20x slower (measured on an AVX2 EPYC)."""
    if device.type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_loss(loss_of, device: torch.device):
    """`loss_of` under bf16 autocast with channels-last batches (the model is channels-last too)."""
    def loss(xb, yb):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return loss_of(xb.contiguous(memory_format=torch.channels_last), yb)
    return loss


def sgd_step(loss_of, xb: torch.Tensor, yb: torch.Tensor, opt) -> float:
    """One optimizer step on the batch's loss `loss_of(xb, yb)`; returns the loss."""
    loss = loss_of(xb, yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def train_epoch(model: nn.Module, batches, opt, sched, loss_of) -> float:
    """One pass of SGD steps over `batches`; returns the summed loss."""
    model.train()
    total = 0.0
    for xb, yb in batches:
        total += sgd_step(loss_of, xb, yb, opt)
        sched.step()
    return total


def step_seconds(model: nn.Module, batch_size: int, device: torch.device, bf16: bool = False) -> float:
    """One training step of `model` on a random batch, timed here: after a warm-up, the median of at least 3
    steps and of as many as fit in a second (at most 20), so that a busy moment does not make the estimate.

    What a plan's estimate rests on (the CPU in hand, its load now); `model` is trained a little, so pass a
    throwaway one."""
    model = model.to(device).train()
    ce = nn.CrossEntropyLoss()

    def loss_of(xb, yb):
        return ce(model(xb), yb)

    if bf16:
        model, loss_of = model.to(memory_format=torch.channels_last), bf16_loss(loss_of, device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)  # the global generator stays untouched
    xb = torch.randn(batch_size, 3, 32, 32, generator=gen).to(device)
    yb = torch.randint(0, 10, (batch_size,), generator=gen).to(device)
    sgd_step(loss_of, xb, yb, opt)
    times: list[float] = []
    while len(times) < 3 or (sum(times) < 1.0 and len(times) < 20):
        t = time.perf_counter()
        sgd_step(loss_of, xb, yb, opt)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]
