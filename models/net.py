"""A float CNN described by a flat list of stages: a chain with skip edges.

Every supported model is a list of conv/linear layers in execution order,
each followed by ReLU (except the classifier), with optional max-pooling
after convs and one flatten (or global average pool) before the first fc.
Each stage reads the output of the stage before it; a residual stage also
adds an earlier stage's output before its ReLU (`Stage.residual`), through
the parameter-free shortcut of He et al.'s CIFAR ResNets where the shapes
differ (`shortcut`). LeNet-5, AlexNet and VGG are the chains with no skip
edge; ResNet-20 is the chain with nine. Describing them as data lets the
QAT model (quant/qat.py), the integer-only reference (quant/integer.py),
the scorer and the ONNX export walk the same list without per-model code.
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
    kernel/padding/stride  conv geometry (ignored for fc).
    pool        max-pool 2x2 after ReLU (conv only).
    residual    name of an earlier stage whose output (what its successor reads) is
                added to this layer's output before the ReLU (a residual block's
                join); `shortcut` matches the shapes.
    bn          BatchNorm after the layer, before ReLU (BatchNorm2d for a conv,
                BatchNorm1d for an fc); folded into the layer for QAT.
    flatten     flatten the input before this layer (the first fc).
    gap         global average pool the input before this layer (an fc after convs).
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
    stride: int = 1
    residual: str | None = None
    gap: bool = False

    @property
    def record_point(self) -> str:
        """The guide's name for this layer's post-ReLU INT8 codes."""
        if self.kind == "conv":
            return f"block_output.{self.name}"
        return f"classifier.{self.name}.out"


def shortcut(x: torch.Tensor, like: torch.Size) -> torch.Tensor:
    """A residual source `x` (N, C, H, W) shaped as `like` (N, C', H', W'), with no parameters: every
    (H/H')-th position, and zero channels added on both sides when C' > C. This is option A of He et al.
    (2016), the ResNet-20 of the CIFAR-10 results; on codes it moves codes (zero is code 0), so the
    QAT model, the integer reference and the ONNX graph compute it exactly alike."""
    step = x.shape[-1] // like[-1]
    if step > 1:
        x = x[..., ::step, ::step]
    extra = like[1] - x.shape[1]
    if extra:
        x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
    return x


def check_stages(stages: list[Stage]) -> None:
    """Refuses a stage list whose skip edges or pooling do not make sense (ValueError)."""
    if not stages or not stages[-1].classifier:
        raise ValueError("the last stage must be the classifier")
    seen = set()
    for st in stages:
        if st.residual is not None and st.residual not in seen:
            raise ValueError(f"{st.name}: its residual source {st.residual!r} is not an earlier hidden layer")
        if st.residual is not None and st.kind != "conv":
            raise ValueError(f"{st.name}: only a conv takes a residual add")
        if st.gap and st.kind != "fc":
            raise ValueError(f"{st.name}: global average pooling comes before an fc layer")
        if not st.classifier:
            seen.add(st.name)


def residual_sources(stages: list[Stage]) -> set[str]:
    """The stages whose output some later stage adds (kept alive until then)."""
    return {st.residual for st in stages if st.residual is not None}


def map_sizes(stages: list[Stage], image_size: int = 32) -> dict[str, int]:
    """Each conv stage's output side (before its pool) and, for the stage that pools globally, its input
    side: the shapes the integer export needs without running the net."""
    side, sizes = image_size, {}
    for st in stages:
        if st.kind == "conv":
            side = (side + 2 * st.padding - st.kernel) // st.stride + 1
            sizes[st.name] = side
            if st.pool:
                side //= 2
        elif st.gap:
            sizes[st.name] = side
    return sizes


class StagedNet(nn.Module):
    """Float model built from a list of stages (see module docstring)."""

    def __init__(self, model_name: str, stages: list[Stage], width: float = 1.0):
        super().__init__()
        check_stages(stages)
        self.model_name = model_name
        self.width = width  # the factor its stages were scaled by (models.scaled_stages), recorded in checkpoints
        self.stages = list(stages)
        for st in self.stages:
            if st.kind == "conv":
                setattr(self, st.name, nn.Conv2d(st.in_ch, st.out_ch, st.kernel, stride=st.stride, padding=st.padding))
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
        sources, kept = residual_sources(self.stages), {}
        for st in self.stages:
            if st.gap:
                x = x.mean((2, 3))
            if st.flatten:
                x = x.flatten(1)
            x = getattr(self, st.name)(x)
            if st.classifier:
                return x
            if st.bn:
                x = getattr(self, f"{st.name}_bn")(x)
            if st.residual is not None:
                x = x + shortcut(kept[st.residual], x.shape)
            if st.pool and record is None and st.name not in sources:
                # ReLU and max commute: the same output and gradients, with
                # ReLU's forward and backward on 4x fewer elements.
                x = F.relu(max_pool2x2(x))
                continue
            x = F.relu(x)
            if record is not None:
                record[st.record_point] = x
            if st.pool:
                x = max_pool2x2(x)
            if st.name in sources:
                kept[st.name] = x
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
    sources, kept = residual_sources(model.stages), {}
    model = model.eval()
    with torch.no_grad():
        for st in model.stages:
            if st.gap:
                x = x.mean((2, 3))
                lines.append(f"  global avg pool  -> {tuple(x.shape)}")
            if st.flatten:
                x = x.flatten(1)
                lines.append(f"  flatten          -> {tuple(x.shape)}")
            x = getattr(model, st.name)(x)
            if st.classifier:
                lines.append(f"  {st.name:<6} {st.kind:<4} -> {tuple(x.shape)}  (classifier, not approximated)")
                break
            if st.residual is not None:
                x = x + shortcut(kept[st.residual], x.shape)
            x = F.relu(x)
            join = f" (+ {st.residual})" if st.residual else ""
            lines.append(f"  {st.name:<6} {st.kind:<4} -> {tuple(x.shape)}{join}  record point {st.record_point}")
            if st.pool:
                x = max_pool2x2(x)
                lines.append(f"  maxpool          -> {tuple(x.shape)}")
            if st.name in sources:
                kept[st.name] = x
    lines.append(f"quantized layers: {', '.join(model.quant_layers)}")
    return lines
