"""Can more search images make an accuracy-in-the-loop clip choice hold? The search rule on 5,000 vs more images.

    python benchmarks/studies/reward_images.py --teachers outputs/teachers/seed0 outputs/teachers/seed1 outputs/teachers/seed2
                                       [--levels 8] [--sizes 5000 23000] [--algo ppo] [--episodes 1000]

For each teacher and search-split size, `--algo` searches with
`--tmax-rule search` (the clip in the action) and keeps the search split's
best (`--select-size 0`: no confirmation, so the choice is the reward's
alone). Beyond 5,000 the split adds training images after the calibration
batches (envs/problem.py). The choice and the mse tables (the default) are
then scored on held-out images, the last 20,000 training images (which
neither search split reaches), and on the test set, paired per image:
a positive gain means the searched clip beat the mse tables. The search's
wall time is the cost of the bigger split.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math

import numpy as np

from agents import search
from agents.selection import Correctness
from envs.config import ProblemConfig
from envs.problem import TapProblem
from models.data import load_cifar10
from quant.tap import TapParams, build_table

HELD_OUT = 20000


def gain_ci(diffs: list[np.ndarray]) -> str:
    d = np.concatenate(diffs).astype(np.float64)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    return f"{100 * d.mean():+.2f} [{100 * (d.mean() - half):+.2f}, {100 * (d.mean() + half):+.2f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teachers", nargs="+", required=True)
    p.add_argument("--levels", type=int, default=8)
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 23000])
    p.add_argument("--algo", default="ppo")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--data", default=None)
    args = p.parse_args()
    data = load_cifar10(args.data)
    held = data.selection_indices(HELD_OUT)
    rows = {size: {"held": [], "test": [], "split_gain": [], "seconds": []} for size in args.sizes}
    for t in args.teachers:
        base = TapProblem(ProblemConfig(levels=args.levels, out_dir=t, data=args.data))  # mse: the default
        sets = [Correctness(base, data.train_x[held], data.train_y[held]), Correctness(base, data.test_x, data.test_y)]
        mse = [s.correct(base.analytic).astype(np.int8) for s in sets]
        for size in args.sizes:
            cfg = search.SearchConfig(problem=ProblemConfig(levels=args.levels, tmax_rule="search", search_size=size,
                                                            out_dir=t, data=args.data),
                                      algo=args.algo, episodes=args.episodes, select_size=0, no_progress=True,
                                      result_file=f"reward_images/{args.algo}_k{args.levels}_n{size}.json")
            with contextlib.redirect_stdout(io.StringIO()):
                res = search.run(cfg)
            params = {n: TapParams(**{k: v for k, v in c.items() if k in TapParams.__dataclass_fields__})
                      for n, c in res["best"]["config"].items()}
            chosen = [s.correct(params).astype(np.int8) for s in sets]
            rows[size]["held"].append(chosen[0] - mse[0])
            rows[size]["test"].append(chosen[1] - mse[1])
            split = TapProblem(cfg.problem)  # the mse tables' drop on the same search split
            mse_drop = split.score({n: build_table(q) for n, q in split.analytic.items()}).drop
            rows[size]["split_gain"].append(mse_drop - res["best"]["drop"])
            rows[size]["seconds"].append(res["seconds"])
            print(f"{t} n={size}: clips {[q.tmax for q in params.values()]} (mse {[q.tmax for q in base.analytic.values()]}), "
                  f"split gain {rows[size]['split_gain'][-1]:+.2f} pt, held-out gain {100 * rows[size]['held'][-1].mean():+.2f}, "
                  f"test gain {100 * rows[size]['test'][-1].mean():+.2f}, {res['seconds']:.0f} s", flush=True)
    print("\n| search-split images | split gain over mse | held-out gain [95 % CI] | test gain [95 % CI] | search time |")
    print("|---|---|---|---|---|")
    for size, r in rows.items():
        print(f"| {size} | {np.mean(r['split_gain']):+.2f} | {gain_ci(r['held'])} | {gain_ci(r['test'])} | "
              f"{np.mean(r['seconds']):.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
