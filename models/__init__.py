"""Model registry: `--model` names, builders, quantized and attention layers."""

from dataclasses import replace

from models import alexnet_vgg, lenet5 as _lenet5
from models.errors import UserError
from models.net import Stage, StagedNet

STAGES = {
    "lenet5": _lenet5.STAGES,
    "alexnet": alexnet_vgg.ALEXNET_STAGES,
    "vgg16": alexnet_vgg.VGG16_STAGES,
    "vgg19": alexnet_vgg.VGG19_STAGES,
}

# Attention-transfer layers per model. LeNet-5's are the guide's; for the
# deeper nets we take the last conv and the first fc (or the last two convs),
# the same "end of the feature extractor" rule the guide gives for LeNet-5.
ATTENTION_LAYERS = {
    "lenet5": _lenet5.ATTENTION_LAYERS,
    "alexnet": ["conv5", "fc6"],
    "vgg16": ["conv10", "conv13"],
    "vgg19": ["conv12", "conv16"],
}

MODEL_NAMES = list(STAGES)

# Where a float model carries BatchNorm while it trains: "none", after each
# "conv", or after "all" layers but the classifier. It is folded into the
# layers when QAT starts, so the INT8 network is the same in every case.
BATCHNORM_CHOICES = ("none", "conv", "all")
DEFAULT_BATCHNORM = {"lenet5": _lenet5.BATCHNORM, "alexnet": "conv", "vgg16": "conv", "vgg19": "conv"}


def quant_layer_names(name: str) -> list[str]:
    """A model's quantized (approximable) layers, in execution order, without building it."""
    return [st.name for st in STAGES[name] if not st.classifier]


def build_model(name: str, batchnorm: str | None = None) -> StagedNet:
    """The float model `name`; `batchnorm` (BATCHNORM_CHOICES) defaults to DEFAULT_BATCHNORM[name]."""
    if name not in STAGES:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    batchnorm = batchnorm or DEFAULT_BATCHNORM[name]
    if batchnorm not in BATCHNORM_CHOICES:
        raise UserError(f"unknown batchnorm placement {batchnorm!r}; choose one of: {', '.join(BATCHNORM_CHOICES)}")
    with_bn = {"none": (), "conv": ("conv",), "all": ("conv", "fc")}[batchnorm]
    stages = [replace(st, bn=st.kind in with_bn and not st.classifier) for st in STAGES[name]]
    return StagedNet(name, stages)


__all__ = ["ATTENTION_LAYERS", "BATCHNORM_CHOICES", "DEFAULT_BATCHNORM", "MODEL_NAMES", "STAGES", "quant_layer_names", "Stage", "StagedNet", "UserError", "build_model"]
