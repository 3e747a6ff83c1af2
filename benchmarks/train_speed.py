"""Training-side speed and INT8 realism figures, one `name: value unit` line each.

    python benchmarks/train_speed.py [--data PATH] [--teacher outputs/lenet5_qat_preconvert.pth]
    python benchmarks/train_speed.py --model vgg16 --width 0.5 [--steps 20]

  * data_prepare_first: decoding the tar.gz into a fresh cache
  * data_load_cached:   loading it again from the cache
  * float_epoch_median: one float LeNet-5 epoch (45k images, batch 128, augmentation on, data cached),
                        for each --batchnorm placement (interleaved) and their ratio to none
  * float_step:         one float training step (batch 128) as train_baselines.py runs it,
                        against the same net written the textbook way (plain_net: torch's own
                        layers, torch's default SGD; fp32, and bf16 where ours runs bf16),
                        interleaved step by step on the same batches, and their ratios.
                        With --model alexnet|vgg16 [--width W] only this is measured.
  * float_epoch_soft_labels: with --soft-labels FILE, a float epoch distilling from the
                        file's stored logits against one without (interleaved), and the ratio
  * qat_epoch_median:   the same for the QAT model, and the ratio to the float epoch
  * int8_agreement:     share of test images whose prediction from integer-only
                        arithmetic equals the fake-quant teacher's (needs --teacher)

Run it on a quiet machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


from models import BATCHNORM_CHOICES, DEFAULT_BATCHNORM, MODEL_NAMES, MODELS, build_model
from models.batching import iterate
from common.cli import default_data_path
from models.data import load_cifar10
from quant.qat import QuantNet
from models.training import bf16_loss, make_optimizer, native_bf16, sgd_step, train_epoch
import train_baselines
from train_baselines import DEFAULT_LR, LABEL_SMOOTHING, WEIGHT_DECAY


def epoch_seconds(model, x, y, stage: str, batch_size: int = 128, soft=None) -> float:
    """Wall time of one training epoch exactly as train_baselines.py runs it (no validation); with `soft` (a
    float config with --soft-labels, prepared), its distillation loss on the stored logits."""
    steps = math.ceil(len(x) / batch_size)
    opt, sched = make_optimizer(model, DEFAULT_LR[stage], WEIGHT_DECAY, 1, steps, stage)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    if soft is None:
        batches, loss_of = iterate(x, y, batch_size, "cpu", gen, train=True), lambda xb, yb: loss_fn(model(xb), yb)
    else:
        batches = iterate(x, torch.arange(len(x)), batch_size, "cpu", gen, train=True, crop_pad=soft.crop_pad,
                          view_keys=True)
        loss_of = soft.loss_fn(model, torch.device("cpu"))
    train_epoch(model, batches, opt, sched, loss_of)
    return time.perf_counter() - t0


def plain_net(model) -> nn.Sequential:
    """The same net written the textbook way: an nn.Sequential of torch's own layers (Conv2d, BatchNorm,
    ReLU, MaxPool2d, Linear) with the shapes of `model`'s stages, ReLU before the pool."""
    layers: list[nn.Module] = []
    for st in model.stages:
        if st.flatten:
            layers.append(nn.Flatten())
        if st.kind == "conv":
            layers.append(nn.Conv2d(st.in_ch, st.out_ch, st.kernel, padding=st.padding))
        else:
            layers.append(nn.Linear(st.in_ch, st.out_ch))
        if st.classifier:
            break
        if st.bn:
            layers.append(nn.BatchNorm2d(st.out_ch) if st.kind == "conv" else nn.BatchNorm1d(st.out_ch))
        layers.append(nn.ReLU())
        if st.pool:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def step_milliseconds(name: str, width: float, x, y, steps: int) -> dict[str, float]:
    """Median step time of our float step (train_baselines.py's: fused SGD, and bf16 autocast with channels-last
    where --precision auto picks it) against the same net in plain PyTorch (plain_net, torch's default SGD),
    in fp32 and, where ours runs bf16, in bf16 too. Interleaved step by step on the same batches, the order
    rotating, so that this machine's drift hits all alike."""
    torch.manual_seed(0)
    ours = build_model(name, width=width)
    device = torch.device("cpu")
    bf16 = MODELS[name].fast_bf16 and native_bf16(device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)

    def plain_loss(m):
        return lambda xb, yb: loss_fn(m(xb), yb)

    def plain_opt(m):
        return torch.optim.SGD(m.parameters(), lr=DEFAULT_LR["float"], momentum=0.9, nesterov=True,
                               weight_decay=WEIGHT_DECAY)

    ours_loss = plain_loss(ours)
    if bf16:
        ours, ours_loss = ours.to(memory_format=torch.channels_last), bf16_loss(ours_loss, device)
    runs = {"ours": (ours_loss, make_optimizer(ours, DEFAULT_LR["float"], WEIGHT_DECAY, 1, steps, "float")[0])}
    textbook = plain_net(ours)
    runs["plain_fp32"] = (plain_loss(textbook), plain_opt(textbook))
    if bf16:
        textbook16 = plain_net(ours)
        runs["plain_bf16"] = (bf16_loss(plain_loss(textbook16), device), plain_opt(textbook16))
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    warmup = 3
    batches = iterate(x, y, 128, "cpu", torch.Generator().manual_seed(0), train=True)
    for i, (xb, yb) in zip(range(steps + warmup), batches):
        for n in names[i % len(names):] + names[:i % len(names)]:
            loss_of, opt = runs[n]
            t0 = time.perf_counter()
            sgd_step(loss_of, xb, yb, opt)
            if i >= warmup:
                times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(ts) * 1e3 for n, ts in times.items()}


