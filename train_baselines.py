"""Trains the two teachers the TAP search wraps (the guide's steps 1 and 2).

    python train_baselines.py float --model lenet5 --epochs 30
    python train_baselines.py qat   --model lenet5 --qat-epochs 10

`float` writes outputs/<model>_float_unfused.pth; `qat` initialises an INT8
model from it (quant/qat.py) and writes outputs/<model>_qat_preconvert.pth.
Both save after every epoch (atomically); `--resume` continues an
interrupted run from its last completed epoch and ends with the same weights
as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn
from tqdm import tqdm

from models import BATCHNORM_CHOICES, DEFAULT_BATCHNORM, MODEL_NAMES, build_model
from models.checkpoint import checkpoint_path, load_checkpoint, load_float_model, save_checkpoint
from models.cli import (add_common_args, non_negative_float, non_negative_int, positive_float, positive_int,
                        resolve_device, run_main)
from models.data import CROP_PAD, iterate, load_cifar10
from models.errors import UserError
from models.metrics import accuracy
from quant.qat import DEFAULT_OBSERVER, OBSERVERS, QuantNet

DEFAULT_LR = {"float": 0.05, "qat": 0.005}
LABEL = {"float": "Float", "qat": "QAT"}
WEIGHT_DECAY = 5e-4
LABEL_SMOOTHING = 0.1
MAX_CROP_PAD = 16  # half the 32-pixel CIFAR-10 image
CALIB_BATCHES = 20  # float-model batches that initialise the QAT observers


def crop_pad(text: str) -> int:
    v = non_negative_int(text)
    if v > MAX_CROP_PAD:
        raise argparse.ArgumentTypeError(f"expected a padding of 0..{MAX_CROP_PAD} pixels, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    for stage, help_ in (("float", "train the float32 teacher"), ("qat", "quantization-aware training (INT8)")):
        s = sub.add_parser(stage, help=help_)
        s.add_argument("--model", default="lenet5", choices=MODEL_NAMES)
        if stage == "float":
            s.add_argument("--epochs", type=positive_int, default=30, help="float epochs (default 30)")
            s.add_argument("--batchnorm", choices=BATCHNORM_CHOICES, default=None,
                           help="BatchNorm while training: none, after each conv, or after all layers but the "
                                "classifier; folded away when QAT starts (default: the model's, "
                                + ", ".join(f"{m} {b}" for m, b in DEFAULT_BATCHNORM.items()) + ")")
        else:
            s.add_argument("--qat-epochs", dest="epochs", type=positive_int, default=10,
                           help="QAT epochs (default 10)")
            s.add_argument("--float-checkpoint", default=None,
                           help="float model to start from (default: <out-dir>/<model>_float_unfused.pth)")
            s.add_argument("--observer", choices=OBSERVERS, default=DEFAULT_OBSERVER,
                           help="activation-scale observer: running max of all batches, or an EMA of "
                                f"batch maxima (default {DEFAULT_OBSERVER})")
        s.add_argument("--lr", type=positive_float, default=None,
                       help=f"peak learning rate (default {DEFAULT_LR[stage]})")
        s.add_argument("--weight-decay", type=non_negative_float, default=WEIGHT_DECAY,
                       help=f"SGD weight decay (default {WEIGHT_DECAY})")
        s.add_argument("--label-smoothing", type=non_negative_float, default=LABEL_SMOOTHING,
                       help=f"cross-entropy label smoothing (default {LABEL_SMOOTHING})")
        s.add_argument("--crop-pad", type=crop_pad, default=CROP_PAD,
                       help=f"augmentation: random crop of the image padded by this many pixels, plus "
                            f"horizontal flip; 0 = flip only (default {CROP_PAD})")
        s.add_argument("--batch-size", type=positive_int, default=128)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--resume", action="store_true", help="continue an interrupted run of this stage")
        s.add_argument("--no-progress", action="store_true", help="no progress bar")
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


def make_optimizer(model: nn.Module, lr: float, wd: float, epochs: int, steps_per_epoch: int, stage: str):
    # fused: one kernel for all parameters. PyTorch's default on the CPU is a Python loop of
    # small ops, 0.46 against 0.12 ms a step for LeNet-5 (README, "Speed").
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd, fused=True)
    total = epochs * steps_per_epoch
    if stage == "float":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25)
    else:  # fine-tuning from a trained model: no warm-up, cosine decay
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return opt, sched


def sgd_step(forward, xb: torch.Tensor, yb: torch.Tensor, opt, loss_fn) -> float:
    """One optimizer step on a batch; returns its loss."""
    loss = loss_fn(forward(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def train_epoch(model: nn.Module, batches, opt, sched, loss_fn) -> float:
    """One pass of SGD steps over `batches`; returns the summed loss."""
    model.train()
    total = 0.0
    for xb, yb in batches:
        total += sgd_step(model, xb, yb, opt, loss_fn)
        sched.step()
    return total


def initial_model(args, data, device) -> nn.Module:
    torch.manual_seed(args.seed)
    if args.stage == "float":
        return build_model(args.model, args.batchnorm)
    src = args.float_checkpoint or checkpoint_path(args.out_dir, args.model, "float")
    qmodel = QuantNet(load_float_model(src, args.model), observer=args.observer).to(device)
    # Observers start from the float model's activations on unaugmented training batches.
    idx = data.calibration_indices(CALIB_BATCHES * args.batch_size)
    calib = iterate(data.train_x[idx], data.train_y[idx], args.batch_size, device)
    qmodel.calibrate(calib)
    return qmodel


def train(args, on_epoch_end=None) -> dict:
    """Runs one stage; returns the final metadata. `on_epoch_end(epoch)` is a test hook."""
    device = resolve_device(args.device)
    lr = args.lr or DEFAULT_LR[args.stage]
    label = LABEL[args.stage]
    out = checkpoint_path(args.out_dir, args.model, args.stage)
    data = load_cifar10(args.data, args.cache_dir, verbose=True)
    train_idx, val_idx = data.split()
    train_x, train_y = data.train_x[train_idx], data.train_y[train_idx]
    val_x, val_y = data.train_x[val_idx], data.train_y[val_idx]
    steps = math.ceil(len(train_x) / args.batch_size)

    model = initial_model(args, data, device).to(device)
    opt, sched = make_optimizer(model, lr, args.weight_decay, args.epochs, steps, args.stage)
    gen = torch.Generator().manual_seed(args.seed)
    meta = {"model": args.model, "stage": args.stage, "epochs": args.epochs, "epochs_done": 0, "lr": lr,
            "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
            "crop_pad": args.crop_pad, "batch_size": args.batch_size, "seed": args.seed, "data_source": data.source,
            "data_hash": data.source_hash, "history": [], "complete": False}
    meta["batchnorm"] = model.batchnorm
    if args.stage == "qat":
        meta["float_checkpoint"] = str(args.float_checkpoint or checkpoint_path(args.out_dir, args.model, "float"))
        meta["observer"] = args.observer

    if args.resume:
        ckpt = load_checkpoint(out, model=args.model, stage=args.stage)
        ts, old = ckpt["train_state"], ckpt["meta"]
        if old.get("complete"):
            raise UserError(f"{out} is already complete ({old['epochs']} epochs); nothing to resume")
        for k in ("epochs", "batch_size", "seed", "lr", "weight_decay", "label_smoothing", "crop_pad", "observer",
                  "batchnorm"):
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

    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    for epoch in range(meta["epochs_done"] + 1, args.epochs + 1):
        t0 = time.perf_counter()
        if isinstance(model, QuantNet):
            # Freeze the activation scales for the second half: the last epochs
            # then train against the exact quantizer the teacher will use.
            model.observing = epoch <= max(1, args.epochs // 2)
        batches = iterate(train_x, train_y, args.batch_size, device, gen, train=True, crop_pad=args.crop_pad)
        bar = tqdm(batches, total=steps, desc=f"[{label}] Epoch {epoch}/{args.epochs}", leave=False, unit="batch",
                   disable=args.no_progress)
        total_loss = train_epoch(model, bar, opt, sched, loss_fn)
        val_acc = accuracy(model, val_x, val_y, device)
        secs = time.perf_counter() - t0
        meta["history"].append({"epoch": epoch, "val_acc": val_acc, "train_loss": total_loss / steps, "seconds": secs})
        meta["epochs_done"] = epoch
        meta["val_acc"] = val_acc
        save_checkpoint(out, args.model, args.stage, model.state_dict(), meta,
                        {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state()})
        print(f"[{label}] Epoch {epoch} | Val Acc {val_acc:.2f}% | Loss {total_loss / steps:.4f} | {secs:.1f}s",
              flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    test_acc = accuracy(model, data.test_x, data.test_y, device)
    meta.update(complete=True, test_acc=test_acc)
    save_checkpoint(out, args.model, args.stage, model.state_dict(), meta, None)
    print(f"[{label}] saved {out}", flush=True)
    print(f"[{label}] Test Acc {test_acc:.2f}%", flush=True)
    return meta


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
