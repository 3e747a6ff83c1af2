"""Integer-only inference of a QuantNet: the check that the INT8 teacher is real.

int8 weights x uint8 (or int8 input) codes, accumulated in int32, plus an
int32 bias; requantised to uint8 codes with a fixed-point multiplier
(int32 mantissa and right shift, as integer kernels do); max-pool on codes.
A residual join requantises two terms with one shift: the conv's int32
accumulator times its mantissa plus the source's codes times theirs, added
in int64 and rounded once (one rounding, as the float simulation's
round((acc * s_acc + q_r * s_r) / s_out)); global average pooling before
the classifier is a sum of codes whose 1/(H*W) joins the logits' scale.
Pixels enter through a per-channel lookup table uint8 -> int8 code, and
float appears only in the final logits (fc3's int32 accumulator x scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.batching import MEAN, STD
from models.net import map_sizes, shortcut
from models.pooling import max_pool2x2
from quant.fake_quant import A_QMAX, W_QMAX
from quant.lookup import apply_table
from quant.qat import QuantNet

INT32_MAX = 2**31 - 1
MANTISSA_BITS = 31


@dataclass
class IntLayer:
    name: str
    kind: str
    padding: int
    pool: bool
    flatten: bool
    classifier: bool
    w: torch.Tensor  # int32 codes of the int8 weights, (out, fan_in)
    kernel: int
    bias: torch.Tensor  # int32
    mantissa: torch.Tensor  # int64 per channel, in [2^30, 2^31)
    shift: torch.Tensor  # int64 per channel
    acc_scale: torch.Tensor  # float per channel: only for the classifier's logits
    stride: int = 1
    residual: str | None = None  # the layer whose codes join this one's accumulator (models.net.Stage)
    skip_mantissa: torch.Tensor | None = None  # int64 per channel: the source's codes at 2^-shift of the output
    gap_size: int = 0  # positions a global average pool before this layer sums (0: none)


def _fixed_point(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """m (float64 > 0) ~= mantissa * 2^-shift with a 31-bit mantissa."""
    exp = torch.floor(torch.log2(m)) + 1  # m = frac * 2^exp, frac in [0.5, 1)
    mant = torch.round(m / torch.pow(2.0, exp) * 2**MANTISSA_BITS).to(torch.int64)
    shift = (MANTISSA_BITS - exp).to(torch.int64)
    return mant, shift


def export_int8(qnet: QuantNet) -> tuple[torch.Tensor, list[IntLayer]]:
    """Integer tensors of a trained QuantNet: (input LUT (3, 256) int32, layers)."""
    pix = torch.arange(256, dtype=torch.float64) / 255
    lut = torch.stack([torch.clamp(torch.round(((pix - m) / s) / qnet.input_scale), -W_QMAX, W_QMAX)
                       for m, s in zip(MEAN, STD)]).to(torch.int32)
    layers, sides = [], map_sizes(qnet.stages)
    for i, st in enumerate(qnet.stages):
        wq, s_w, _ = (t.cpu() for t in qnet.int8_weights(i))
        wq, s_w = wq.to(torch.int32).flatten(1), s_w.double()
        s_in = torch.tensor(float(qnet.in_scale(i)), dtype=torch.float64)
        acc_scale = s_w * s_in
        bias = torch.round(qnet.biases[st.name].detach().cpu().double() / acc_scale).to(torch.int64)
        gap_size = sides[st.name] ** 2 if st.gap else 0
        terms = wq.shape[1] * max(gap_size, 1)  # a pooled fc sums every position's codes
        acc_max = terms * W_QMAX * A_QMAX + bias.abs().max().item() * max(gap_size, 1)
        if acc_max > INT32_MAX:
            raise OverflowError(f"{st.name}: an int32 accumulator could overflow")
        skip_mant = None
        if st.classifier:
            mant = shift = torch.zeros(len(bias), dtype=torch.int64)
        else:
            s_out = float(qnet.act_scale(i))
            mant, shift = _fixed_point(acc_scale / s_out)
            if st.residual is not None:
                ratio = float(qnet.act_scale(qnet.stage_index(st.residual))) / s_out
                skip_mant = torch.round(ratio * torch.pow(2.0, shift.double())).to(torch.int64)
                if acc_max * mant.max().item() + A_QMAX * skip_mant.max().item() >= 2**63:
                    raise OverflowError(f"{st.name}: the residual join could overflow int64")
        layers.append(IntLayer(st.name, st.kind, st.padding, st.pool, st.flatten, st.classifier, wq, st.kernel,
                               bias.to(torch.int32), mant, shift, acc_scale, st.stride, st.residual, skip_mant,
                               gap_size))
    return lut, layers


def _requantize(acc: torch.Tensor, layer: IntLayer, skip: torch.Tensor | None = None) -> torch.Tensor:
    """int32 accumulator (N, C, ...) -> uint8 codes: round(acc * M) with M = mant * 2^-shift, or for a
    residual join round((acc * mant + skip * skip_mant) * 2^-shift).

    Rounds half to even, like the float simulation's torch.round.
    """
    view = (1, -1) + (1,) * (acc.dim() - 2)
    prod = acc.to(torch.int64) * layer.mantissa.view(view)
    if layer.residual is not None:
        prod = prod + shortcut(skip, acc.shape).to(torch.int64) * layer.skip_mantissa.view(view)
    shift = layer.shift.view(view)
    q = prod >> shift  # floor
    rem = prod - (q << shift)
    half = torch.ones_like(shift) << (shift - 1)
    q = q + ((rem > half) | ((rem == half) & (q % 2 == 1))).to(torch.int64)
    return q.clamp(0, A_QMAX).to(torch.int32)


def _int_linear(h: torch.Tensor, layer: IntLayer) -> torch.Tensor:
    """int32 accumulation of int8 weights x codes (+ bias).

    The products and sums are carried in float64, where every integer below 2^53 is exact: each product is
    at most 255 x 127 and export_int8 refuses a layer whose sum could pass 2^31, so no step rounds and the
    result is the integer sum whatever the order of the additions. That lets PyTorch's BLAS convolution do
    the work (PyTorch has no fast int32 matmul on the CPU: ~30x slower on ResNet-20).
    """
    if layer.kind == "conv":
        w = layer.w.double().view(len(layer.w), -1, layer.kernel, layer.kernel)
        acc = F.conv2d(h.double(), w, stride=layer.stride, padding=layer.padding).to(torch.int32)
        return acc + layer.bias.view(1, -1, 1, 1)
    if layer.gap_size:  # the sum of every position's codes; the bias counts once per position
        h = h.double().sum((2, 3))
        return (h @ layer.w.double().T).to(torch.int32) + layer.bias * layer.gap_size
    return (h.double() @ layer.w.double().T).to(torch.int32) + layer.bias


@torch.no_grad()
def integer_logits(pixels: torch.Tensor, exported, tables: dict | None = None) -> torch.Tensor:
    """Logits for uint8 NCHW pixels using integer arithmetic only (float at the very end)."""
    lut, layers = exported
    h = torch.stack([lut[c][pixels[:, c].long()] for c in range(3)], dim=1)  # int8 codes as int32
    sources, kept = {layer.residual for layer in layers if layer.residual}, {}
    for layer in layers:
        if layer.flatten:
            h = h.flatten(1)
        acc = _int_linear(h, layer)
        if layer.classifier:
            return acc.double() * layer.acc_scale / max(layer.gap_size, 1)
        h = _requantize(acc, layer, kept.get(layer.residual))  # ReLU is the clamp at 0
        if tables and layer.name in tables:
            h = apply_table(h, torch.as_tensor(np.asarray(tables[layer.name]), dtype=torch.int32))
        if layer.pool:
            h = max_pool2x2(h)
        if layer.name in sources:
            kept[layer.name] = h
    raise AssertionError("unreachable: the last layer is the classifier")


def integer_predict(pixels: torch.Tensor, exported, batch_size: int = 500, tables: dict | None = None) -> torch.Tensor:
    return torch.cat([integer_logits(pixels[i:i + batch_size], exported, tables).argmax(1)
                      for i in range(0, len(pixels), batch_size)])
