"""TAP-aware fine-tuning of the student: the drop before and after, per K, and its cost.

    python benchmarks/finetune.py [--data PATH] [--out-dir outputs] [--levels 16 8 4] [--seeds 0 1 2]
    python benchmarks/finetune.py --levels 4 conv1=4,conv2=8,fc1=32,fc2=8 --no-timing   # an allocation too

For each K it runs the default search (`agents.search --levels K`, seed 0,
1000 episodes; reused when its result exists), then fine-tunes the student
with each seed (train_baselines.py student, its defaults unless flags say
otherwise) and reports, on the test set, the drop before and after, the
validation accuracy (what recipes are chosen on), and how often the
integer-only reference agrees with the fake-quant student. Last, one QAT
epoch and one fine-tuning epoch are timed side by side, interleaved.
One `name: value unit` line per figure.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch


import train_baselines
from agents import search
from agents.evaluate import evaluate_result
from quant.result import read_result
from envs.config import ProblemConfig, levels_arg
from models.batching import iterate
from models.checkpoint import checkpoint_path, load_float_model
from common.cli import default_data_path
from models.data import load_cifar10
from models.metrics import predict
from models.training import make_optimizer, train_epoch
from quant.finetune import TapStudent
from quant.integer import export_int8, integer_predict
from quant.qat import QuantNet, load_teacher


def search_result(args, levels: int) -> Path:
    cfg = search.SearchConfig(problem=ProblemConfig(levels=levels, out_dir=args.out_dir, data=args.data),
                              result_file=f"bench_finetune_k{levels}.json", no_progress=True)
    if not (cfg.result_path.is_file() and read_result(cfg.result_path).get("complete")):
        search.run(cfg)
    return cfg.result_path


def epoch_seconds(args, result: Path, data) -> tuple[float, float]:
    """One QAT epoch and one fine-tuning epoch, interleaved twice; medians."""
    train_idx, _ = data.split()
    x, y = data.train_x[train_idx], data.train_y[train_idx]
    steps = math.ceil(len(x) / 128)
    res = read_result(result)
    teacher = load_teacher(res["teacher"]["path"], "lenet5")
    qat = QuantNet(load_float_model(checkpoint_path(args.out_dir, "lenet5", "float"), "lenet5"))
    calib = data.calibration_indices(1280)
    qat.calibrate(iterate(data.train_x[calib], data.train_y[calib], 128, "cpu"))
    student = TapStudent(teacher, {n: torch.tensor(c["table"]) for n, c in res["best"]["config"].items()})
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    runs = {"qat": (qat, lambda xb, yb: ce(qat(xb), yb)), "student": (student, student.loss)}
    times: dict = {k: [] for k in runs}
    for _ in range(2):
        for name, (model, loss_of) in runs.items():
            opt, sched = make_optimizer(model, train_baselines.DEFAULT_LR[name], 5e-4, 1, steps, name)
            t0 = time.perf_counter()
            train_epoch(model, iterate(x, y, 128, "cpu", torch.Generator().manual_seed(0), train=True), opt, sched,
                        loss_of)
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["qat"]), statistics.median(times["student"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data_path())
    p.add_argument("--out-dir", default="outputs")
    p.add_argument("--levels", type=levels_arg, nargs="+", default=[16, 8, 4],
                   help="each a K, or an allocation conv1=4,conv2=8,fc1=32,fc2=8 (agents.allocate's)")
    p.add_argument("--no-timing", action="store_true", help="skip the QAT / fine-tuning epoch timing")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the student's default)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--kd-weight", type=float, default=None)
    p.add_argument("--attention-weight", type=float, default=None)
    args = p.parse_args()
    data = load_cifar10(args.data)
    flags = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("kd_weight", args.kd_weight),
                               ("attention_weight", args.attention_weight)) if v is not None}
    for levels in args.levels:
        result = search_result(args, levels)
        before = evaluate_result(result, data=args.data, verbose=False)
        print(f"k{levels}_drop_before: {before['drop']:.2f} pt (teacher {before['teacher']:.2f} %)", flush=True)
        drops = []
        for seed in args.seeds:
            out = Path(args.out_dir) / f"bench_finetune_s{seed}"
            meta = train_baselines.train(train_baselines.stage_config(
                "student", config_path=str(result), seed=seed, out_dir=str(out), data=args.data, no_progress=True,
                **flags))
            path = checkpoint_path(out, "lenet5", "student", result.stem)
            after = evaluate_result(result, data=args.data, verbose=False, student=str(path))
            student = load_teacher(path, "lenet5", stage="student")
            tables = {n: torch.tensor(c["table"]) for n, c in read_result(result)["best"]["config"].items()}
            p_fq = predict(student, data.test_x, "cpu", tables={n: t.float() for n, t in tables.items()})
            p_int = integer_predict(data.test_x, export_int8(student),
                                    tables={n: t.to(torch.uint8).numpy() for n, t in tables.items()})
            agree = 100 * (p_int == p_fq).float().mean().item()
            drops.append(after["drop"])
            print(f"k{levels}_seed{seed}: drop after {after['drop']:.2f} pt | student {after['student']:.2f} % | "
                  f"val {meta['val_acc']:.2f} % | integer agreement {agree:.2f} %", flush=True)
        sd = statistics.stdev(drops) if len(drops) > 1 else 0.0
        print(f"k{levels}_drop_after: {statistics.mean(drops):.2f} ± {sd:.2f} pt over seeds {args.seeds}", flush=True)
    if args.no_timing:
        return
    qat_s, student_s = epoch_seconds(args, result, data)
    print(f"qat_epoch: {qat_s:.2f} s")
    print(f"finetune_epoch: {student_s:.2f} s")
    print(f"finetune_over_qat_epoch: {student_s / qat_s:.2f} x")


if __name__ == "__main__":
    main()
