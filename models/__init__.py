"""Model registry: `--model` names, builders, quantized and attention layers."""

from dataclasses import dataclass, replace

from models import alexnet_vgg, lenet5 as _lenet5, resnet
from common.errors import UserError
from models.net import Stage, StagedNet

@dataclass(frozen=True)
class ModelSpec:
    """Everything the project knows about one `--model`: adding a model is its own file plus one entry
    in MODELS; every list of names, env id and check derives from here."""

    name: str  # the --model value
    title: str  # in the env ids: TapQuant-<title>-v1
    stages: tuple  # Stage list (models/net.py): the layers in execution order
    attention_layers: tuple  # attention-transfer layers (quantized ones)
    batchnorm: str  # default BatchNorm placement while the float model trains (BATCHNORM_CHOICES)
    legacy_batchnorm: str  # what checkpoints that predate the `batchnorm` record were trained with
    # Whether bf16 autocast and channels-last pay for this net's float training where the CPU has native bf16:
    # ~2x for AlexNet and VGG16, nothing for LeNet-5 (benchmarks/README.md, "Training the deep nets on 2 cores").
    fast_bf16: bool = True

    @property
    def env_id(self) -> str:
        return f"TapQuant-{self.title}-v1"

    @property
    def guide_env_id(self) -> str:
        return f"TapQuant-{self.title}-v0"

    @property
    def mixed_env_id(self) -> str:
        """Each layer's K under a bit budget (envs/mixed.py)."""
        return f"TapQuant-{self.title}-Mixed-v0"


# Attention-transfer layers: LeNet-5's are the guide's; for the deeper nets
# the last conv and the first fc (or the last two convs), the same "end of
# the feature extractor" rule the guide gives for LeNet-5; for the ResNets
# the outputs of their last two groups (models/resnet.py).
MODELS = {m.name: m for m in (
    ModelSpec("lenet5", "LeNet5", tuple(_lenet5.STAGES), tuple(_lenet5.ATTENTION_LAYERS), _lenet5.BATCHNORM, "none",
              fast_bf16=False),
    ModelSpec("alexnet", "AlexNet", tuple(alexnet_vgg.ALEXNET_STAGES), ("conv5", "fc6"), "conv", "conv"),
    ModelSpec("vgg16", "VGG16", tuple(alexnet_vgg.VGG16_STAGES), ("conv10", "conv13"), "conv", "conv"),
    ModelSpec("vgg19", "VGG19", tuple(alexnet_vgg.VGG19_STAGES), ("conv12", "conv16"), "conv", "conv"),
    *(ModelSpec(f"resnet{d}", f"ResNet{d}", tuple(resnet.resnet_stages(d)), tuple(resnet.attention_layers(d)),
                "conv", "conv") for d in resnet.DEPTHS),
)}

# Views of MODELS by what callers ask for.
MODEL_NAMES = list(MODELS)
STAGES = {n: list(m.stages) for n, m in MODELS.items()}
ATTENTION_LAYERS = {n: list(m.attention_layers) for n, m in MODELS.items()}
DEFAULT_BATCHNORM = {n: m.batchnorm for n, m in MODELS.items()}

def add_model(spec: ModelSpec) -> None:
    """Registers one more model in this process (models/custom.py: a user's own nn.Module)."""
    if spec.name in MODELS and MODELS[spec.name] != spec:
        raise UserError(f"model name {spec.name!r} is taken; choose another")
    MODELS[spec.name] = spec
    if spec.name not in MODEL_NAMES:
        MODEL_NAMES.append(spec.name)
    STAGES[spec.name] = list(spec.stages)
    ATTENTION_LAYERS[spec.name] = list(spec.attention_layers)
    DEFAULT_BATCHNORM[spec.name] = spec.batchnorm


# Where a float model carries BatchNorm while it trains: "none", after each
# "conv", or after "all" layers but the classifier. It is folded into the
# layers when QAT starts, so the INT8 network is the same in every case.
BATCHNORM_CHOICES = ("none", "conv", "all")


def quant_layer_names(name: str) -> list[str]:
    """A model's quantized (approximable) layers, in execution order, without building it."""
    return [st.name for st in STAGES[name] if not st.classifier]


def scaled_stages(name: str, width: float) -> list[Stage]:
    """Model `name`'s stages with every hidden layer's channels (conv) or features (fc) times `width`, rounded;
    the classifier keeps its outputs. Width 1 is the model as published (the guide's nets)."""
    if not width > 0 or width == float("inf"):
        raise UserError(f"--width must be a finite number > 0, got {width}")
    stages, prev_old, prev_new = [], None, None
    for st in STAGES[name]:
        out = st.out_ch if st.classifier else int(round(st.out_ch * width))
        if out < 1:
            raise UserError(f"--width {width} leaves {name}'s {st.name} ({st.out_ch} channels) with no channel; "
                            f"use --width {1 / st.out_ch:.3g} or more")
        # The first fc reads a flattened map: its inputs are the last conv's channels x the map's positions.
        in_ch = 3 if prev_old is None else st.in_ch // prev_old * prev_new
        stages.append(replace(st, in_ch=in_ch, out_ch=out))
        prev_old, prev_new = st.out_ch, out
    return stages


def build_model(name: str, batchnorm: str | None = None, width: float = 1.0) -> StagedNet:
    """The float model `name` at `width` (scaled_stages); `batchnorm` (BATCHNORM_CHOICES) defaults to
    DEFAULT_BATCHNORM[name]."""
    if name not in STAGES:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    batchnorm = batchnorm or DEFAULT_BATCHNORM[name]
    if batchnorm not in BATCHNORM_CHOICES:
        raise UserError(f"unknown batchnorm placement {batchnorm!r}; choose one of: {', '.join(BATCHNORM_CHOICES)}")
    with_bn = {"none": (), "conv": ("conv",), "all": ("conv", "fc")}[batchnorm]
    stages = [replace(st, bn=st.kind in with_bn and not st.classifier) for st in scaled_stages(name, width)]
    return StagedNet(name, stages, width)


__all__ = ["MODELS", "ModelSpec", "ATTENTION_LAYERS", "BATCHNORM_CHOICES", "DEFAULT_BATCHNORM", "MODEL_NAMES", "STAGES", "quant_layer_names", "scaled_stages", "Stage", "StagedNet", "UserError", "add_model", "build_model"]
