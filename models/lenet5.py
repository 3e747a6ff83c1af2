"""LeNet-5 for CIFAR-10, exactly as TAP.md section 2.

Run `python -m models.lenet5` to print each layer's output shape and record
point (the guide's debugging tip).
"""

from models.net import Stage, StagedNet, describe

STAGES = [
    Stage("conv1", "conv", 3, 6, kernel=5, pool=True),
    Stage("conv2", "conv", 6, 16, kernel=5, pool=True),
    Stage("fc1", "fc", 16 * 5 * 5, 120, flatten=True),
    Stage("fc2", "fc", 120, 84),
    Stage("fc3", "fc", 84, 10, classifier=True),
]

# Layers whose attention maps the search compares (TAP.md section 2).
ATTENTION_LAYERS = ["conv2", "fc1"]


def lenet5() -> StagedNet:
    return StagedNet("lenet5", STAGES)


if __name__ == "__main__":
    print("\n".join(describe(lenet5())))
