"""Teachers over seeds: float and QAT test accuracy (mean ± sd), training time, and each teacher's K = 16 drop.

    python benchmarks/teachers.py [--seeds 0 1 2] [--out-dir outputs/teachers] [--data PATH]
                                  [--float-flags "--epochs 30"] [--no-search]

For each seed it trains the float teacher and the QAT teacher with
train_baselines.py's defaults (the recipe; `--float-flags` / `--qat-flags`
add flags, e.g. the guide's `--epochs 30`) into <out-dir>/seed<k>/, reusing
a complete checkpoint, then runs the default search (`agents.search`, K =
16, seed 0) on it and evaluates it on the test set. Later benchmarks take
these directories as their teachers (`--teachers outputs/teachers/seed*`).
Run one at a time on an idle machine: the times are wall-clock.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import statistics
from pathlib import Path

import train_baselines
from agents import search
from agents.evaluate import evaluate_result
from envs.config import ProblemConfig
from models.checkpoint import checkpoint_path, load_checkpoint
from models.data import load_cifar10
from models.metrics import predict
from quant.integer import export_int8, integer_predict
from quant.qat import load_teacher


def train_stage(stage: str, out: Path, seed: int, data, flags: str) -> dict:
    """Trains (or reuses) one stage; returns its checkpoint's metadata."""
    path = checkpoint_path(out, "lenet5", stage)
    if path.is_file():
        meta = load_checkpoint(path, model="lenet5", stage=stage)["meta"]
        if meta.get("complete"):
            return meta
    argv = [stage, "--seed", str(seed), "--out-dir", str(out), "--no-progress", *shlex.split(flags)]
    if data:
        argv += ["--data", data]
    args = train_baselines.parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()):
        return train_baselines.train(args)


def integer_agreement(out: Path, data) -> float:
    """Share of test images on which the integer-only teacher predicts what the fake-quant teacher does."""
    ds = load_cifar10(data)
    teacher = load_teacher(checkpoint_path(out, "lenet5", "qat"), "lenet5")
    fake = predict(teacher, ds.test_x, "cpu")
    integer = integer_predict(ds.test_x, export_int8(teacher))
    return 100.0 * float((fake == integer).float().mean())


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out-dir", default="outputs/teachers")
    p.add_argument("--data", default=None)
    p.add_argument("--float-flags", default="", help="extra train_baselines.py float flags")
    p.add_argument("--qat-flags", default="", help="extra train_baselines.py qat flags")
    p.add_argument("--no-search", action="store_true", help="teachers only, no K = 16 search")
    args = p.parse_args()

    rows = []
    for seed in args.seeds:
        out = Path(args.out_dir) / f"seed{seed}"
        fl = train_stage("float", out, seed, args.data, args.float_flags)
        q = train_stage("qat", out, seed, args.data, args.qat_flags)
        row = {"seed": seed, "float": fl["test_acc"], "val": fl["val_acc"], "qat": q["test_acc"],
               "float_s": sum(h["seconds"] for h in fl["history"]), "qat_s": sum(h["seconds"] for h in q["history"]),
               "agree": integer_agreement(out, args.data)}
        if not args.no_search:
            cfg = search.SearchConfig(problem=ProblemConfig(out_dir=str(out), data=args.data), no_progress=True,
                                      result_file="teachers_k16.json")
            with contextlib.redirect_stdout(io.StringIO()):
                search.run(cfg)
                ev = evaluate_result(cfg.result_path, data=args.data, verbose=False)
            row["drop16"] = ev["drop"]
        rows.append(row)
        print(f"seed {seed}: float {row['float']:.2f} % (val {row['val']:.2f}, {row['float_s']:.0f} s) | "
              f"QAT {row['qat']:.2f} % ({row['qat_s']:.0f} s) | integer-only agreement {row['agree']:.2f} %"
              + (f" | K=16 default-search drop {row['drop16']:.2f} pt" if "drop16" in row else ""), flush=True)
    print(f"float test: {mean_sd([r['float'] for r in rows])} %  (val {mean_sd([r['val'] for r in rows])})")
    print(f"QAT test: {mean_sd([r['qat'] for r in rows])} %  (QAT - float {mean_sd([r['qat'] - r['float'] for r in rows])} pt)")
    print(f"float training: {mean_sd([r['float_s'] for r in rows])} s; QAT: {mean_sd([r['qat_s'] for r in rows])} s")
    if not args.no_search:
        print(f"K=16 default-search test drop: {mean_sd([r['drop16'] for r in rows])} pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