def print_step_speed(name: str, width: float, x, y, steps: int) -> None:
    ms = step_milliseconds(name, width, x, y, steps)
    print(f"float_step ({name} x{width:g}, batch 128, {steps} steps): " + ", ".join(f"{n} {v:.2f} ms" for n, v in ms.items()))
    for n in ms:
        if n != "ours":
            print(f"float_step_ratio_to_{n}: {ms['ours'] / ms[n]:.2f} x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data_path())
    p.add_argument("--teacher", default="outputs/lenet5_qat_preconvert.pth")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per model (median reported)")
    p.add_argument("--soft-labels", default=None, help="also time a float epoch distilling from this file")
    p.add_argument("--model", default="lenet5", choices=MODEL_NAMES,
                   help="another model: only its training step against plain PyTorch (float_step)")
    p.add_argument("--width", type=float, default=1.0, help="with --model: its width")
    p.add_argument("--steps", type=int, default=None, help="timed steps of float_step (default: 200, 20 deep)")
    args = p.parse_args()
    if args.model != "lenet5":
        data = load_cifar10(args.data)
        train_idx, _ = data.split()
        print_step_speed(args.model, args.width, data.train_x[train_idx], data.train_y[train_idx], args.steps or 20)
        return

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        load_cifar10(args.data, cache)
        print(f"data_prepare_first: {time.perf_counter() - t0:.2f} s")
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            data = load_cifar10(args.data, cache)
            times.append(time.perf_counter() - t0)
        print(f"data_load_cached: {statistics.median(times):.2f} s")

    train_idx, _ = data.split()
    x, y = data.train_x[train_idx], data.train_y[train_idx]
    # Each BatchNorm placement's float epoch, interleaved epoch by epoch so that drift hits all alike.
    models = {}
    for bn in BATCHNORM_CHOICES:
        torch.manual_seed(0)
        models[bn] = build_model("lenet5", bn)
    epochs: dict = {bn: [] for bn in models}
    for _ in range(args.epochs):
        for bn, m in models.items():
            epochs[bn].append(epoch_seconds(m, x, y, "float"))
    for bn, ts in epochs.items():
        print(f"float_epoch_median_batchnorm_{bn}: {statistics.median(ts):.2f} s")
    for bn in ("conv", "all"):
        print(f"float_epoch_batchnorm_{bn}_over_none: {statistics.median(epochs[bn]) / statistics.median(epochs['none']):.2f} x")
    default = DEFAULT_BATCHNORM["lenet5"]
    fmodel, float_t = models[default], statistics.median(epochs[default])
    print(f"float_epoch_median: {float_t:.2f} s (default --batchnorm {default})")
    if args.soft_labels:
        soft = train_baselines.parse_args(["float", "--soft-labels", args.soft_labels])
        soft.prepare(data)
        pair: dict = {"plain": [], "soft": []}
        for _ in range(args.epochs):  # interleaved, each on a fresh model
            for kind in pair:
                torch.manual_seed(0)
                pair[kind].append(epoch_seconds(build_model("lenet5"), x, y, "float",
                                                soft=soft if kind == "soft" else None))
        plain_t, soft_t = statistics.median(pair["plain"]), statistics.median(pair["soft"])
        print(f"float_epoch_soft_labels: {soft_t:.2f} s against {plain_t:.2f} s without: "
              f"{soft_t / plain_t:.2f} x ({args.soft_labels})")
    print_step_speed("lenet5", 1.0, x, y, args.steps or 200)
    qmodel = QuantNet(fmodel)
    calib = data.calibration_indices(1280)
    qmodel.calibrate(iterate(data.train_x[calib], data.train_y[calib], 128, "cpu"))
    qat_t = statistics.median(epoch_seconds(qmodel, x, y, "qat") for _ in range(args.epochs))
    print(f"qat_epoch_median: {qat_t:.2f} s")
    print(f"qat_over_float_epoch: {qat_t / float_t:.2f} x")

    if Path(args.teacher).is_file():
        from quant.qat import load_teacher
        from models.metrics import predict
        from quant.integer import export_int8, integer_predict

        q = load_teacher(args.teacher, "lenet5")
        t0 = time.perf_counter()
        p_int = integer_predict(data.test_x, export_int8(q))
        int_t = time.perf_counter() - t0
        p_fq = predict(q, data.test_x, "cpu")
        print(f"int8_agreement: {100 * (p_int == p_fq).float().mean().item():.2f} % of {len(p_fq)} test images")
        print(f"int8_test_acc: {100 * (p_int == data.test_y).float().mean().item():.2f} %")
        print(f"fake_quant_test_acc: {100 * (p_fq == data.test_y).float().mean().item():.2f} %")
        print(f"int8_inference_test_set: {int_t:.1f} s")
    else:
        print(f"int8_agreement: skipped ({args.teacher} not found; train the QAT teacher first)")


if __name__ == "__main__":
    main()
