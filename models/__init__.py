"""Model registry: `--model` names, builders, quantized and attention layers."""

from models.errors import UserError
from models import alexnet_vgg, lenet5 as _lenet5
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


def quant_layer_names(name: str) -> list[str]:
    """A model's quantized (approximable) layers, in execution order, without building it."""
    return [st.name for st in STAGES[name] if not st.classifier]


def build_model(name: str) -> StagedNet:
    if name not in STAGES:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    return StagedNet(name, STAGES[name])


__all__ = ["ATTENTION_LAYERS", "MODEL_NAMES", "STAGES", "quant_layer_names", "Stage", "StagedNet", "UserError", "build_model"]
