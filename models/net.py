"""A float CNN described by a flat list of stages.

Every supported model (LeNet-5, AlexNet, VGG) is a straight chain of
conv/linear layers, each followed by ReLU (except the classifier), with
optional max-pooling after convs and one flatten between the conv and fc
parts. Describing them as data lets the QAT model (quant/qat.py), the
integer-only reference (quant/integer.py) and the search env walk the same
chain without per-model code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
import torch.nn.functional as F

from models.pooling import max_pool2x2


@dataclass(frozen=True)
class Stage:
    """One quantized layer of the chain and what follows it.

    name        layer name ("conv1", "fc2", ...); also the module attribute.
    kind        "conv" or "fc".
    in_ch/out_ch  channels (conv) or features (fc).
    kernel/padding  conv geometry (ignored for fc).
    pool        max-pool 2x2 after ReLU (conv only).
    bn          BatchNorm after the layer, before ReLU (BatchNorm2d for a conv,
                BatchNorm1d for an fc); folded into the layer for QAT.
    flatten     flatten the input before this layer (the first fc).
    classifier  the last layer: no ReLU, never approximated.
    """

    name: str
    kind: str
    in_ch: int
    out_ch: int
    kernel: int = 0
    padding: int = 0
    pool: bool = False
    bn: bool = False
    flatten: bool = False
    classifier: bool = False

    @property
    def record_point(self) -> str:
        """The guide's name for this layer's post-ReLU INT8 codes."""
        if self.kind == "conv":
            return f"block_output.{self.name}"
        return f"classifier.{self.name}.out"


class StagedNet(nn.Module):
    """Float model built from a list of stages (see module docstring)."""

    def __init__(self, model_name: str, stages: list[Stage], width: float = 1.0):
        super().__init__()
        if not stages or not stages[-1].classifier:
            raise ValueError("the last stage must be the classifier")
        self.model_name = model_name
        self.width = width  # the factor its stages were scaled by (models.scaled_stages), recorded in checkpoints
        self.stages = list(stages)
        for st in self.stages:
            if st.kind == "conv":
                setattr(self, st.name, nn.Conv2d(st.in_ch, st.out_ch, st.kernel, padding=st.padding))
            elif st.kind == "fc":
                setattr(self, st.name, nn.Linear(st.in_ch, st.out_ch))
            else:
                raise ValueError(f"unknown stage kind {st.kind!r}")
            if st.bn:
                if st.classifier:
                    raise ValueError("the classifier carries no BatchNorm")
                norm = nn.BatchNorm2d if st.kind == "conv" else nn.BatchNorm1d
                setattr(self, f"{st.name}_bn", norm(st.out_ch))

    @property
    def quant_layers(self) -> list[str]:
        """Layers whose activations are INT8 codes (all but the classifier)."""
        return [st.name for st in self.stages if not st.classifier]

    @property
    def bn_layers(self) -> list[str]:
        return [st.name for st in self.stages if st.bn]

    @property
    def batchnorm(self) -> str:
        """Where BatchNorm sits: "none", "conv" or "all" (models.BATCHNORM_CHOICES)."""
        kinds = {st.kind for st in self.stages if st.bn}
        return "all" if "fc" in kinds else "conv" if kinds else "none"

    def forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        for st in self.stages:
            if st.flatten:
                x = x.flatten(1)
            x = getattr(self, st.name)(x)
            if st.classifier:
                return x
            if st.bn:
                x = getattr(self, f"{st.name}_bn")(x)
            if st.pool and record is None:
                # ReLU and max commute: the same output and gradients, with
                # ReLU's forward and backward on 4x fewer elements.
                x = F.relu(max_pool2x2(x))
                continue
            x = F.relu(x)
            if record is not None:
                record[st.record_point] = x
            if st.pool:
                x = max_pool2x2(x)
        raise AssertionError("unreachable: the last stage is the classifier")


@torch.no_grad()
def folded_weights(model: StagedNet, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer `name`'s weight and bias with its BatchNorm (running statistics) folded in.

    BN(W x + b) = g * (W x + b - mean) + beta with g = gamma / sqrt(var + eps),
    so the folded layer is (g W) x + (g (b - mean) + beta): the network that is
    quantized and deployed has exactly the layers of the BN-free model.
    """
    st = model.stages[[s.name for s in model.stages].index(name)]
    layer = getattr(model, name)
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    if st.bn:
        bn = getattr(model, f"{name}_bn")
        g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w = w * g.view(-1, *([1] * (w.dim() - 1)))
        b = (b - bn.running_mean) * g + bn.bias.detach()
    return w, b


def fold_batchnorm(model: StagedNet) -> StagedNet:
    """The BN-free network `model` computes in eval mode (what QAT starts from)."""
    plain = StagedNet(model.model_name, [replace(st, bn=False) for st in model.stages], model.width)
    for st in model.stages:
        w, b = folded_weights(model, st.name)
        getattr(plain, st.name).weight.data.copy_(w)
        getattr(plain, st.name).bias.data.copy_(b)
    return plain.eval()


def describe(model: StagedNet, image_size: int = 32) -> list[str]:
    """One line per layer: name, record point and output shape (the guide's debug tip)."""
    lines = [f"{model.model_name}: input (N, 3, {image_size}, {image_size}), "
             f"{sum(p.numel() for p in model.parameters()):,} parameters"]
    x = torch.zeros(1, 3, image_size, image_size)
    model = model.eval()
    with torch.no_grad():
        for st in model.stages:
            if st.flatten:
                x = x.flatten(1)
                lines.append(f"  flatten          -> {tuple(x.shape)}")
            x = getattr(model, st.name)(x)
            if st.classifier:
                lines.append(f"  {st.name:<6} {st.kind:<4} -> {tuple(x.shape)}  (classifier, not approximated)")
                break
            x = F.relu(x)
            lines.append(f"  {st.name:<6} {st.kind:<4} -> {tuple(x.shape)}  record point {st.record_point}")
            if st.pool:
                x = max_pool2x2(x)
                lines.append(f"  maxpool          -> {tuple(x.shape)}")
    lines.append(f"quantized layers: {', '.join(model.quant_layers)}")
    return lines
