"""Your own model: an `nn.Module` built from the supported operations, as a TapQuant model.

    from models.custom import register_module
    register_module("mynet", MyNet(), attention_layers=["conv2"])   # then --model mynet in this process

`stages_from_module` traces the module with torch.fx (its forward as a graph
of calls, without running it) and reads it as the project's stage list
(models/net.py): each conv or linear layer, the BatchNorm right after it, a
residual add of an earlier layer's output, the ReLU that ends it, and a 2x2
max-pool after that; a flatten or a global average pool before the first
linear layer; the last linear layer is the classifier. Anything else (a
sigmoid, a 3x3 pool, a concatenation, a conv without ReLU before the next
conv, ...) is refused in one line naming the operation and the module it
sits in, before any training: every path (QAT, the integer reference, the
scorer, the ONNX export) knows exactly these operations.

Why trace rather than ask for a spec: the user already has the module, and
tracing sees what forward() actually does, not what its attributes suggest.
Why torch.fx and not torch.export: fx keeps the submodule names (conv1,
layer1.0.conv2), which the error lines and the stage names use.
"""

from __future__ import annotations

import operator
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import fx, nn

from common.errors import UserError
from models.net import Stage, StagedNet, check_stages

_RELU = {F.relu, torch.relu}
_ADD = {operator.add, torch.add}
_FLATTEN = {torch.flatten}


def _stage_name(target: str) -> str:
    return target.replace(".", "_")


