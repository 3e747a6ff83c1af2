"""Training-side speed and INT8 realism figures, one `name: value unit` line each.

    python benchmarks/train_speed.py [--data PATH] [--teacher outputs/lenet5_qat_preconvert.pth]

  * data_prepare_first: decoding the tar.gz into a fresh cache
  * data_load_cached:   loading it again from the cache
  * float_epoch_median: one float LeNet-5 epoch (45k images, batch 128, augmentation on, data cached),
                        for each --batchnorm placement (interleaved) and their ratio to none
  * float_step / float_step_textbook: one float training step (batch 128) as
                        train_baselines.py runs it, against the same LeNet-5 step written
                        the textbook way (ReLU, F.max_pool2d, torch's default SGD), the two
                        interleaved step by step on the same batches, and their ratio
  * qat_epoch_median:   the same for the QAT model, and the ratio to the float epoch
  * int8_agreement:     share of test images whose prediction from integer-only
                        arithmetic equals the fake-quant teacher's (needs --teacher)

Run it on a quiet machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F


from models import BATCHNORM_CHOICES, DEFAULT_BATCHNORM, build_model
from models.batching import iterate
from common.cli import default_data_path
from models.data import load_cifar10
from quant.qat import QuantNet
from models.training import make_optimizer, sgd_step, train_epoch
from train_baselines import DEFAULT_LR, LABEL_SMOOTHING, WEIGHT_DECAY


def epoch_seconds(model, x, y, stage: str, batch_size: int = 128) -> float:
    """Wall time of one training epoch exactly as train_baselines.py runs it (no validation)."""
    steps = math.ceil(len(x) / batch_size)
    opt, sched = make_optimizer(model, DEFAULT_LR[stage], WEIGHT_DECAY, 1, steps, stage)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    train_epoch(model, iterate(x, y, batch_size, "cpu", gen, train=True), opt, sched,
                lambda xb, yb: loss_fn(model(xb), yb))
    return time.perf_counter() - t0


def textbook_lenet5(m, x):
    """LeNet-5's forward in plain PyTorch ops, on the model's own layers."""
    x = F.max_pool2d(F.relu(m.conv1(x)), 2)
    x = F.max_pool2d(F.relu(m.conv2(x)), 2)
    x = F.relu(m.fc1(x.flatten(1)))
    return m.fc3(F.relu(m.fc2(x)))


def step_milliseconds(x, y, steps: int = 200) -> tuple[float, float]:
    """Median step time of our float step and of the textbook one, interleaved step by
    step (alternating which goes first) so that this machine's drift hits both alike."""
    torch.manual_seed(0)
    ours = build_model("lenet5", "none")
    textbook = copy.deepcopy(ours)
    opt, _ = make_optimizer(ours, DEFAULT_LR["float"], WEIGHT_DECAY, 1, steps, "float")
    opt_textbook = torch.optim.SGD(textbook.parameters(), lr=DEFAULT_LR["float"], momentum=0.9, nesterov=True,
                                   weight_decay=WEIGHT_DECAY)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    runs = [(ours, opt), (lambda xb: textbook_lenet5(textbook, xb), opt_textbook)]
    times: list[list[float]] = [[], []]
    batches = iterate(x, y, 128, "cpu", torch.Generator().manual_seed(0), train=True)
    for i, (xb, yb) in zip(range(steps + 10), batches):
        for j in ((0, 1) if i % 2 == 0 else (1, 0)):
            forward, o = runs[j]
            t0 = time.perf_counter()
            sgd_step(lambda xb, yb: loss_fn(forward(xb), yb), xb, yb, o)
            if i >= 10:  # warm-up steps are not timed
                times[j].append(time.perf_counter() - t0)
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data_path())
    p.add_argument("--teacher", default="outputs/lenet5_qat_preconvert.pth")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per model (median reported)")
    args = p.parse_args()

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
    ours_ms, textbook_ms = step_milliseconds(x, y)
    print(f"float_step: {ours_ms:.2f} ms")
    print(f"float_step_textbook: {textbook_ms:.2f} ms")
    print(f"float_step_ratio: {ours_ms / textbook_ms:.2f} x")
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
