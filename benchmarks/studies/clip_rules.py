"""Which clip? The analytic tables under each tmax rule, and the search that moves the clip, over teachers.

    python benchmarks/studies/clip_rules.py --teachers outputs/teachers/seed0 outputs/teachers/seed1 outputs/teachers/seed2
                                    [--levels 16 8 4] [--rules guide mse p99 p99.9] [--search-levels 8 4]

For each teacher (a directory holding lenet5_qat_preconvert.pth, as
benchmarks/teachers.py leaves them) and each K, it builds the problem under
every rule and takes its analytic tables (with `mse`: the joint
least-squared-error clip and table), then, for `--search-levels`, runs PPO
with `--tmax-rule search` (1000 episodes, seed 0, the default anchor and
confirmation). Each configuration is scored on two image sets:

  held-out  20,000 training images that calibration, the search split and
            the selection images never touch: what a default is chosen on;
  test      the CIFAR-10 test set: what is reported, never chosen on.

Per K and rule it prints the drop (mean ± sd over teachers) on both sets
and the paired difference to `--baseline` (the guide's clip by default) on
test: mean over teachers and images, with a 95 % CI from the per-image
differences of all teachers pooled (images x teachers). Also the time the
joint analytic takes for the 4 layers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import time

import numpy as np

from agents import search
from agents.selection import Correctness
from envs.config import ProblemConfig
from envs.problem import CALIB_BATCH_SIZE, TapProblem
from models.data import load_cifar10
from quant.tap import TapParams

HELD_OUT = 20000


def held_out_indices(data, calib_batches: int = 10):
    """Training images after the calibration batches, before the selection images (models/data.py's fixed order)."""
    first = calib_batches * CALIB_BATCH_SIZE
    return data.calibration_indices(first + HELD_OUT)[first:]


def params_of(config: dict) -> dict[str, TapParams]:
    return {n: TapParams(**{k: v for k, v in c.items() if k in TapParams.__dataclass_fields__})
            for n, c in config.items()}


def paired_ci(diffs: list[np.ndarray]) -> tuple[float, float, float]:
    """Mean and 95 % normal CI, in points, of per-image differences pooled over teachers."""
    d = np.concatenate(diffs).astype(np.float64)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    return 100 * d.mean(), 100 * (d.mean() - half), 100 * (d.mean() + half)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teachers", nargs="+", required=True, help="out-dirs holding lenet5_qat_preconvert.pth")
    p.add_argument("--levels", type=int, nargs="+", default=[16, 8, 4])
    p.add_argument("--rules", nargs="+", default=["guide", "mse", "p99", "p99.9"])
    p.add_argument("--search-levels", type=int, nargs="*", default=[8, 4],
                   help="K at which PPO with --tmax-rule search also runs")
    p.add_argument("--baseline", default="guide")
    p.add_argument("--data", default=None)
    args = p.parse_args()

    data = load_cifar10(args.data)
    held = held_out_indices(data)
    # rows[(K, method)] = per teacher: (held-out correct, test correct)
    rows: dict[tuple[int, str], list] = {}
    teachers_correct: list[tuple[np.ndarray, np.ndarray]] = []
    for t in args.teachers:
        sets = None
        for levels in args.levels:
            for rule in args.rules:
                t0 = time.perf_counter()
                problem = TapProblem(ProblemConfig(levels=levels, tmax_rule=rule, out_dir=t, data=args.data))
                params = problem.analytic
                secs = time.perf_counter() - t0
                if sets is None:  # the teacher's records on both image sets, shared by every rule
                    sets = (Correctness(problem, data.train_x[held], data.train_y[held]),
                            Correctness(problem, data.test_x, data.test_y))
                    teachers_correct.append(tuple(s.correct(None) for s in sets))
                rows.setdefault((levels, rule), []).append(tuple(s.correct(params) for s in sets))
                if rule == "mse":
                    print(f"{t} K={levels}: mse clips {[q.tmax for q in params.values()]} (guide "
                          f"{[problem.stats[n].p90 + 10 for n in problem.layers]}), problem + joint analytic "
                          f"{secs:.2f} s", flush=True)
            if levels in args.search_levels:
                cfg = search.SearchConfig(problem=ProblemConfig(levels=levels, tmax_rule="search", out_dir=t,
                                                                data=args.data),
                                          no_progress=True, result_file=f"clip_rules/search_k{levels}.json")
                with contextlib.redirect_stdout(io.StringIO()):
                    res = search.run(cfg)
                for name, config in (("search (confirmed)", res["best"]["config"]),
                                     ("search (split's best)", {n: dict(q) for n, q in res["top"][0]["params"].items()})):
                    rows.setdefault((levels, name), []).append(tuple(s.correct(params_of(config)) for s in sets))
                print(f"{t} K={levels}: search rule chose {res['selection']['chosen']}, "
                      f"{res['seconds']:.1f} s", flush=True)

    print(f"\n| K | method | held-out drop | test drop | test vs {args.baseline} [95 % CI] | per teacher (test) |")
    print("|---|---|---|---|---|---|")
    for (levels, method), per in rows.items():
        held_drops = [100 * (tc[0].mean() - c[0].mean()) for tc, c in zip(teachers_correct, per)]
        test_drops = [100 * (tc[1].mean() - c[1].mean()) for tc, c in zip(teachers_correct, per)]
        base = rows[(levels, args.baseline)]
        # a positive difference: more test images wrong than with the baseline (a larger drop)
        mean, lo, hi = paired_ci([b[1].astype(np.int8) - c[1].astype(np.int8) for b, c in zip(base, per)])
        print(f"| {levels} | {method} | {np.mean(held_drops):.2f} ± {np.std(held_drops, ddof=1) if len(per) > 1 else 0:.2f} "
              f"| {np.mean(test_drops):.2f} ± {np.std(test_drops, ddof=1) if len(per) > 1 else 0:.2f} "
              f"| {mean:+.2f} [{lo:+.2f}, {hi:+.2f}] | {' '.join(f'{d:.2f}' for d in test_drops)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
