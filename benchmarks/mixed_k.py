"""Each layer's K under a bit budget: every method against uniform K and the knapsack, on the test set.

    python benchmarks/mixed_k.py --teachers outputs outputs/seed1 outputs/seed2 \
        [--budgets 2.5 3 3.5] [--json benchmarks/mixed_k.json] [--png docs/img/mixed_k.png]
    python benchmarks/mixed_k.py --model vgg16 --teachers outputs/vgg16 --methods uniform knapsack greedy ppo

For every teacher and budget, each method of agents/allocate.py chooses an
allocation on the search split (the validation images: held out of training,
never the test set); then, on the 10,000 test images, the chosen
allocation's drop, and per-image paired differences against uniform K and
against the knapsack, pooled over the teachers (95 % normal CI, in points;
< 0: the method drops less). Also: whether PPO found the exhaustive
optimum, each method's wall time, and one picture of test drop against
average bits (mean over teachers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "studies"))
from clip_rules import paired_ci  # noqa: E402  (the pooled per-image CI of the clip study)
from networks import commit, cpu_name  # noqa: E402  (a sibling benchmark)

from agents import allocate  # noqa: E402
from agents.selection import Correctness  # noqa: E402
from envs.config import ProblemConfig  # noqa: E402
from envs.mixed import MixedProblem  # noqa: E402
from envs.problem import TapProblem  # noqa: E402
from models.data import load_cifar10  # noqa: E402
from quant.budget import average_bits  # noqa: E402

METHODS = ("uniform", "knapsack", "greedy", "random", "tpe", "ppo", "exhaustive")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teachers", nargs="+", required=True, help="out-dirs holding <model>_qat_preconvert.pth")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--budgets", type=float, nargs="+", default=[2.5, 3.0, 3.5])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--episodes", type=int, default=1000, help="random, tpe, ppo")
    p.add_argument("--search-size", type=int, default=5000)
    p.add_argument("--data", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--png", default=None)
    args = p.parse_args()

    data = load_cifar10(args.data)
    rows: dict = {}  # (budget, method) -> per teacher: {"correct", "levels", "bits", "seconds", "drop"}
    teacher_correct, setup = [], []
    for tdir in args.teachers:
        t0 = time.perf_counter()
        problem = TapProblem(ProblemConfig(model=args.model, out_dir=tdir, search_size=args.search_size,
                                           data=args.data))
        mixed = MixedProblem(problem)
        setup.append(time.perf_counter() - t0)
        test = Correctness(problem, data.test_x, data.test_y)
        base = test.correct(None)
        teacher_correct.append(base)
        print(f"[mixed_k] {tdir}: teacher test {100 * base.mean():.2f} % | setup {setup[-1]:.1f}s | "
              f"activations {mixed.elements}", flush=True)
        for budget in args.budgets:
            for method in args.methods:
                cfg = allocate.AllocateConfig(algo=method, episodes=args.episodes, no_progress=True)
                mixed.calls = 0
                problem.clear_memo()  # each method's time from a cold scorer
                t1 = time.perf_counter()
                best, _ = allocate.search(cfg, mixed, budget)
                secs = time.perf_counter() - t1
                hits = test.correct(mixed.config(best["levels"]))
                drop = 100 * (base.mean() - hits.mean())
                rows.setdefault((budget, method), []).append(
                    {"correct": hits, "levels": best["levels"], "bits": average_bits(mixed.elements, best["levels"]),
                     "seconds": secs, "drop": drop, "search_drop": best["drop"], "calls": mixed.calls})
                print(f"[mixed_k]   B={budget:g} {method:<10} {','.join(map(str, best['levels'].values())):<14} "
                      f"{rows[(budget, method)][-1]['bits']:.2f} bits | search drop {best['drop']:5.2f} | "
                      f"test drop {drop:5.2f} | {secs:6.1f}s | {mixed.calls} calls", flush=True)

    records = []
    print("\n| budget | method | allocations (per teacher) | avg bits | test drop, mean ± sd | vs uniform | "
          "vs knapsack | time |")
    print("|---|---|---|---|---|---|---|---|")
    for (budget, method), runs in rows.items():
        drops = [r["drop"] for r in runs]
        rec = {"budget": budget, "method": method, "levels": [r["levels"] for r in runs],
               "bits": [round(r["bits"], 4) for r in runs], "test_drop": [round(d, 3) for d in drops],
               "search_drop": [round(r["search_drop"], 3) for r in runs],
               "seconds": [round(r["seconds"], 2) for r in runs], "scorer_calls": [r["calls"] for r in runs]}
        cells = []
        for ref in ("uniform", "knapsack"):
            if (budget, ref) in rows and ref != method:
                # drop(method) - drop(ref) per image: ref's hit minus the method's
                m, lo, hi = paired_ci([b["correct"].astype(np.int8) - r["correct"].astype(np.int8)
                                       for r, b in zip(runs, rows[(budget, ref)])])
                rec[f"vs_{ref}"] = [round(m, 3), round(lo, 3), round(hi, 3)]
                cells.append(f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]")
            else:
                cells.append("-")
        if method == "ppo" and (budget, "exhaustive") in rows:
            rec["found_exhaustive"] = [r["levels"] == e["levels"] for r, e in zip(runs, rows[(budget, "exhaustive")])]
        records.append(rec)
        allocs = " ; ".join(",".join(map(str, r["levels"].values())) for r in runs)
        print(f"| {budget:g} | {method} | {allocs} | {np.mean([r['bits'] for r in runs]):.2f} | "
              f"{np.mean(drops):.2f} ± {np.std(drops, ddof=1) if len(drops) > 1 else 0:.2f} | {cells[0]} | "
              f"{cells[1]} | {np.mean([r['seconds'] for r in runs]):.1f} s |")
    for rec in records:
        if "found_exhaustive" in rec:
            print(f"PPO found the exhaustive optimum at {rec['budget']:g} bits: {rec['found_exhaustive']}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "teachers": args.teachers, "teacher_test_acc": [round(100 * c.mean(), 2) for c in teacher_correct],
            "episodes": args.episodes, "search_size": args.search_size, "setup_seconds": [round(s, 1) for s in setup],
            "cpu": cpu_name(), "commit": commit(), "rows": records}, indent=1))
    if args.png:
        plot(records, args.png, args.model)
    return 0


def plot(records: list[dict], png: str, model: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    methods = list(dict.fromkeys(r["method"] for r in records))
    for i, method in enumerate(methods):
        pts = sorted((np.mean(r["bits"]), np.mean(r["test_drop"])) for r in records if r["method"] == method)
        # Methods often choose the same allocation: hollow markers, each smaller than the one before, so
        # every method stays visible where they coincide.
        ax.plot(*zip(*pts), "--" if method == "uniform" else "-", marker="osD^vPX*"[i % 8], markersize=13 - 1.5 * i,
                fillstyle="none", markeredgewidth=1.5, label=method, alpha=0.85)
    ax.set_xlabel("average bits per stored activation")
    ax.set_ylabel("test drop (pt), mean over teachers")
    ax.set_title(f"{model}: each layer's K under a bit budget")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