class _Reader:
    """Walks a traced graph once, closing a stage at each ReLU (or at the classifier)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.modules = dict(module.named_modules())
        self.stages: list[Stage] = []
        self.open: dict | None = None  # the stage being read: its fields so far
        self.owner: dict = {}  # fx node -> name of the stage whose output it is (after ReLU / pool)
        self.pending_flatten = self.pending_gap = False
        self.bn_modules: dict = {}  # stage name -> the module path of its BatchNorm (None: none)

    def refuse(self, node: fx.Node, what: str) -> None:
        where = f" (module {node.target})" if node.op == "call_module" else f" (in {node.name})"
        raise UserError(f"unsupported operation {what}{where}: a TapQuant model is built from Conv2d, Linear, "
                        "BatchNorm, ReLU, 2x2 MaxPool, global average pool, flatten and residual add "
                        "(models/custom.py)")

    def read(self, graph: fx.Graph) -> list[Stage]:
        for node in graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            kind = self.kind_of(node)
            getattr(self, f"on_{kind}")(node)
        if self.open is None or self.open["kind"] != "fc" or self.open.get("bn"):
            raise UserError("the model must end with a Linear classifier (no BatchNorm or ReLU after it)")
        self.stages.append(Stage(**self.open, classifier=True))
        check_stages(self.stages)
        return self.stages

    def kind_of(self, node: fx.Node) -> str:
        if node.op == "call_module":
            m = self.modules[node.target]
            for cls, kind in ((nn.Conv2d, "conv"), (nn.Linear, "fc"), (nn.BatchNorm2d, "bn"),
                              (nn.BatchNorm1d, "bn"), (nn.ReLU, "relu"), (nn.Flatten, "flatten"),
                              (nn.Identity, "identity")):
                if isinstance(m, cls):
                    return kind
            if isinstance(m, nn.MaxPool2d) and m.kernel_size in (2, (2, 2)) and m.stride in (2, (2, 2), None):
                return "pool"
            if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
                return "gap"
            self.refuse(node, type(m).__name__)
        if node.op == "call_function":
            if node.target in _RELU:
                return "relu"
            if node.target in _ADD:
                return "add"
            if node.target in _FLATTEN:
                return "flatten"
            if node.target is F.max_pool2d and node.args[1:2] == (2,):
                return "pool"
            if node.target is F.adaptive_avg_pool2d and node.args[1:2] in ((1,), ((1, 1),)):
                return "gap"
            if node.target is operator.getitem or node.target is F.pad:
                return "shortcut"
            self.refuse(node, getattr(node.target, "__name__", str(node.target)))
        if node.op == "call_method" and node.target in ("relu", "flatten", "add"):
            return {"relu": "relu", "flatten": "flatten", "add": "add"}[node.target]
        if node.op == "call_method" and node.target == "mean" and tuple(node.args[1:2]) in (((2, 3),), ([2, 3],)):
            return "gap"
        self.refuse(node, f"{node.op} {node.target}")

    def input_stage(self, node: fx.Node) -> str | None:
        """The stage a layer's input comes from (None: the image)."""
        src = node.args[0]
        if src.op == "placeholder":
            return None
        return self.owner.get(src, "?")

    def start(self, node: fx.Node, fields: dict) -> None:
        if self.open is not None:
            # A hidden layer ends with ReLU; only the last layer may lack it.
            raise UserError(f"unsupported operation: {self.open['name']} is not followed by ReLU before "
                            f"{node.target} (every hidden conv or linear layer ends with ReLU; models/custom.py)")
        previous = self.stages[-1].name if self.stages else None
        if self.input_stage(node) != previous:
            self.refuse(node, "a layer that reads another than the previous layer's output")
        self.open = fields
        self.owner[node] = "open"

    def on_conv(self, node):
        m = self.modules[node.target]
        square = lambda v: v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v
        kernel, stride, padding = square(m.kernel_size), square(m.stride), square(m.padding)
        if m.groups != 1 or square(m.dilation) != 1 or not all(isinstance(v, int) for v in (kernel, stride, padding)):
            self.refuse(node, "Conv2d with groups, dilation or a non-square kernel")
        self.start(node, dict(name=_stage_name(node.target), kind="conv", in_ch=m.in_channels, out_ch=m.out_channels,
                              kernel=kernel, padding=padding, stride=stride))

    def on_fc(self, node):
        m = self.modules[node.target]
        flatten, gap = self.pending_flatten, self.pending_gap
        self.pending_flatten = self.pending_gap = False
        self.start(node, dict(name=_stage_name(node.target), kind="fc", in_ch=m.in_features, out_ch=m.out_features,
                              flatten=flatten and not gap, gap=gap))

    def on_bn(self, node):
        if self.open is None or self.open.get("bn") or self.open.get("residual"):
            self.refuse(node, "BatchNorm that does not follow a conv or linear layer")
        self.open["bn"] = True
        self.open["bn_module"] = node.target
        self.owner[node] = "open"

    def on_add(self, node):
        if self.open is None or self.open["kind"] != "conv":
            self.refuse(node, "an add that does not join a conv's output")
        others = [a for a in node.args if isinstance(a, fx.Node) and self.owner.get(a) != "open"]
        if len(others) != 1 or others[0] not in self.owner:
            self.refuse(node, "an add of anything but a conv's output and an earlier layer's output")
        self.open["residual"] = self.owner[others[0]]
        self.owner[node] = "open"

    def on_relu(self, node):
        if self.open is None:
            self.refuse(node, "ReLU that does not follow a conv or linear layer")
        bn_module = self.open.pop("bn_module", None)
        st = Stage(**self.open)
        self.stages.append(st)
        self.bn_modules[st.name] = bn_module
        self.open = None
        self.owner[node] = st.name

    def on_pool(self, node):
        src = self.owner.get(node.args[0])
        if not self.stages or src != self.stages[-1].name or self.stages[-1].kind != "conv" or self.stages[-1].pool:
            self.refuse(node, "a max-pool that does not follow a conv's ReLU")
        self.stages[-1] = Stage(**{**self.stages[-1].__dict__, "pool": True})
        self.owner[node] = src

    def on_flatten(self, node):
        self.pending_flatten = True
        self.owner[node] = self.owner.get(node.args[0])

    def on_gap(self, node):
        self.pending_gap = True
        self.owner[node] = self.owner.get(node.args[0])

    def on_shortcut(self, node):
        """Option A's shortcut written out (x[:, :, ::2, ::2], F.pad of channels on both sides): what
        models.net.shortcut does at the join; anything else of the kind is refused."""
        src = node.args[0]
        if node.target is F.pad:
            pads = tuple(node.args[1]) if len(node.args) > 1 else tuple(node.kwargs.get("pad", ()))
            ok = len(pads) == 6 and pads[:4] == (0, 0, 0, 0) and pads[4] == pads[5] and node.args[2:] in ((), ("constant", 0))
        else:
            idx = node.args[1]
            ok = (isinstance(idx, tuple) and len(idx) == 4 and all(isinstance(i, slice) for i in idx)
                  and all(i == slice(None) for i in idx[:2]) and idx[2] == idx[3] and idx[2].start is None)
        if not ok or self.owner.get(src) in (None, "open"):
            self.refuse(node, "a slice or pad other than a residual shortcut's (x[:, :, ::2, ::2], channels "
                        "padded equally on both sides)")
        self.owner[node] = self.owner[src]

    def on_identity(self, node):
        self.owner[node] = self.owner.get(node.args[0])


