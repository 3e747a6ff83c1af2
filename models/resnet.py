"""The CIFAR-10 ResNets of He et al. (2016), section 4.2: ResNet-20 (and 32, 56 by depth).

    python -m models.resnet [--depth 20]

prints each layer's output shape, record point and residual join.

A 3x3 stem conv (16 channels), then three groups of n basic blocks (16, 32,
64 channels; the first block of groups 2 and 3 halves the map with stride
2), global average pooling and one fc classifier: depth = 6n + 2. A block is
two 3x3 convs with BatchNorm; the second adds the block's input before its
ReLU. Where a block changes the shape, the shortcut is the paper's option A
(models.net.shortcut: every second position, zero channels added), which
has no weights: ResNet-20 keeps its 0.27 M parameters, and on INT8 codes
the shortcut is a move of codes, exact in every path. Every ReLU output is
quantized and can carry a table: the stem, and each block's inner and
post-add ReLU (19 layers for ResNet-20).
"""

from models.net import Stage, describe

GROUP_WIDTHS = (16, 32, 64)
DEPTHS = (20, 32, 56)


def resnet_stages(depth: int = 20) -> list[Stage]:
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 56, ...), got {depth}")
    n = (depth - 2) // 6
    stages = [Stage("conv1", "conv", 3, GROUP_WIDTHS[0], kernel=3, padding=1)]
    prev = "conv1"
    for g, width in enumerate(GROUP_WIDTHS, start=1):
        for b in range(1, n + 1):
            stride = 2 if g > 1 and b == 1 else 1
            name = f"g{g}b{b}"
            stages.append(Stage(f"{name}c1", "conv", stages[-1].out_ch, width, kernel=3, padding=1, stride=stride))
            stages.append(Stage(f"{name}c2", "conv", width, width, kernel=3, padding=1, residual=prev))
            prev = f"{name}c2"
    stages.append(Stage("fc", "fc", GROUP_WIDTHS[-1], 10, gap=True, classifier=True))
    return stages


def attention_layers(depth: int = 20) -> list[str]:
    """The outputs of groups 2 and 3: attention transfer's place in a ResNet (Zagoruyko & Komodakis
    2017 compare each group's output). Group 1's 32x32 map is left out: the costliest to compare, and
    the least tied to the class (the same "end of the feature extractor" rule as the other nets)."""
    n = (depth - 2) // 6
    return [f"g2b{n}c2", f"g3b{n}c2"]


RESNET20_STAGES = resnet_stages(20)


def main(argv=None) -> None:
    from common.cli import Parser
    from models import build_model

    p = Parser(description=__doc__)
    p.add_argument("--depth", type=int, choices=DEPTHS, default=20)
    args = p.parse_args(argv)
    print("\n".join(describe(build_model(f"resnet{args.depth}"))))


if __name__ == "__main__":
    main()
