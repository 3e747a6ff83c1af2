"""Integer-only inference of a QuantNet: the check that the INT8 teacher is real.

int8 weights x uint8 (or int8 input) codes, accumulated in int32, plus an
int32 bias; requantised to uint8 codes with a fixed-point multiplier
(int32 mantissa and right shift, as integer kernels do); max-pool on codes.
Pixels enter through a per-channel lookup table uint8 -> int8 code, and
float appears only in the final logits (fc3's int32 accumulator x scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.batching import MEAN, STD
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
    layers = []
    for i, st in enumerate(qnet.stages):
        wq, s_w, _ = (t.cpu() for t in qnet.int8_weights(i))
        wq, s_w = wq.to(torch.int32).flatten(1), s_w.double()
        s_in = torch.tensor(float(qnet.in_scale(i)), dtype=torch.float64)
        acc_scale = s_w * s_in
        bias = torch.round(qnet.biases[st.name].detach().cpu().double() / acc_scale).to(torch.int64)
        fan_in = wq.shape[1]
        if fan_in * W_QMAX * A_QMAX + bias.abs().max().item() > INT32_MAX:
            raise OverflowError(f"{st.name}: an int32 accumulator could overflow")
        if st.classifier:
            mant = shift = torch.zeros(len(bias), dtype=torch.int64)
        else:
            mant, shift = _fixed_point(acc_scale / float(qnet.act_scale(i)))
        layers.append(IntLayer(st.name, st.kind, st.padding, st.pool, st.flatten, st.classifier, wq, st.kernel,
                               bias.to(torch.int32), mant, shift, acc_scale))
    return lut, layers


def _requantize(acc: torch.Tensor, layer: IntLayer) -> torch.Tensor:
    """int32 accumulator (N, C, ...) -> uint8 codes: round(acc * M) with M = mant * 2^-shift.

    Rounds half to even, like the float simulation's torch.round.
    """
    view = (1, -1) + (1,) * (acc.dim() - 2)
    prod = acc.to(torch.int64) * layer.mantissa.view(view)
    shift = layer.shift.view(view)
    q = prod >> shift  # floor
    rem = prod - (q << shift)
    half = torch.ones_like(shift) << (shift - 1)
    q = q + ((rem > half) | ((rem == half) & (q % 2 == 1))).to(torch.int64)
    return q.clamp(0, A_QMAX).to(torch.int32)


def _int_linear(h: torch.Tensor, layer: IntLayer) -> torch.Tensor:
    """int32 accumulation of int8 weights x codes (+ bias), via im2col for convs."""
    if layer.kind == "conv":
        n, _, hh, ww = h.shape
        # unfold needs float; codes (|v| <= 255) are exact in float32.
        cols = F.unfold(h.float(), layer.kernel, padding=layer.padding).to(torch.int32)
        acc = layer.w @ cols  # (N, out, L) int32
        oh = hh + 2 * layer.padding - layer.kernel + 1
        acc = acc.view(n, -1, oh, ww + 2 * layer.padding - layer.kernel + 1)
        return acc + layer.bias.view(1, -1, 1, 1)
    return h.to(torch.int32) @ layer.w.T + layer.bias


@torch.no_grad()
def integer_logits(pixels: torch.Tensor, exported, tables: dict | None = None) -> torch.Tensor:
    """Logits for uint8 NCHW pixels using integer arithmetic only (float at the very end)."""
    lut, layers = exported
    h = torch.stack([lut[c][pixels[:, c].long()] for c in range(3)], dim=1)  # int8 codes as int32
    for layer in layers:
        if layer.flatten:
            h = h.flatten(1)
        acc = _int_linear(h, layer)
        if layer.classifier:
            return acc.double() * layer.acc_scale
        h = _requantize(acc, layer)  # ReLU is the clamp at 0
        if tables and layer.name in tables:
            h = apply_table(h, torch.as_tensor(np.asarray(tables[layer.name]), dtype=torch.int32))
        if layer.pool:
            h = max_pool2x2(h)
    raise AssertionError("unreachable: the last layer is the classifier")


def integer_predict(pixels: torch.Tensor, exported, batch_size: int = 500, tables: dict | None = None) -> torch.Tensor:
    return torch.cat([integer_logits(pixels[i:i + batch_size], exported, tables).argmax(1)
                      for i in range(0, len(pixels), batch_size)])
