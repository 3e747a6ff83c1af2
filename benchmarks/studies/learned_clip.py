"""Fine-tuning with a learned clip: does letting the student move each layer's tmax help?

    python benchmarks/studies/learned_clip.py --teachers outputs/teachers/seed0 outputs/teachers/seed1 \
        outputs/teachers/seed2 [--levels 16 8 4] [--clip-lrs 0 0.01 0.1 1]

For each teacher (a directory holding lenet5_qat_preconvert.pth) and each K
it writes the analytic result with the default (mse) clip, then fine-tunes
a student from it with `train_baselines.py student`'s defaults (3 epochs)
at each `--clip-lr` (0: the searched clips stay, today's student). What it
prints per K and clip lr:

  val       the student's accuracy on the 5,000-image validation split after
            its last epoch (mean over teachers) and the paired difference to
            clip lr 0 (pooled per-image, 95 % CI; positive = more images
            right): what a default is chosen on;
  test      the test drop against the INT8 teacher (mean ± sd over teachers)
            and the paired difference to clip lr 0 (pooled per-image
            differences, 95 % CI; positive = a larger drop): reported only;
  clips     the learned tmax per layer (first teacher).

Each row also records the integer-only reference's agreement with the
student's predictions on the test set (quant/integer.py with its tables).

Rows go to <first teacher>/learned_clip/rows.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from agents import search
from agents.evaluate import layer_configs
from clip_rules import paired_ci  # a sibling study: this directory is on sys.path
from envs.config import ProblemConfig
from models.checkpoint import load_checkpoint, stage_state
from models.data import load_cifar10
from models.metrics import predict
from quant.integer import export_int8, integer_predict
from quant.qat import load_teacher
import train_baselines


def predictions(net, x, tables=None) -> torch.Tensor:
    kw = {"tables": {n: torch.tensor(t).float() for n, t in tables.items()}} if tables else {}
    return predict(net, x, "cpu", **kw)


def correct(net, x, y, tables=None) -> np.ndarray:
    return (predictions(net, x, tables) == y).numpy()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teachers", nargs="+", required=True, help="out-dirs holding lenet5_qat_preconvert.pth")
    p.add_argument("--levels", type=int, nargs="+", default=[16, 8, 4])
    p.add_argument("--clip-lrs", type=float, nargs="+", default=[0.0, 0.01, 0.1, 1.0])
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the student's)")
    p.add_argument("--data", default=None)
    args = p.parse_args()

    data = load_cifar10(args.data)
    val_idx = data.split()[1]
    val_x, val_y = data.train_x[val_idx], data.train_y[val_idx]
    rows, on_test, on_val = [], {}, {}
    tag = f"_epochs{args.epochs}" if args.epochs else ""
    for t in args.teachers:
        teacher = load_teacher(Path(t) / "lenet5_qat_preconvert.pth", "lenet5")
        t_correct = correct(teacher, data.test_x, data.test_y)
        for levels in args.levels:
            cfg = search.SearchConfig(algo="analytic", no_progress=True, result_file=f"learned_clip/k{levels}.json",
                                      problem=ProblemConfig(levels=levels, out_dir=t, data=args.data))
            with contextlib.redirect_stdout(io.StringIO()):
                res = search.completed(cfg) or search.run(cfg)
            for clip_lr in args.clip_lrs:
                out_dir = Path(t) / "learned_clip" / (f"k{levels}_cliplr{clip_lr:g}" + tag)
                extra = {"epochs": args.epochs} if args.epochs else {}
                stage = train_baselines.stage_config("student", config_path=str(cfg.result_path), out_dir=str(out_dir),
                                                   data=args.data, clip_lr=clip_lr, no_progress=True, **extra)
                path = out_dir / f"lenet5_student_k{levels}.pth"
                state = stage_state(path, "lenet5", "student", stage.options())
                if state == "complete":  # a rerun reuses finished students, and resumes an interrupted one
                    meta = load_checkpoint(path)["meta"]
                else:
                    stage.resume = state == "partial"
                    with contextlib.redirect_stdout(io.StringIO()):
                        meta = train_baselines.train(stage)
                student = load_teacher(path, "lenet5", stage="student")
                configs = layer_configs(res, student)
                tables = {n: x["table"] for n, x in configs.items()}
                pred = predictions(student, data.test_x, tables)
                c = on_test[t, levels, clip_lr] = (pred == data.test_y).numpy()
                integer = integer_predict(data.test_x, export_int8(student),
                                          tables={n: np.array(x, np.uint8) for n, x in tables.items()})
                on_val[t, levels, clip_lr] = correct(student, val_x, val_y, tables)
                rows.append({"teacher": t, "levels": levels, "clip_lr": clip_lr, "val_acc": meta["val_acc"],
                             "test_drop": 100 * (t_correct.mean() - c.mean()),
                             "integer_agreement": 100 * (integer == pred).float().mean().item(),
                             "clips": {n: x["tmax"] for n, x in configs.items()},
                             "searched_clips": {n: x["tmax"] for n, x in res["best"]["config"].items()}})
                print(json.dumps(rows[-1]), flush=True)
    out = Path(args.teachers[0]) / "learned_clip" / f"rows{tag}.json"
    out.write_text(json.dumps(rows, indent=1))

    def vs_first(sets, levels, clip_lr):  # pooled over teachers; positive = clip_lr gets more images right
        return paired_ci([sets[t, levels, clip_lr].astype(np.int8) - sets[t, levels, args.clip_lrs[0]].astype(np.int8)
                          for t in args.teachers])

    print("\n| K | clip lr | val acc (mean) | val vs clip lr 0 [95 % CI] | test drop | test drop vs clip lr 0 "
          "[95 % CI] | clips (first teacher) |")
    print("|---|---|---|---|---|---|---|")
    for levels in args.levels:
        for clip_lr in args.clip_lrs:
            mine = [r for r in rows if r["levels"] == levels and r["clip_lr"] == clip_lr]
            drops = [r["test_drop"] for r in mine]
            v, vlo, vhi = vs_first(on_val, levels, clip_lr)
            mean, lo, hi = (-x for x in vs_first(on_test, levels, clip_lr))  # as a drop: positive = worse
            sd = np.std(drops, ddof=1) if len(drops) > 1 else 0.0
            base = clip_lr == args.clip_lrs[0]
            print(f"| {levels} | {clip_lr:g} | {np.mean([r['val_acc'] for r in mine]):.2f} "
                  f"| {'-' if base else f'{v:+.2f} [{vlo:+.2f}, {vhi:+.2f}]'} | {np.mean(drops):.2f} ± {sd:.2f} "
                  f"| {'-' if base else f'{mean:+.2f} [{hi:+.2f}, {lo:+.2f}]'} "
                  f"| {' '.join(str(v) for v in mine[0]['clips'].values())} |")
    for clip_lr in args.clip_lrs[1:]:
        v, vlo, vhi = paired_ci([on_val[t, k, clip_lr].astype(np.int8) - on_val[t, k, args.clip_lrs[0]].astype(np.int8)
                                 for t in args.teachers for k in args.levels])
        print(f"clip lr {clip_lr:g} against {args.clip_lrs[0]:g}, validation, every K and teacher pooled: "
              f"{v:+.2f} [{vlo:+.2f}, {vhi:+.2f}] pt")
    print(f"integer-only = fake-quant predictions: {min(r['integer_agreement'] for r in rows):.2f} % of the test "
          "set at least, over every student")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
