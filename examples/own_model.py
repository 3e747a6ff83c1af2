"""Your own nn.Module through the whole workflow: float, QAT, the TAP search, the test-set report, ONNX.

    python examples/own_model.py [--epochs 10] [--episodes 200] [--out-dir outputs/own] [--data PATH]

The module below is an ordinary PyTorch CNN with a residual block. Any
module built from the same operations works (Conv2d, Linear, BatchNorm,
ReLU, 2x2 MaxPool, global average pool, flatten, a residual add with the
parameter-free shortcut); anything else is refused in one line naming the
operation and its module, before any training (models/custom.py).

`register_module` reads the module's structure (torch.fx) into the model
registry for this process; from then on `model="tinyres"` works wherever
a built-in name does. To start from weights you trained yourself, save
them with `models.custom.save_float_checkpoint` instead of the float step.
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F
from torch import nn

import envs
from agents.evaluate import evaluate_result
from agents.export import export
from agents.search import SearchConfig, run
from envs.config import ProblemConfig
from models.custom import register_module
from train_baselines import stage_config, train


class TinyRes(nn.Module):
    """conv - pool - a residual block - a strided conv - global average pool - linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(16)
        self.conv_a = nn.Conv2d(16, 16, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(16)
        self.conv_b = nn.Conv2d(16, 16, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(16)
        self.down = nn.Conv2d(16, 32, 3, padding=1, stride=2)
        self.bn_down = nn.BatchNorm2d(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem_bn(self.stem(x))), 2)
        y = F.relu(self.bn_a(self.conv_a(x)))
        x = F.relu(self.bn_b(self.conv_b(y)) + x)  # the residual join
        x = F.relu(self.bn_down(self.down(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10, help="float epochs (default 10)")
    p.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs (default 2)")
    p.add_argument("--episodes", type=int, default=200, help="PPO episodes (default 200)")
    p.add_argument("--search-size", type=int, default=5000, help="search-split images (default 5000)")
    p.add_argument("--calib-batches", type=int, default=10, help="calibration batches of 128 images (default 10)")
    p.add_argument("--out-dir", default="outputs/own")
    p.add_argument("--data", default=None, help="CIFAR-10 as for every command (TAPQUANT_DATA)")
    args = p.parse_args(argv)

    register_module("tinyres", TinyRes(), attention_layers=["conv_b", "down"])
    envs.register_model_envs("tinyres")  # TapQuant-Tinyres-v1 for gym.make
    common = dict(model="tinyres", out_dir=args.out_dir, data=args.data)
    train(stage_config("float", epochs=args.epochs, **common))
    train(stage_config("qat", epochs=args.qat_epochs, **common))
    search = SearchConfig(ProblemConfig(levels=8, search_size=args.search_size, calib_batches=args.calib_batches,
                                         **common), episodes=args.episodes)
    run(search)
    evaluate_result(str(search.result_path), model="tinyres", data=args.data)  # prints the guide's [Eval] line
    print("wrote", *export(str(search.result_path), model="tinyres"))


if __name__ == "__main__":
    main()
