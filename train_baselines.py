"""Trains the teachers the TAP search wraps (the guide's steps 1 and 2), and fine-tunes a searched student.

    python train_baselines.py float   --model lenet5            # 60 epochs; the guide's: --epochs 30
    python train_baselines.py qat     --model lenet5 --qat-epochs 10
    python train_baselines.py student --config-path outputs/tri_ppo_int_codes/<result>.json

`float` writes outputs/<model>_float_unfused.pth; `qat` initialises an INT8
model from it (quant/qat.py) and writes outputs/<model>_qat_preconvert.pth;
`student` fine-tunes the INT8 teacher with a search result's tables in place
(quant/finetune.py) and writes outputs/<model>_student_<result>.pth. Each
saves after every epoch (atomically); `--resume` continues an interrupted
run from its last completed epoch and ends with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from quant.result import finetune_source
from common.wandb_run import WANDB_MODES, start_wandb
from models import BATCHNORM_CHOICES, DEFAULT_BATCHNORM, MODEL_NAMES, build_model
from common.files import file_sha256
from models.checkpoint import checkpoint_path, load_checkpoint, load_float_model, save_checkpoint
from common.cli import (add_common_args, non_negative_float, non_negative_int, positive_float, positive_int,
                        resolve_device, run_main)
from models.batching import CROP_PAD, iterate
from models.data import load_cifar10
from common.errors import UserError
from models.metrics import accuracy
from models.training import distillation_loss, make_optimizer, train_epoch
from quant.finetune import ATTENTION_WEIGHT, KD_TEMPERATURE, KD_WEIGHT, TapStudent
from quant.qat import DEFAULT_OBSERVER, OBSERVERS, QuantNet, load_teacher
from quant.tap import TapParams

DEFAULT_LR = {"float": 0.05, "qat": 0.001, "student": 0.0005}  # chosen on validation (benchmarks/README.md)
LABEL = {"float": "Float", "qat": "QAT", "student": "Student"}
# Float: 60 epochs, chosen on validation over seeds 0-2 against the guide's 30 (benchmarks/README.md, "Teachers").
DEFAULT_EPOCHS = {"float": 60, "qat": 10, "student": 3}
WEIGHT_DECAY = 5e-4
LABEL_SMOOTHING = 0.1
MAX_CROP_PAD = 16  # half the 32-pixel CIFAR-10 image
CALIB_BATCHES = 20  # float-model batches that initialise the QAT observers
FLOAT_KD_WEIGHT = 1.0
DISTILL_EPOCHS = 0
CLIP_LR = 0.0


def crop_pad(text: str) -> int:
    v = non_negative_int(text)
    if v > MAX_CROP_PAD:
        raise argparse.ArgumentTypeError(f"expected a padding of 0..{MAX_CROP_PAD} pixels, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    for stage, help_ in (("float", "train the float32 teacher"), ("qat", "quantization-aware training (INT8)"),
                         ("student", "fine-tune the INT8 teacher with a search result's tables in place")):
        s = sub.add_parser(stage, help=help_)
        if stage == "student":
            s.add_argument("--config-path", default=None, help="the search result whose tables the student keeps")
            s.add_argument("--model", default=None, choices=MODEL_NAMES, help="refuse a result of another model")
            s.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS[stage],
                           help=f"fine-tuning epochs (default {DEFAULT_EPOCHS[stage]})")
            s.add_argument("--kd-temperature", type=positive_float, default=KD_TEMPERATURE,
                           help=f"temperature of the distillation from the teacher's logits (default {KD_TEMPERATURE})")
            s.add_argument("--kd-weight", type=non_negative_float, default=KD_WEIGHT,
                           help=f"weight of the distillation loss (default {KD_WEIGHT})")
            s.add_argument("--attention-weight", type=non_negative_float, default=ATTENTION_WEIGHT,
                           help="weight of the attention-transfer loss at the attention layers (default "
                                f"{ATTENTION_WEIGHT}; the search's w_att = 50 lowered validation accuracy)")
            s.add_argument("--clip-lr", type=non_negative_float, default=CLIP_LR,
                           help="learning rate of each layer's clip (in units of the searched clip); the "
                                f"tables follow it; 0 keeps the searched clips (default {CLIP_LR})")
        else:
            s.add_argument("--model", default="lenet5", choices=MODEL_NAMES)
        if stage == "float":
            s.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS[stage],
                           help=f"float epochs (default {DEFAULT_EPOCHS[stage]})")
            s.add_argument("--distill-epochs", type=non_negative_int, default=DISTILL_EPOCHS,
                           help="first train a plain float model for this many epochs (into <out-dir>/distill/) "
                                f"and distill from it; 0: plain training, the guide's (default {DISTILL_EPOCHS})")
            s.add_argument("--distill-from", default=None,
                           help="a float checkpoint of the same model to distill from (its soft labels join the "
                                "loss: --kd-weight, --kd-temperature); default: none, plain cross-entropy")
            s.add_argument("--kd-weight", type=non_negative_float, default=FLOAT_KD_WEIGHT,
                           help=f"with --distill-from: weight of the distillation loss (default {FLOAT_KD_WEIGHT})")
            s.add_argument("--kd-temperature", type=positive_float, default=KD_TEMPERATURE,
                           help=f"with --distill-from: its temperature (default {KD_TEMPERATURE})")
            s.add_argument("--batchnorm", choices=BATCHNORM_CHOICES, default=None,
                           help="BatchNorm while training: none, after each conv, or after all layers but the "
                                "classifier; folded away when QAT starts (default: the model's, "
                                + ", ".join(f"{m} {b}" for m, b in DEFAULT_BATCHNORM.items()) + ")")
        elif stage == "qat":
            s.add_argument("--qat-epochs", dest="epochs", type=positive_int, default=DEFAULT_EPOCHS[stage],
                           help=f"QAT epochs (default {DEFAULT_EPOCHS[stage]})")
            s.add_argument("--float-checkpoint", default=None,
                           help="float model to start from (default: <out-dir>/<model>_float_unfused.pth)")
            s.add_argument("--observer", choices=OBSERVERS, default=DEFAULT_OBSERVER,
                           help="activation-scale observer: running max of all batches, or an EMA of "
                                f"batch maxima (default {DEFAULT_OBSERVER})")
        s.add_argument("--lr", type=positive_float, default=None,
                       help=f"peak learning rate (default {DEFAULT_LR[stage]})")
        s.add_argument("--weight-decay", type=non_negative_float, default=WEIGHT_DECAY,
                       help=f"SGD weight decay (default {WEIGHT_DECAY})")
        smoothing = 0.0 if stage == "student" else LABEL_SMOOTHING
        s.add_argument("--label-smoothing", type=non_negative_float, default=smoothing,
                       help=f"cross-entropy label smoothing (default {smoothing})")
        s.add_argument("--crop-pad", type=crop_pad, default=CROP_PAD,
                       help=f"augmentation: random crop of the image padded by this many pixels, plus "
                            f"horizontal flip; 0 = flip only (default {CROP_PAD})")
        s.add_argument("--batch-size", type=positive_int, default=128)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--resume", action="store_true", help="continue an interrupted run of this stage")
        s.add_argument("--no-progress", action="store_true", help="no progress bar")
        s.add_argument("--wandb", default="disabled", choices=WANDB_MODES,
                       help="Weights & Biases: per-epoch train loss, val accuracy and lr (default disabled; "
                            "offline needs no account or network)")
        s.add_argument("--wandb-project", default=None, help="W&B project (default: $WANDB_PROJECT, else tapquant)")
        add_common_args(s)
    return p


def stage_args(stage: str, **values) -> argparse.Namespace:
    """A stage's flags as parsed from the command line: its defaults, with `values` instead where given."""
    args = build_parser().parse_args([stage])
    unknown = sorted(set(values) - set(vars(args)))
    if unknown:
        raise TypeError(f"train_baselines {stage} has no option {unknown}")
    vars(args).update(values)
    return args


