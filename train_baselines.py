"""Trains the teachers the TAP search wraps (the guide's steps 1 and 2), and fine-tunes a searched student.

    python train_baselines.py float   --model lenet5            # 60 epochs; the guide's: --epochs 30
    python train_baselines.py qat     --model lenet5 --qat-epochs 10
    python train_baselines.py student --config-path outputs/tri_ppo_int_codes/<result>.json
    python train_baselines.py soft-labels --from outputs/vgg16/vgg16_float_unfused.pth --model vgg16

`float` writes outputs/<model>_float_unfused.pth; `qat` initialises an INT8
model from it (quant/qat.py) and writes outputs/<model>_qat_preconvert.pth;
`student` fine-tunes the INT8 teacher with a search result's tables in place
(quant/finetune.py) and writes outputs/<model>_student_<result>.pth. Each
saves after every epoch (atomically); `--resume` continues an interrupted
run from its last completed epoch and ends with the same weights as an
uninterrupted run. `soft-labels` stores a trained network's logits on the
training images (models/soft_labels.py) for `float --soft-labels`.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch

from quant.result import finetune_source
from common.progress import duration, progress
from common.wandb_run import WANDB_MODES, start_wandb
from models import BATCHNORM_CHOICES, DEFAULT_BATCHNORM, MODEL_NAMES, MODELS, build_model
from common.files import file_sha256, missing_file
from models.checkpoint import checkpoint_path, load_checkpoint, load_float_model, recorded_option, save_checkpoint
from common.cli import (Parser, add_common_args, add_config_args, config_from_args, non_negative_float,
                        non_negative_int, option, positive_float, positive_int, resolve_device, run_main)
from models import soft_labels
from models.batching import CROP_PAD, iterate
from models.data import load_cifar10
from common.errors import UserError
from models.metrics import accuracy, predict
from models.training import (PRECISIONS, bf16_loss, distillation_loss, make_optimizer, native_bf16, step_seconds,
                             train_epoch)
from quant.finetune import ATTENTION_WEIGHT, CLIP_LR, KD_TEMPERATURE, KD_WEIGHT, TapStudent
from quant.qat import DEFAULT_OBSERVER, OBSERVERS, QuantNet, load_teacher
from quant.tap import TapParams

WEIGHT_DECAY = 5e-4
HOLDOUT = 5000  # the student's held-out training images (StudentConfig.finish)
LABEL_SMOOTHING = 0.1
MAX_CROP_PAD = 16  # half the 32-pixel CIFAR-10 image
CALIB_BATCHES = 20  # float-model batches that initialise the QAT observers


def crop_pad(text: str) -> int:
    v = non_negative_int(text)
    if v > MAX_CROP_PAD:
        raise argparse.ArgumentTypeError(f"expected a padding of 0..{MAX_CROP_PAD} pixels, got {v}")
    return v


@dataclass
class StageConfig:
    """What every stage shares: the optimiser, augmentation, seed and bookkeeping flags.

    Each stage is a subclass whose fields are its flags (common/cli.option);
    `options()` names the ones that make its weights what they are. Learning
    rates were chosen on validation (benchmarks/README.md).
    """

    stage: ClassVar[str]
    label: ClassVar[str]
    help: ClassVar[str]

    model: str | None = option("lenet5", "model to train", choices=MODEL_NAMES)
    epochs: int = option(1, "training epochs", type=positive_int)
    lr: float = option(0.05, "peak learning rate", type=positive_float)
    weight_decay: float = option(WEIGHT_DECAY, "SGD weight decay", type=non_negative_float)
    label_smoothing: float = option(LABEL_SMOOTHING, "cross-entropy label smoothing", type=non_negative_float)
    crop_pad: int = option(CROP_PAD, "augmentation: random crop of the image padded by this many pixels, plus "
                           "horizontal flip; 0 = flip only", type=crop_pad)
    batch_size: int = option(128, "training batch size", type=positive_int)
    seed: int = option(0, "seed of the initialisation, batch order and augmentation", type=int)
    resume: bool = option(False, "continue an interrupted run of this stage", action="store_true")
    no_progress: bool = option(False, "no progress bar on a terminal, no progress lines in a log",
                               action="store_true")
    wandb: str = option("disabled", "Weights & Biases: per-epoch train loss, val accuracy and lr; offline needs "
                        "no account or network", choices=WANDB_MODES)
    wandb_project: str | None = option(None, "W&B project; None means $WANDB_PROJECT, else tapquant")
    # Shared with every command (common/cli.add_common_args):
    data: str | None = None
    cache_dir: str | None = None
    out_dir: str = "outputs"
    device: str = "auto"

    def __post_init__(self):
        if self.epochs <= 0 or self.batch_size <= 0 or not self.lr > 0:
            raise UserError(f"epochs, batch size and lr must be positive, got {self.epochs}, {self.batch_size}, "
                            f"{self.lr}")
        if not 0 <= self.crop_pad <= MAX_CROP_PAD:
            raise UserError(f"crop padding must be 0..{MAX_CROP_PAD} pixels, got {self.crop_pad}")

    def options(self) -> dict:
        """The options that make this stage's weights what they are: recorded in its checkpoint, and compared
        by --resume and by the pipeline before it reuses a checkpoint."""
        return {k: getattr(self, k) for k in ("epochs", "batch_size", "seed", "weight_decay", "label_smoothing",
                                              "crop_pad", "lr")}

    @property
    def view_keys(self) -> bool:
        """Whether batches carry (image, view) keys instead of labels: for per-view soft labels."""
        return False

    def prepare(self, data) -> dict | None:
        """Checks (and work) before training, on the loaded `data`; returns what the model is made from, if
        anything."""
        return None

    def checkpoint(self) -> Path:
        return checkpoint_path(self.out_dir, self.model, self.stage)

    def initial_model(self, data, device, source: dict | None):
        raise NotImplementedError

    def extra_meta(self, source: dict | None) -> dict:
        """What the checkpoint records of where the model came from."""
        return {}

    def loss_fn(self, model, device):
        ce = torch.nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        return lambda xb, yb: ce(model(xb), yb)

    def start_epoch(self, model, epoch: int) -> None:
        pass

    def training_indices(self, data, train_idx: torch.Tensor) -> torch.Tensor:
        """The training-split images this stage trains on (all of them but for the student's held-out ones)."""
        return train_idx

    def finish(self, model, data, device, source, meta: dict):
        """After the last epoch: the model to save (a stage may keep another)."""
        return model

    def epoch_meta(self, model) -> dict:
        """What the checkpoint records after each epoch besides the history."""
        return {}

    def precision_in_use(self) -> str:
        """fp32, or bf16 (autocast, channels-last): what the training steps compute in."""
        return "fp32"


@dataclass
class FloatConfig(StageConfig):
    stage: ClassVar[str] = "float"
    label: ClassVar[str] = "Float"
    help: ClassVar[str] = "train the float32 teacher"

    # 60 epochs: chosen on validation over seeds 0-2 against the guide's 30 (benchmarks/README.md, "Teachers").
    epochs: int = option(60, "float epochs (the guide's: 30)", type=positive_int)
    lr: float = option(0.05, "peak learning rate (one-cycle)", type=positive_float)
    distill_epochs: int = option(0, "first train a plain float model for this many epochs (into "
                                 "<out-dir>/distill/) and distill from it; 0: plain training, the guide's",
                                 type=non_negative_int)
    distill_from: str | None = option(None, "a float checkpoint of the same model to distill from (its soft labels "
                                      "join the loss: --kd-weight, --kd-temperature); None: plain cross-entropy")
    soft_labels: str | None = option(None, "a soft-label file (python train_baselines.py soft-labels): distill from "
                                     "the stored logits of a trained network for the view each image is drawn "
                                     "in (--kd-weight, --kd-temperature); the network never runs here")
    kd_weight: float = option(1.0, "with --distill-from or --soft-labels: weight of the distillation loss",
                              type=non_negative_float)
    kd_temperature: float = option(KD_TEMPERATURE, "with --distill-from or --soft-labels: its temperature",
                                   type=positive_float)
    width: float = option(1.0, "every hidden layer's channels (conv) or features (fc) times this; 1 = the "
                          "published net (the guide's); QAT, the search and the export take the float "
                          "checkpoint's", type=positive_float)
    precision: str = option("auto", "training arithmetic: fp32, bf16 (autocast, channels-last), or auto: bf16 for "
                            "the deep nets where the device computes bf16 natively (AVX512-BF16 or AMX CPU, GPU), "
                            "fp32 elsewhere", choices=PRECISIONS)
    batchnorm: str | None = option(None, "BatchNorm while training: none, after each conv, or after all layers but "
                                   "the classifier; folded away when QAT starts; None: the model's ("
                                   + ", ".join(f"{m} {b}" for m, b in DEFAULT_BATCHNORM.items()) + ")",
                                   choices=BATCHNORM_CHOICES)

    def options(self) -> dict:
        opts = {**super().options(), "batchnorm": self.batchnorm or DEFAULT_BATCHNORM[self.model],
                "width": self.width, "precision": self.precision_in_use()}
        if self.distill_epochs:  # options left off are not recorded: older checkpoints compare equal
            opts["distill_epochs"] = self.distill_epochs
        if self.distill_from:
            opts.update(distill_from=file_sha256(self.distill_from), kd_weight=self.kd_weight,
                        kd_temperature=self.kd_temperature)
        if self.soft_labels:
            if not self.soft and not Path(self.soft_labels).is_file():
                raise UserError(missing_file("soft-label file", self.soft_labels, "make it with: python "
                                             "train_baselines.py soft-labels --from <float checkpoint>"))
            opts.update(soft_labels=self.soft.sha256 if self.soft else file_sha256(self.soft_labels),
                        kd_weight=self.kd_weight, kd_temperature=self.kd_temperature)
        return opts

    @property
    def view_keys(self) -> bool:
        return bool(self.soft_labels)

    # With --soft-labels, prepare() loads the file (models/soft_labels.SoftLabels) and the labels it pairs with.
    soft = None
    train_labels = None

    def prepare(self, data) -> None:
        if self.soft_labels and (self.distill_from or self.distill_epochs):
            raise UserError("--soft-labels and --distill-from / --distill-epochs are two teachers; pass one")
        if self.soft_labels:
            self.soft = soft_labels.read(self.soft_labels, data, self.crop_pad)
            self.train_labels = data.train_y[data.split()[0]]
        if self.distill_epochs and not self.distill_from:
            self.distill_from = str(train_distill_teacher(self))
        if self.distill_from and not Path(self.distill_from).is_file():
            raise UserError(f"--distill-from {self.distill_from}: no such float checkpoint; train one first with: "
                            f"python train_baselines.py float --model {self.model} --out-dir <dir>")

    def precision_in_use(self) -> str:
        if self.precision != "auto":
            return self.precision
        return "bf16" if MODELS[self.model].fast_bf16 and native_bf16(resolve_device(self.device)) else "fp32"

    def initial_model(self, data, device, source):
        return build_model(self.model, self.batchnorm, self.width)

    def loss_fn(self, model, device):
        if self.soft:
            return self.soft_label_loss(model, device)
        if not self.distill_from:
            return super().loss_fn(model, device)
        ce = torch.nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        teacher = load_float_model(self.distill_from, self.model).to(device).eval()

        def loss_of(xb, yb):
            logits = model(xb)
            with torch.no_grad():
                t_logits = teacher(xb)
            return ce(logits, yb) + self.kd_weight * distillation_loss(logits, t_logits, self.kd_temperature)
        return loss_of

    def soft_label_loss(self, model, device):
        """Cross-entropy on the labels plus distillation from the stored logits of the view drawn (batches carry
        view keys: models/batching.iterate)."""
        ce = torch.nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        soft, labels = self.soft.to(device), self.train_labels.to(device)

        def loss_of(xb, keys):
            image, t_logits = soft.lookup(keys)
            logits = model(xb)
            return ce(logits, labels[image]) + self.kd_weight * distillation_loss(logits, t_logits, self.kd_temperature)
        return loss_of


@dataclass
class QatConfig(StageConfig):
    stage: ClassVar[str] = "qat"
    label: ClassVar[str] = "QAT"
    help: ClassVar[str] = "quantization-aware training (INT8)"

    epochs: int = option(10, "QAT epochs", type=positive_int, flag="--qat-epochs")
    lr: float = option(0.001, "peak learning rate (cosine decay)", type=positive_float)
    float_checkpoint: str | None = option(None, "float model to start from; None means "
                                          "<out-dir>/<model>_float_unfused.pth")
    observer: str = option(DEFAULT_OBSERVER, "activation-scale observer: running max of all batches, or an EMA of "
                           "batch maxima", choices=OBSERVERS)

    def options(self) -> dict:
        return {**super().options(), "observer": self.observer}

    def float_path(self) -> Path:
        return Path(self.float_checkpoint or checkpoint_path(self.out_dir, self.model, "float"))

    def initial_model(self, data, device, source):
        qmodel = QuantNet(load_float_model(self.float_path(), self.model), observer=self.observer).to(device)
        # Observers start from the float model's activations on unaugmented training batches.
        idx = data.calibration_indices(CALIB_BATCHES * self.batch_size)
        qmodel.calibrate(iterate(data.train_x[idx], data.train_y[idx], self.batch_size, device))
        return qmodel

    def extra_meta(self, source) -> dict:
        return {"float_checkpoint": str(self.float_path())}

    def start_epoch(self, model, epoch: int) -> None:
        # Freeze the activation scales for the second half: the last epochs
        # then train against the exact quantizer the teacher will use.
        model.observing = epoch <= max(1, self.epochs // 2)


@dataclass
class StudentConfig(StageConfig):
    stage: ClassVar[str] = "student"
    label: ClassVar[str] = "Student"
    help: ClassVar[str] = "fine-tune the INT8 teacher with a search result's tables in place"

    model: str | None = option(None, "refuse a result of another model", choices=MODEL_NAMES)
    epochs: int = option(3, "fine-tuning epochs", type=positive_int)
    lr: float = option(0.0005, "peak learning rate (cosine decay)", type=positive_float)
    label_smoothing: float = option(0.0, "cross-entropy label smoothing", type=non_negative_float)
    config_path: str | None = option(None, "the search result whose tables the student keeps")
    kd_temperature: float = option(KD_TEMPERATURE, "temperature of the distillation from the teacher's logits",
                                   type=positive_float)
    kd_weight: float = option(KD_WEIGHT, "weight of the distillation loss", type=non_negative_float)
    attention_weight: float = option(ATTENTION_WEIGHT, "weight of the attention-transfer loss at the attention "
                                     "layers (the search's w_att = 50 lowered validation accuracy)",
                                     type=non_negative_float)
    clip_lr: float = option(CLIP_LR, "learning rate of each layer's clip, in units of the searched clip (the "
                            "tables follow it); 0 keeps the searched clips", type=non_negative_float)
    holdout: int = option(HOLDOUT, "training images left out of fine-tuning (the last of the fixed order, at most a "
                          "tenth of them) on which the fine-tuned student must beat the untuned tables to be kept; "
                          "0: always keep it", type=non_negative_int)

    def options(self) -> dict:
        opts = {**super().options(), "kd_temperature": self.kd_temperature, "kd_weight": self.kd_weight,
                "attention_weight": self.attention_weight}
        if self.clip_lr:  # left off when 0: older students compare equal
            opts["clip_lr"] = self.clip_lr
        if self.holdout:
            opts["holdout"] = self.holdout
        return opts

    def held_out(self, data) -> torch.Tensor:
        return data.selection_indices(min(self.holdout, len(data.split()[0]) // 10))

    def training_indices(self, data, train_idx: torch.Tensor) -> torch.Tensor:
        held = set(self.held_out(data).tolist())
        return torch.tensor([i for i in train_idx.tolist() if i not in held], dtype=train_idx.dtype)

    def finish(self, model, data, device, source, meta: dict):
        """Keeps the fine-tuned student only where it beats the untuned tables on the held-out images by a
        one-sided paired test (z > 1.645 on the per-image difference in hits): on LeNet-5 at K = 16 a student
        that fine-tuning made worse on the test set looked better on validation, the split its epochs saw."""
        if not self.holdout:
            return model
        idx = self.held_out(data)
        x, y = data.train_x[idx], data.train_y[idx]
        untuned = self.initial_model(data, device, source).to(device)
        hits = {name: (predict(net, x, device) == y).double() for name, net in (("tuned", model), ("untuned", untuned))}
        d = hits["tuned"] - hits["untuned"]
        z = float(d.mean() / (d.std() / math.sqrt(len(d)))) if d.std() > 0 else 0.0
        keep = z > 1.645
        meta["holdout_check"] = {"images": len(d), "tuned": 100 * float(hits["tuned"].mean()),
                                 "untuned": 100 * float(hits["untuned"].mean()), "z": z, "kept": keep}
        print(f"[Student] held-out training images ({len(d)}): fine-tuned {meta['holdout_check']['tuned']:.2f}% | "
              f"untuned tables {meta['holdout_check']['untuned']:.2f}% | z {z:+.2f} -> keeping the "
              f"{'fine-tuned student' if keep else 'untuned tables (the teacher weights)'}", flush=True)
        if keep:
            return model
        meta.pop("clips", None)  # the untuned student keeps the result's own tables and clips
        meta["tables"] = {n: [int(v) for v in t] for n, t in source["tables"].items()}
        return untuned

    def prepare(self, data) -> dict:
        if not self.config_path:
            raise UserError("train_baselines.py student needs --config-path <search result .json>")
        source = finetune_source(self.config_path, self.model)
        self.model = source["model"]
        return source

    def checkpoint(self) -> Path:
        return checkpoint_path(self.out_dir, self.model, self.stage, Path(self.config_path).stem)

    def initial_model(self, data, device, source):
        teacher = load_teacher(source["teacher"]["path"], self.model).to(device)
        tables = {n: torch.tensor(t) for n, t in source["tables"].items()}
        params = {n: TapParams(**p) for n, p in source["params"].items()}
        return TapStudent(teacher, tables, self.kd_temperature, self.kd_weight, self.attention_weight,
                          self.label_smoothing, params, self.clip_lr)

    def extra_meta(self, source) -> dict:
        return {k: source[k] for k in ("teacher", "result", "tables")}

    def loss_fn(self, model, device):
        return model.loss

    def epoch_meta(self, model) -> dict:
        if not self.clip_lr:
            return {}
        # Learned clips: the tables and clips that go with these weights (evaluate and export read them).
        return {"tables": {n: [int(v) for v in t.tolist()] for n, t in model.tables.items()},
                "clips": {n: p.as_dict() for n, p in model.clip_params().items()}}


STAGES = {c.stage: c for c in (FloatConfig, QatConfig, StudentConfig)}
DEFAULT_EPOCHS = {s: c.epochs for s, c in STAGES.items()}
DEFAULT_LR = {s: c.lr for s, c in STAGES.items()}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    sub = p.add_subparsers(dest="stage", required=True)
    for stage, cls in STAGES.items():
        s = sub.add_parser(stage, help=cls.help, description=cls.help)
        add_config_args(s, cls)
        add_common_args(s)
    s = sub.add_parser("soft-labels", help=SOFT_HELP, description=soft_labels.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--from", dest="source", required=True, help="the trained float checkpoint whose logits are stored")
    s.add_argument("--model", default="lenet5", choices=MODEL_NAMES, help="its model (default: lenet5)")
    s.add_argument("--views", default="all", choices=soft_labels.VIEWS,
                   help="all: every view the recipe draws; flip: the uncropped image and its mirror; one: the "
                        "uncropped image (default: all)")
    s.add_argument("--crop-pad", type=crop_pad, default=CROP_PAD,
                   help=f"the crop padding of the recipe that will read it (default: {CROP_PAD}, the float recipe's)")
    s.add_argument("--output", default=None,
                   help="the file (default: <out-dir>/soft_labels_<model>_w<width>_pad<p>[_<views>].npz)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    add_common_args(s)
    return p


SOFT_HELP = "store a trained network's logits on the training images, for --soft-labels"


def make_soft_labels(args) -> Path:
    """The soft-labels command: the teacher's logits on every training image and view, written atomically."""
    device = resolve_device(args.device)
    meta = load_checkpoint(args.source, model=args.model, stage="float")["meta"]
    model = load_float_model(args.source, args.model)
    data = load_cifar10(args.data, args.cache_dir, verbose=True)
    width = meta.get("width", 1.0)
    out = Path(args.output or Path(args.out_dir) / (f"soft_labels_{args.model}_w{width:g}_pad{args.crop_pad}"
                                                    + ("" if args.views == "all" else f"_{args.views}") + ".npz"))
    bf16 = MODELS[args.model].fast_bf16 and native_bf16(device)
    header, logits = soft_labels.make(model, meta, args.source, data, args.crop_pad, args.views, device, bf16,
                                      show_progress=not args.no_progress)
    soft_labels.write(out, header, logits)
    print(f"[Soft labels] {args.model} (width {width:g}, test {meta.get('test_acc', float('nan')):.2f}%) on "
          f"{header['images']['count']} training images x {len(header['stored_views'])} views in "
          f"{header['seconds']:.0f}s: wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", flush=True)
    return out


def config_of(args: argparse.Namespace) -> StageConfig:
    """The stage's config from parsed flags."""
    return config_from_args(STAGES[args.stage], args)


def parse_args(argv=None) -> StageConfig:
    return config_of(build_parser().parse_args(argv))


def stage_config(stage: str, **values) -> StageConfig:
    """A stage's config: its defaults, with `values` instead where given."""
    return STAGES[stage](**values)


def train_distill_teacher(cfg: FloatConfig) -> Path:
    """The plain float model a --distill-epochs run distills from: trained (or resumed, or reused when complete)
    in <out-dir>/distill/ with the same flags and --distill-epochs epochs."""
    teacher = replace(cfg, out_dir=str(Path(cfg.out_dir) / "distill"), epochs=cfg.distill_epochs, distill_epochs=0,
                      distill_from=None, wandb="disabled")
    path = teacher.checkpoint()
    teacher.resume = path.is_file()
    if teacher.resume:
        meta = load_checkpoint(path, model=cfg.model, stage="float")["meta"]
        if meta.get("complete"):
            diff = [k for k, v in teacher.options().items() if recorded_option(meta, k) != v]
            if diff:
                raise UserError(f"{path} (the model to distill from) was trained with other {', '.join(diff)}; "
                                f"delete it, or pass another --out-dir")
            return path
    print(f"[Float] the model to distill from: {cfg.distill_epochs} plain epochs into {path}", flush=True)
    train(teacher)
    return path


def estimated_seconds(cfg: StageConfig, n_train: int, epochs: int | None = None) -> float:
    """What the float or QAT stage will take here (or `epochs` of it): its training step timed on a random batch
    (models.training.step_seconds) times its steps, plus a tenth for validation. The plan's estimate."""
    step = _timed_step(cfg.model, getattr(cfg, "batchnorm", None), getattr(cfg, "width", 1.0), cfg.stage,
                       getattr(cfg, "observer", None), cfg.batch_size, cfg.device, cfg.precision_in_use() == "bf16")
    return 1.1 * step * math.ceil(n_train / cfg.batch_size) * (cfg.epochs if epochs is None else epochs)


@functools.lru_cache(maxsize=None)
def _timed_step(model_name, batchnorm, width, stage, observer, batch_size, device, bf16) -> float:
    """One stage's step time, measured once per process: the pipeline's plan and the stage itself share it."""
    model = build_model(model_name, batchnorm, width)
    if stage == "qat":
        model = QuantNet(model, observer=observer)
    return step_seconds(model, batch_size, resolve_device(device), bf16)


def say_estimate(cfg: StageConfig, n_train: int) -> None:
    """One line before a teacher stage trains: what it will take on this CPU, and the cheaper width for a deep net."""
    width = getattr(cfg, "width", None)
    cheaper = (" (--width 0.5 is about 3-4x cheaper)" if cfg.model != "lenet5" and width == 1.0 and cfg.stage == "float"
               else "")
    left = cfg.epochs
    if cfg.resume and cfg.checkpoint().is_file():  # a resumed run: only what is left
        left = max(0, cfg.epochs - load_checkpoint(cfg.checkpoint())["meta"].get("epochs_done", 0))
    what = f"{cfg.epochs} epochs" + (f" ({left} left to run)" if left != cfg.epochs else "")
    print(f"[{cfg.label}] {what} of {cfg.model}" + (f" at width {width:g}" if width else "")
          + f": ~{duration(estimated_seconds(cfg, n_train, left))} on this CPU (its step timed here){cheaper}",
          flush=True)


@torch.no_grad()
def bf16_check(model, fp32_loss, bf16_loss_of, x, y, batch_size: int, device) -> dict:
    """The loss of one unaugmented training batch in fp32 and under bf16 autocast (the model in eval mode, so
    nothing it holds changes); refuses bf16 when they disagree by more than 5 %."""
    xb, yb = next(iterate(x[:batch_size], y[:batch_size], batch_size, device))
    was_training = model.training
    model.eval()
    got = {"fp32": float(fp32_loss(xb, yb)), "bf16": float(bf16_loss_of(xb, yb))}
    model.train(was_training)
    if not abs(got["bf16"] - got["fp32"]) <= 0.05 * abs(got["fp32"]):
        raise UserError(f"bf16 autocast gives a loss of {got['bf16']:.4f} on a batch where fp32 gives "
                        f"{got['fp32']:.4f}; train with --precision fp32")
    return got


def train(cfg: StageConfig, on_epoch_end=None) -> dict:
    """Runs one stage; returns the final metadata. `on_epoch_end(epoch)` is a test hook."""
    device = resolve_device(cfg.device)
    data = load_cifar10(cfg.data, cfg.cache_dir, verbose=True)
    source = cfg.prepare(data)
    out = cfg.checkpoint()
    train_idx, val_idx = data.split()
    train_idx = cfg.training_indices(data, train_idx)
    train_x, train_y = data.train_x[train_idx], data.train_y[train_idx]
    val_x, val_y = data.train_x[val_idx], data.train_y[val_idx]
    steps = math.ceil(len(train_x) / cfg.batch_size)

    if cfg.stage in ("float", "qat") and not cfg.no_progress:
        say_estimate(cfg, len(train_x))
    torch.manual_seed(cfg.seed)
    model = cfg.initial_model(data, device, source).to(device)
    bf16 = cfg.precision_in_use() == "bf16"
    if bf16:  # before the optimizer: its state follows the parameters' layout
        model = model.to(memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.epochs, steps, cfg.stage)
    gen = torch.Generator().manual_seed(cfg.seed)
    meta = {"model": cfg.model, "stage": cfg.stage, **cfg.options(), "epochs_done": 0,
            "data_source": data.source, "data_hash": data.source_hash, "history": [], "complete": False,
            "batchnorm": model.batchnorm, "width": model.width, **cfg.extra_meta(source)}

    if cfg.resume:
        ckpt = load_checkpoint(out, model=cfg.model, stage=cfg.stage)
        ts, old = ckpt["train_state"], ckpt["meta"]
        if old.get("complete"):
            raise UserError(f"{out} is already complete ({old['epochs']} epochs); nothing to resume")
        for k in (*cfg.options(), "result"):
            if recorded_option(old, k) != meta.get(k):
                raise UserError(f"cannot resume {out}: it was started with {k}={recorded_option(old, k)}, now "
                                f"{meta.get(k)}; use the same flags, or start over without --resume")
        if old["data_hash"] != data.source_hash:
            raise UserError(f"cannot resume {out}: it was trained on another data source ({old['data_source']})")
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        gen.set_state(ts["generator"])
        meta = old
        print(f"[{cfg.label}] resuming after epoch {meta['epochs_done']} of {meta['epochs']}", flush=True)

    loss_of = cfg.loss_fn(model, device)
    if bf16:
        fp32_loss, loss_of = loss_of, bf16_loss(loss_of, device)
        meta["bf16_check"] = bf16_check(model, fp32_loss, loss_of, train_x, train_y, cfg.batch_size, device)
        print(f"[{cfg.label}] bf16 autocast, channels-last: one batch's loss {meta['bf16_check']['fp32']:.4f} in fp32, "
              f"{meta['bf16_check']['bf16']:.4f} in bf16", flush=True)
    run = start_wandb(cfg.wandb, out.stem, {k: v for k, v in meta.items() if k not in ("history", "tables")},
                      cfg.out_dir, cfg.wandb_project)
    for epoch in range(meta["epochs_done"] + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        cfg.start_epoch(model, epoch)
        targets = torch.arange(len(train_x)) if cfg.view_keys else train_y  # keys: image * views + view drawn
        batches = iterate(train_x, targets, cfg.batch_size, device, gen, train=True, crop_pad=cfg.crop_pad,
                          view_keys=cfg.view_keys)
        bar = progress(batches, steps, f"[{cfg.label}] Epoch {epoch}/{cfg.epochs}", disable=cfg.no_progress)
        total_loss = train_epoch(model, bar, opt, sched, loss_of)
        val_acc = accuracy(model, val_x, val_y, device)
        secs = time.perf_counter() - t0
        meta["history"].append({"epoch": epoch, "val_acc": val_acc, "train_loss": total_loss / steps, "seconds": secs})
        meta["epochs_done"] = epoch
        meta["val_acc"] = val_acc
        meta.update(cfg.epoch_meta(model))
        save_checkpoint(out, cfg.model, cfg.stage, model.state_dict(), meta,
                        {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state()})
        clips = " ".join(f"{n} {c['tmax']}" for n, c in meta.get("clips", {}).items())
        left = (cfg.epochs - epoch) * sum(h["seconds"] for h in meta["history"]) / len(meta["history"])
        print(f"[{cfg.label}] Epoch {epoch} | Val Acc {val_acc:.2f}% | Loss {total_loss / steps:.4f} | {secs:.1f}s"
              + (f" | {duration(left)} left" if epoch < cfg.epochs else "")
              + (f" | clips {clips}" if clips else ""), flush=True)
        if run is not None:
            run.log({"epoch": epoch, "train_loss": total_loss / steps, "val_acc": val_acc,
                     "lr": sched.get_last_lr()[0], "seconds": secs}, step=epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    model = cfg.finish(model, data, device, source, meta)
    test_acc = accuracy(model, data.test_x, data.test_y, device)
    meta.update(complete=True, test_acc=test_acc)
    save_checkpoint(out, cfg.model, cfg.stage, model.state_dict(), meta, None)
    print(f"[{cfg.label}] saved {out}", flush=True)
    print(f"[{cfg.label}] Test Acc {test_acc:.2f}%", flush=True)
    if run is not None:
        run.summary.update({"test_acc": test_acc, "val_acc": meta["val_acc"]})
        run.finish()
    return meta


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.stage == "soft-labels":
        make_soft_labels(args)
    else:
        train(config_of(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