def stages_from_module(module: nn.Module) -> tuple[list[Stage], dict]:
    """(stages, {stage name: its BatchNorm's module path or None}) of a module; UserError for what it cannot be."""
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception as e:  # fx raises many kinds for data-dependent control flow
        raise UserError(f"cannot trace {type(module).__name__} with torch.fx ({str(e).splitlines()[0]}); "
                        "its forward must not branch on tensor values") from None
    reader = _Reader(module)
    stages = reader.read(graph)
    return stages, reader.bn_modules


def batchnorm_of(stages: list[Stage]) -> str:
    """The BatchNorm placement (models.BATCHNORM_CHOICES) a traced stage list has."""
    hidden = [st for st in stages if not st.classifier]
    convs, fcs = [st.bn for st in hidden if st.kind == "conv"], [st.bn for st in hidden if st.kind == "fc"]
    for name, conv, fc in (("none", False, False), ("conv", True, False), ("all", True, True)):
        if all(b == conv for b in convs) and all(b == fc for b in fcs):
            return name
    raise UserError("BatchNorm on some layers of a kind but not others is not supported: put it after every "
                    "conv (and optionally every hidden linear layer), or after none")


def staged_copy(module: nn.Module, name: str) -> StagedNet:
    """The module as a StagedNet with its weights, BatchNorm statistics included (the float teacher)."""
    stages, bn_modules = stages_from_module(module)
    net = StagedNet(name, stages)
    mods = dict(module.named_modules())
    targets = {_stage_name(t): t for t in mods}
    with torch.no_grad():
        for st in stages:
            src, dst = mods[targets[st.name]], getattr(net, st.name)
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias if src.bias is not None else torch.zeros_like(dst.bias))
            if st.bn:
                bn, own = mods[bn_modules[st.name]], getattr(net, f"{st.name}_bn")
                own.load_state_dict(bn.state_dict())
    return net.eval()


def register_module(name: str, module: nn.Module, attention_layers: list[str] | None = None,
                    title: str | None = None):
    """Adds `module`'s structure to the model registry as `name` (this process only); returns its ModelSpec.

    `attention_layers` (stage names, "layer1.0.conv2" as "layer1_0_conv2") default to the last two hidden
    layers. Train it with train_baselines' float stage, or start QAT from its own weights with
    `save_float_checkpoint`. Then import envs (or call envs.register_model_envs(name)) for its env ids.
    """
    from models import ModelSpec, add_model

    stages, _ = stages_from_module(module)
    hidden = [st.name for st in stages if not st.classifier]
    attention = list(attention_layers or hidden[-2:])
    unknown = [n for n in attention if n not in hidden]
    if unknown:
        raise UserError(f"attention layer(s) {', '.join(unknown)} are not hidden layers of {name}; choose from "
                        f"{', '.join(hidden)}")
    bn = batchnorm_of(stages)
    spec = ModelSpec(name, title or "".join(c for c in name.title() if c.isalnum()),
                     tuple(replace(st, bn=False) for st in stages), tuple(attention), bn, bn)
    add_model(spec)
    return spec


def save_float_checkpoint(module: nn.Module, name: str, out_dir: str = "outputs") -> str:
    """Writes `module`'s own (trained) weights as model `name`'s float checkpoint, which QAT starts from
    (python train_baselines.py qat --model NAME, in a process where `name` is registered)."""
    from models.checkpoint import checkpoint_path, save_checkpoint

    net = staged_copy(module, name)
    path = checkpoint_path(out_dir, name, "float")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, name, "float", net.state_dict(),
                    {"complete": True, "epochs": 0, "epochs_done": 0, "batchnorm": net.batchnorm, "width": 1.0,
                     "source": f"{type(module).__name__} weights (models.custom.save_float_checkpoint)"})
    return str(path)