def stage_options(args) -> dict:
    """The options that make a stage's weights what they are: recorded in its checkpoint, and compared
    by --resume and by the pipeline before it reuses a checkpoint."""
    opts = {k: getattr(args, k) for k in ("epochs", "batch_size", "seed", "weight_decay", "label_smoothing",
                                          "crop_pad")}
    opts["lr"] = args.lr or DEFAULT_LR[args.stage]
    if args.stage == "float":
        opts["batchnorm"] = args.batchnorm or DEFAULT_BATCHNORM[args.model]
        if args.distill_epochs:  # options left off are not recorded: older checkpoints compare equal
            opts["distill_epochs"] = args.distill_epochs
        if args.distill_from:
            opts.update(distill_from=file_sha256(args.distill_from), kd_weight=args.kd_weight,
                        kd_temperature=args.kd_temperature)
    elif args.stage == "qat":
        opts["observer"] = args.observer
    else:
        opts.update(kd_temperature=args.kd_temperature, kd_weight=args.kd_weight,
                    attention_weight=args.attention_weight)
        if args.clip_lr:  # left off when 0: older students compare equal
            opts["clip_lr"] = args.clip_lr
    return opts


def initial_model(args, data, device, source: dict | None = None):
    torch.manual_seed(args.seed)
    if args.stage == "float":
        return build_model(args.model, args.batchnorm)
    if args.stage == "student":
        teacher = load_teacher(source["teacher"]["path"], args.model).to(device)
        tables = {n: torch.tensor(t) for n, t in source["tables"].items()}
        params = {n: TapParams(**p) for n, p in source["params"].items()}
        return TapStudent(teacher, tables, args.kd_temperature, args.kd_weight, args.attention_weight,
                          args.label_smoothing, params, args.clip_lr)
    src = args.float_checkpoint or checkpoint_path(args.out_dir, args.model, "float")
    qmodel = QuantNet(load_float_model(src, args.model), observer=args.observer).to(device)
    # Observers start from the float model's activations on unaugmented training batches.
    idx = data.calibration_indices(CALIB_BATCHES * args.batch_size)
    calib = iterate(data.train_x[idx], data.train_y[idx], args.batch_size, device)
    qmodel.calibrate(calib)
    return qmodel


