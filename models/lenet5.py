"""LeNet-5 for CIFAR-10, exactly as docs/tap.md section 2.

    python -m models.lenet5 [--batchnorm none|conv|all]

prints each layer's output shape and record point (the guide's debugging
tip), whether the float model trains with BatchNorm, and the network that
QAT deploys once BatchNorm is folded into the layers before it.
"""

from common.cli import Parser
from models.net import Stage, describe

STAGES = [
    Stage("conv1", "conv", 3, 6, kernel=5, pool=True),
    Stage("conv2", "conv", 6, 16, kernel=5, pool=True),
    Stage("fc1", "fc", 16 * 5 * 5, 120, flatten=True),
    Stage("fc2", "fc", 120, 84),
    Stage("fc3", "fc", 84, 10, classifier=True),
]

# Layers whose attention maps the search compares (docs/tap.md section 2).
ATTENTION_LAYERS = ["conv2", "fc1"]

# BatchNorm while the float model trains (the guide's "research path: add BN");
# chosen on validation accuracy (benchmarks/README.md, "Float recipe").
BATCHNORM = "all"


def main(argv=None) -> None:
    from models import BATCHNORM_CHOICES, build_model
    from models.net import fold_batchnorm

    p = Parser(description=__doc__)
    p.add_argument("--batchnorm", choices=BATCHNORM_CHOICES, default=BATCHNORM,
                   help=f"BatchNorm placement while training (default {BATCHNORM})")
    args = p.parse_args(argv)
    model = build_model("lenet5", args.batchnorm)
    bn = model.bn_layers
    print(f"training: BatchNorm {'after ' + ', '.join(bn) if bn else 'none'} (--batchnorm {args.batchnorm})")
    print("\n".join(describe(model)))
    if bn:
        print(f"deployed (QAT and INT8): BatchNorm folded into {', '.join(bn)}")
        print("\n".join(describe(fold_batchnorm(model))))


if __name__ == "__main__":
    main()
