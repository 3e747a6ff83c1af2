"""What a TAP search scores: one dataclass for the env, its scorer and every command.

`ProblemConfig`'s fields are the env's keyword arguments
(`gym.make("TapQuant-LeNet5-v1", levels=8)`), what `TapProblem` is built
from, and the flags of `agents.search` and `agents.pipeline` (generated from
the fields by common/cli.add_config_args). Defaults: the guide's K = 16,
w_att = 50 and 10 calibration batches; each layer's clip by the `mse` rule
(quant/clip.py; the guide's p90 + 10 is `tmax_rule="guide"`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

from models import MODEL_NAMES, quant_layer_names
from models.checkpoint import checkpoint_path
from common.cli import non_negative_float, option, positive_float, positive_int
from common.errors import UserError
from quant.budget import parse_levels
from quant.clip import RULE_HELP, check_rule

BACKENDS = ("auto", "int8", "float")
ANCHORS = ("analytic", "none")
LEVELS_RANGE = range(4, 257)  # one zero level plus at least one per segment; codes are 8-bit


def levels_arg(text: str) -> int | str:
    """`--levels 16` (every layer) or `--levels conv1=8,conv2=4,fc1=16,fc2=8` (each layer's K; the names are
    checked against the model by ProblemConfig)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected a number such as 16, or layer=K items such as conv1=8,conv2=4, "
                                         f"got {text!r}")
    return text


def layer_list(text: str) -> tuple[str, ...]:
    """`--layers conv1,conv2` -> ("conv1", "conv2"); names are checked against the model later."""
    layers = tuple(s.strip() for s in text.split(",") if s.strip())
    if not layers:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer names, got {text!r}")
    return layers


@dataclass(frozen=True)
class ProblemConfig:
    """The search problem (docs/tap.md sections 3-5); every field is validated on construction."""

    model: str = option("lenet5", "model whose INT8 teacher is searched", choices=MODEL_NAMES)
    teacher: str | None = option(None, "INT8 teacher checkpoint; None means <out-dir>/<model>_qat_preconvert.pth")
    width: float | None = option(None, "refuse a teacher of another width (train_baselines.py float --width); "
                                 "None: the teacher's", type=positive_float)
    levels: int | str = option(16, "TAP budget K, 4..256, code 0 included (16 = 4 bits): one for every layer, or "
                               "each layer's as conv1=8,conv2=4,fc1=16,fc2=8 (a dict in Python)", type=levels_arg)
    attention_weight: float = option(50.0, "w_att in reward = -(drop + w_att * att)", type=non_negative_float)
    kl_weight: float = option(0.0, "w_kl in reward = -(drop + w_att * att + w_kl * kl), kl = the mean "
                              "KL(teacher || student) of the logits in nats; 0 is the guide's reward",
                              type=non_negative_float)
    layers: tuple[str, ...] | None = option(
        None, "layers to approximate, comma-separated, e.g. conv1,conv2; None means every quantized layer",
        type=layer_list)
    anchor: str = option("analytic", "what an action of zeros decodes to: analytic (each layer's TAP of least "
                         "squared code error, quant/analytic.py; actions are corrections around it) or none (the "
                         "guide's absolute decoding, docs/tap.md section 4)", choices=ANCHORS)
    search_size: int = option(5000, "search-split images: the first N of the validation split (5,000), then the "
                              "training images after the calibration batches; never the test set", type=positive_int)
    # mse: chosen on held-out training images over 3 teachers and K = 16, 8, 4 (benchmarks/README.md, "Which clip")
    tmax_rule: str = option("mse", RULE_HELP + " (quant/clip.py)")
    calib_batches: int = option(10, "training batches of 128 images for histograms, p90 and tmax", type=positive_int)
    backend: str = option("auto", "kernels that run the student: int8 (oneDNN, x86 CPU), float (the float "
                          "simulation, any device), auto (int8 where available)", choices=BACKENDS)
    # Shared with every command (common/cli.add_common_args):
    out_dir: str = "outputs"  # where the teacher is looked for by default
    data: str | None = None  # CIFAR-10 source; None means $TAPQUANT_DATA, else ./data
    cache_dir: str | None = None  # decoded-image cache; None means $TAPQUANT_CACHE, else ~/.cache/tapquant
    device: str = "auto"  # cpu, cuda, or auto (cuda when available)

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise UserError(f"unknown model {self.model!r}; choose one of: {', '.join(MODEL_NAMES)}")
        if isinstance(self.levels, dict):  # gym.make(..., levels={"conv1": 8, ...}): kept as text, hashable
            object.__setattr__(self, "levels", ",".join(f"{n}={k}" for n, k in self.levels.items()))
        if self.search_size <= 0 or self.calib_batches <= 0:
            raise UserError("search size and calibration batches must be positive")
        if not self.attention_weight >= 0 or not self.kl_weight >= 0:
            raise UserError(f"attention and KL weights must be >= 0, got {self.attention_weight}, {self.kl_weight}")
        if self.anchor not in ANCHORS:
            raise UserError(f"anchor must be analytic or none, got {self.anchor!r}")
        try:
            check_rule(self.tmax_rule)
        except ValueError as e:
            raise UserError(str(e)) from None
        if self.backend not in BACKENDS:
            raise UserError(f"backend must be auto, int8 or float, got {self.backend!r}")
        all_layers = quant_layer_names(self.model)
        if self.layers is not None:
            layers = tuple(self.layers)
            if not layers or any(n not in all_layers for n in layers) or len(set(layers)) != len(layers):
                raise UserError(f"layers {list(layers)} are not distinct quantized layers of {self.model}; "
                                f"choose from {','.join(all_layers)}")
            object.__setattr__(self, "layers", tuple(sorted(layers, key=all_layers.index)))  # execution order
        self.layer_levels  # noqa: B018  (checks K, per layer against the layers approximated)

    @property
    def layer_levels(self) -> dict[str, int]:
        """Each approximated layer's K (from one K, or the per-layer `levels`)."""
        layers = self.approximated_layers
        if isinstance(self.levels, str):
            return parse_levels(self.levels, layers, LEVELS_RANGE)
        if not isinstance(self.levels, int) or not LEVELS_RANGE[0] <= self.levels <= LEVELS_RANGE[-1]:
            raise UserError(f"levels K must be in 4..256 (one zero level plus one per segment), got {self.levels}")
        return {n: self.levels for n in layers}

    @property
    def approximated_layers(self) -> list[str]:
        """The layers a search decides, in execution order."""
        return list(self.layers or quant_layer_names(self.model))

    @property
    def teacher_path(self) -> Path:
        return Path(self.teacher or checkpoint_path(self.out_dir, self.model, "qat"))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers else None
        if self.width is None:  # left off: results made before the option compare equal
            d.pop("width")
        return d