def train_distill_teacher(args) -> Path:
    """The plain float model a --distill-epochs run distills from: trained (or resumed, or reused when complete)
    in <out-dir>/distill/ with the same flags and --distill-epochs epochs."""
    teacher = argparse.Namespace(**{**vars(args), "out_dir": str(Path(args.out_dir) / "distill"),
                                    "epochs": args.distill_epochs, "distill_epochs": 0, "distill_from": None,
                                    "wandb": "disabled"})
    path = checkpoint_path(teacher.out_dir, args.model, "float")
    teacher.resume = path.is_file()
    if teacher.resume:
        meta = load_checkpoint(path, model=args.model, stage="float")["meta"]
        if meta.get("complete"):
            diff = [k for k, v in stage_options(teacher).items() if meta.get(k) != v]
            if diff:
                raise UserError(f"{path} (the model to distill from) was trained with other {', '.join(diff)}; "
                                f"delete it, or pass another --out-dir")
            return path
    print(f"[Float] the model to distill from: {args.distill_epochs} plain epochs into {path}", flush=True)
    train(teacher)
    return path


def train(args, on_epoch_end=None) -> dict:
    """Runs one stage; returns the final metadata. `on_epoch_end(epoch)` is a test hook."""
    device = resolve_device(args.device)
    lr = args.lr or DEFAULT_LR[args.stage]
    label = LABEL[args.stage]
    source = None
    if args.stage == "float" and args.distill_epochs and not args.distill_from:
        args.distill_from = str(train_distill_teacher(args))
    distill_from = getattr(args, "distill_from", None)
    if distill_from and not Path(distill_from).is_file():
        raise UserError(f"--distill-from {distill_from}: no such float checkpoint; train one first with: "
                        f"python train_baselines.py float --model {args.model} --out-dir <dir>")
    if args.stage == "student":
        if not args.config_path:
            raise UserError("train_baselines.py student needs --config-path <search result .json>")
        source = finetune_source(args.config_path, args.model)
        args.model = source["model"]
    out = checkpoint_path(args.out_dir, args.model, args.stage,
                          Path(args.config_path).stem if args.stage == "student" else None)
    data = load_cifar10(args.data, args.cache_dir, verbose=True)
    train_idx, val_idx = data.split()
    train_x, train_y = data.train_x[train_idx], data.train_y[train_idx]
    val_x, val_y = data.train_x[val_idx], data.train_y[val_idx]
    steps = math.ceil(len(train_x) / args.batch_size)

    model = initial_model(args, data, device, source).to(device)
    opt, sched = make_optimizer(model, lr, args.weight_decay, args.epochs, steps, args.stage)
    gen = torch.Generator().manual_seed(args.seed)
    meta = {"model": args.model, "stage": args.stage, **stage_options(args), "epochs_done": 0,
            "data_source": data.source, "data_hash": data.source_hash, "history": [], "complete": False}
    meta["batchnorm"] = model.batchnorm
    if args.stage == "qat":
        meta["float_checkpoint"] = str(args.float_checkpoint or checkpoint_path(args.out_dir, args.model, "float"))
    if source:
        meta.update({k: source[k] for k in ("teacher", "result", "tables")})

    if args.resume:
        ckpt = load_checkpoint(out, model=args.model, stage=args.stage)
        ts, old = ckpt["train_state"], ckpt["meta"]
        if old.get("complete"):
            raise UserError(f"{out} is already complete ({old['epochs']} epochs); nothing to resume")
        for k in (*stage_options(args), "result"):
            if old.get(k) != meta.get(k):
                raise UserError(f"cannot resume {out}: it was started with {k}={old.get(k)}, now {meta.get(k)}; "
                                f"use the same flags, or start over without --resume")
        if old["data_hash"] != data.source_hash:
            raise UserError(f"cannot resume {out}: it was trained on another data source ({old['data_source']})")
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        gen.set_state(ts["generator"])
        meta = old
        print(f"[{label}] resuming after epoch {meta['epochs_done']} of {meta['epochs']}", flush=True)

    if args.stage == "student":
        loss_of = model.loss
    elif args.stage == "float" and args.distill_from:
        ce = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        distill_teacher = load_float_model(args.distill_from, args.model).to(device).eval()

        def loss_of(xb, yb):
            logits = model(xb)
            with torch.no_grad():
                t_logits = distill_teacher(xb)
            return ce(logits, yb) + args.kd_weight * distillation_loss(logits, t_logits, args.kd_temperature)
    else:
        ce = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        loss_of = lambda xb, yb: ce(model(xb), yb)  # noqa: E731
    run = start_wandb(args.wandb, out.stem, {k: v for k, v in meta.items() if k not in ("history", "tables")},
                      args.out_dir, args.wandb_project)
    for epoch in range(meta["epochs_done"] + 1, args.epochs + 1):
        t0 = time.perf_counter()
        if args.stage == "qat":
            # Freeze the activation scales for the second half: the last epochs
            # then train against the exact quantizer the teacher will use.
            model.observing = epoch <= max(1, args.epochs // 2)
        batches = iterate(train_x, train_y, args.batch_size, device, gen, train=True, crop_pad=args.crop_pad)
        bar = tqdm(batches, total=steps, desc=f"[{label}] Epoch {epoch}/{args.epochs}", leave=False, unit="batch",
                   disable=True if args.no_progress else None)  # None: a bar only on a terminal
        total_loss = train_epoch(model, bar, opt, sched, loss_of)
        val_acc = accuracy(model, val_x, val_y, device)
        secs = time.perf_counter() - t0
        meta["history"].append({"epoch": epoch, "val_acc": val_acc, "train_loss": total_loss / steps, "seconds": secs})
        meta["epochs_done"] = epoch
        meta["val_acc"] = val_acc
        if getattr(model, "clip_lr", 0):  # the tables that go with these weights
            clips = model.clip_params()
            meta["tables"] = {n: [int(v) for v in t.tolist()] for n, t in model.tables.items()}
            meta["clips"] = {n: p.as_dict() for n, p in clips.items()}
        save_checkpoint(out, args.model, args.stage, model.state_dict(), meta,
                        {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state()})
        clips = (" | clips " + " ".join(f"{n} {c['tmax']}" for n, c in meta["clips"].items())) if "clips" in meta else ""
        print(f"[{label}] Epoch {epoch} | Val Acc {val_acc:.2f}% | Loss {total_loss / steps:.4f} | {secs:.1f}s{clips}",
              flush=True)
        if run is not None:
            run.log({"epoch": epoch, "train_loss": total_loss / steps, "val_acc": val_acc,
                     "lr": sched.get_last_lr()[0], "seconds": secs}, step=epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    test_acc = accuracy(model, data.test_x, data.test_y, device)
    meta.update(complete=True, test_acc=test_acc)
    save_checkpoint(out, args.model, args.stage, model.state_dict(), meta, None)
    print(f"[{label}] saved {out}", flush=True)
    print(f"[{label}] Test Acc {test_acc:.2f}%", flush=True)
    if run is not None:
        run.summary.update({"test_acc": test_acc, "val_acc": meta["val_acc"]})
        run.finish()
    return meta


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
