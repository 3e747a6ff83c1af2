"""CIFAR-10 variants of AlexNet, VGG16 and VGG19 (the guide's comparison table).

They train with BatchNorm after every conv (models.DEFAULT_BATCHNORM), which QAT
folds into the conv weights. Only the convs
(and, for AlexNet, the two hidden fc layers) are quantized/approximated; the
final linear classifier is not, as for LeNet-5's fc3.
"""

from models.net import Stage, describe


def _conv_stages(plan: list) -> list[Stage]:
    """`plan` lists conv widths; "M" marks a max-pool after the previous conv."""
    stages, in_ch = [], 3
    for i, item in enumerate(plan):
        if item == "M":
            continue
        pool = i + 1 < len(plan) and plan[i + 1] == "M"
        stages.append(Stage(f"conv{len(stages) + 1}", "conv", in_ch, item, kernel=3, padding=1, pool=pool))
        in_ch = item
    return stages


VGG16_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
VGG19_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"]
# AlexNet scaled to 32x32 inputs: 5 convs, 3 pools (32 -> 4), then fc6, fc7, classifier.
ALEXNET_PLAN = [64, "M", 192, "M", 384, 256, 256, "M"]


VGG16_STAGES = _conv_stages(VGG16_PLAN) + [Stage("fc", "fc", 512, 10, flatten=True, classifier=True)]
VGG19_STAGES = _conv_stages(VGG19_PLAN) + [Stage("fc", "fc", 512, 10, flatten=True, classifier=True)]
ALEXNET_STAGES = _conv_stages(ALEXNET_PLAN) + [
    Stage("fc6", "fc", 256 * 4 * 4, 1024, flatten=True),
    Stage("fc7", "fc", 1024, 1024),
    Stage("fc8", "fc", 1024, 10, classifier=True),
]


if __name__ == "__main__":
    from models import build_model

    for name in ("alexnet", "vgg16", "vgg19"):
        print("\n".join(describe(build_model(name))))
