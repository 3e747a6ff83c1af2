"""INT8 fake quantization with straight-through gradients (docs/tap.md section 3).

  * weights: signed 8-bit, symmetric, per output channel, codes -127..127;
  * post-ReLU activations: unsigned 8-bit codes 0..255 per tensor, zero point
    0, `q = clamp(round(y / s), 0, 255)`; the next layer reads `s * q`;
  * biases: int32 on the accumulator's grid `s_in * s_w` (as integer kernels
    add them), so the float simulation and the integer-only reference agree.

Rounding is round-half-to-even (torch.round) everywhere, in the integer
reference too.
"""

from __future__ import annotations

import torch

W_QMAX = 127
A_QMAX = 255


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward."""
    if not x.requires_grad:  # inference (the search's hot path): skip the STE arithmetic
        return torch.round(x)
    return x + (torch.round(x) - x).detach()


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric scale so that max |w| maps to 127."""
    amax = w.detach().flatten(1).abs().amax(dim=1)
    return torch.clamp(amax, min=1e-8) / W_QMAX


def weight_codes(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 codes (as float, STE) of `w` for per-channel `scale`.

    The scale comes from each channel's max, so nothing is out of range but
    by rounding error: a plain STE (gradient 1 everywhere) keeps the largest
    weight of each channel trainable, which a clamp's zero gradient would not.
    """
    s = scale.view(-1, *([1] * (w.dim() - 1)))
    x = w / s
    return x + (torch.clamp(torch.round(x), -W_QMAX, W_QMAX) - x).detach()


def fake_quant_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (dequantised weight, per-channel scale)."""
    scale = weight_scale(w)
    return weight_codes(w, scale) * scale.view(-1, *([1] * (w.dim() - 1))), scale


def fake_quant_bias(b: torch.Tensor, acc_scale: torch.Tensor) -> torch.Tensor:
    """Bias rounded to the int32 accumulator grid `acc_scale = s_in * s_w`."""
    return ste_round(b / acc_scale) * acc_scale


class _ActivationCodes(torch.autograd.Function):
    """q = clamp(round(y / s), 0, 255) with the straight-through gradient 1/s
    inside [0, 255 s] and 0 outside (which makes the clamp at 0 the ReLU).

    One fused function instead of ~6 autograd-tracked elementwise ops: it
    keeps a QAT epoch close to a float one on the CPU.
    """

    @staticmethod
    def forward(ctx, y, scale):
        x = y / scale
        ctx.save_for_backward((x >= 0) & (x <= A_QMAX), scale)
        return x.clamp_(0, A_QMAX).round_()

    @staticmethod
    def backward(ctx, grad):
        inside, scale = ctx.saved_tensors
        return grad * inside / scale, None


def activation_codes(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """uint8 codes (as float) of `y` (ReLU included); gradient passes inside [0, 255*s]."""
    if not y.requires_grad:  # inference (the search's hot path): no mask to keep
        return (y / scale).clamp_(0, A_QMAX).round_()
    return _ActivationCodes.apply(y, scale)


def input_codes(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Signed int8 codes of the normalised network input (fixed symmetric scale)."""
    return torch.clamp(torch.round(x / scale), -W_QMAX, W_QMAX)
