"""Does the search beat the baselines on the test set? The evidence for issue #10, one command.

    python benchmarks/search_quality.py        # sweeps/search_quality.yaml + search_quality_guide.yaml
    python benchmarks/search_quality.py sweeps/other.yaml --out-dir outputs
    python benchmarks/search_quality.py sweeps/deep_search.yaml --model vgg16 --out-dir outputs/vgg16

Runs every trial of the sweep files one after another with agents.search
(so each wall time is one search alone on the machine; a finished result is
reused, so rerunning after Ctrl-C loses nothing), then, on the test set:

  * per (K, algo): the chosen configuration's test drop, mean and sd over
    seeds, and the search's wall time;
  * the paired difference to `analytic` (algo minus analytic, in points;
    < 0 = better than analytic), with a 95 % bootstrap interval that
    resamples both the seeds and the 10,000 test images (same images for
    both);
  * generalisation: per search, Spearman's rank correlation between the
    search loss (-reward) and the test drop over its 20 best distinct
    configurations, and the search-to-test gap of the chosen one;
  * a PNG per K of the best-so-far test drop and search reward against
    episodes, one curve per algo (mean over seeds).

Prints a markdown table for benchmarks/README.md and writes the PNG to
--png. The test set is only measured here, never used to choose anything.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


from agents import search
from agents.compare import plot_curves
from quant.result import read_result
from agents.selection import Correctness
from agents.sweep import SweepSpec, parse_search, trial_result_file
from envs.problem import TapProblem
from common.cli import run_main
from models.data import load_cifar10
from common.errors import UserError
from quant.tap import TapParams

BOOTSTRAP = 4000


class TestSet(Correctness):
    """The student's per-image correctness on the test set."""

    def __init__(self, problem: TapProblem, data):
        super().__init__(problem, data.test_x, data.test_y)
        self.teacher = self.correct(None)

    def of_params(self, params: dict) -> np.ndarray:
        return self.correct({n: TapParams(**p) for n, p in params.items()})

    def drop(self, correct: np.ndarray) -> float:
        return 100.0 * (self.teacher.mean() - correct.mean())


def spearman(a, b) -> float:
    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for x in np.unique(v):  # average ranks over ties
            r[v == x] = r[v == x].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def paired_ci(algo_correct: np.ndarray, base_correct: np.ndarray, rng) -> tuple[float, float, float]:
    """Mean over seeds of (drop_algo - drop_base) in points, with a 95 % bootstrap over seeds and images.

    algo_correct: (seeds, images) booleans; base_correct: (images,) or (seeds, images).
    """
    a = algo_correct.astype(np.float64)
    b = np.broadcast_to(base_correct, a.shape).astype(np.float64)
    diff = 100.0 * (b - a)  # per seed and image: base correct, algo not -> +1 (algo worse)
    n_seeds, n = diff.shape
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=BOOTSTRAP).T / n  # (images, reps)
    per_seed = diff @ weights  # (seeds, reps)
    pick = rng.integers(0, n_seeds, size=(BOOTSTRAP, n_seeds))
    reps = per_seed[pick, np.arange(BOOTSTRAP)[:, None]].mean(axis=1)
    return float(diff.mean()), float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))


def best_so_far_test(res: dict, test: TestSet, episodes: int) -> np.ndarray:
    """The test drop of the best configuration so far, at every episode."""
    curve = np.full(episodes, np.nan)
    for imp in res["improvements"]:
        curve[imp["episode"] - 1] = test.drop(test.of_params(imp["params"]))
    last = np.nan
    for i in range(episodes):  # carry each best forward
        last = curve[i] if not np.isnan(curve[i]) else last
        curve[i] = last
    return curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweeps = Path(__file__).resolve().parents[1] / "sweeps"
    p.add_argument("sweep_files", nargs="*", default=[str(sweeps / "search_quality.yaml"),
                                                      str(sweeps / "search_quality_guide.yaml")])
    p.add_argument("--data", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out-dir", default="outputs")
    p.add_argument("--model", default=None, help="the teacher's model, when not lenet5 (its folder: --out-dir)")
    p.add_argument("--png", default="benchmarks/img/search_quality.png")
    p.add_argument("--json", default=None, help="also write every number here")
    args = p.parse_args(argv)
    common = {"data": args.data, "cache_dir": args.cache_dir, "out_dir": args.out_dir, "device": "cpu",
              "model": args.model}
    specs = [SweepSpec(f, common) for f in args.sweep_files]  # every file checked before any search
    if any(s.sample for s in specs):
        raise UserError("the benchmark runs grids only; drop the 'sample' sections")

    runs = []
    for spec in specs:
        for i, point in enumerate(spec.points(), 1):
            cfg = parse_search({**spec.options, **point, "result_file": trial_result_file(common, spec.name, point),
                                "no_progress": True}, common, "trial")
            try:
                done = read_result(cfg.result_path).get("complete", False)
            except UserError:
                done = False
            if not done:
                print(f"[{spec.name} {i}/{spec.n_trials}] {point}", flush=True)
                search.run(cfg)
            runs.append((point, cfg))

    data = load_cifar10(args.data, args.cache_dir)
    rng = np.random.default_rng(0)
    table, curves_test, curves_search, numbers = [], {}, {}, []
    for levels in sorted({cfg.problem.levels for _, cfg in runs}):
        at_k = [(pt, cfg) for pt, cfg in runs if cfg.problem.levels == levels]
        test = TestSet(TapProblem(at_k[0][1].problem), data)
        by_algo: dict[str, list] = {}
        for pt, cfg in at_k:
            res = json.loads(cfg.result_path.read_text())
            chosen = test.of_params({n: {k: v for k, v in c.items() if k != "table"}
                                     for n, c in res["best"]["config"].items()})
            top_test = [test.drop(test.of_params(t["params"])) for t in res["top"]]
            row = {"levels": levels, "algo": cfg.algo, "seed": cfg.seed, "anchor": cfg.problem.anchor,
                   "test_drop": test.drop(chosen), "search_drop": res["best"]["drop"],
                   "search_reward": res["best"]["reward"], "seconds": res["seconds"],
                   "rho_top20": spearman([-t["reward"] for t in res["top"]], top_test),
                   "correct": chosen}
            row["gap"] = row["test_drop"] - row["search_drop"]
            label = cfg.algo if cfg.problem.anchor == "analytic" or cfg.algo in ("analytic", "greedy") \
                else f"{cfg.algo} (anchor none)"
            by_algo.setdefault(label, []).append(row)
            curves_test.setdefault(f"K = {levels}: test drop", {}).setdefault(label, []).append(
                best_so_far_test(res, test, res["episodes"]))
            curves_search.setdefault(f"K = {levels}: search reward", {}).setdefault(label, []).append(
                np.maximum.accumulate(res["reward_history"]))
        base = np.stack([r["correct"] for r in by_algo["analytic"]])[0]
        for label, rows in by_algo.items():
            d = np.array([r["test_drop"] for r in rows])
            diff, lo, hi = paired_ci(np.stack([r["correct"] for r in rows]), base, rng)
            rho = np.array([r["rho_top20"] for r in rows], dtype=float)
            entry = {"levels": levels, "algo": label, "seeds": len(rows), "test_drop_mean": float(d.mean()),
                     "test_drop_sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                     "vs_analytic": diff, "ci_low": lo, "ci_high": hi,
                     "rho_top20": float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"),
                     "gap": float(np.mean([r["gap"] for r in rows])),
                     "search_drop": float(np.mean([r["search_drop"] for r in rows])),
                     "seconds": float(np.mean([r["seconds"] for r in rows]))}
            table.append(entry)
            numbers.extend({k: v for k, v in r.items() if k != "correct"} for r in rows)

    print("\n| K | algo | seeds | test drop (pt) | vs analytic [95 % CI] | rho top-20 | search drop | gap | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for e in table:
        print(f"| {e['levels']} | {e['algo']} | {e['seeds']} | {e['test_drop_mean']:.2f} ± {e['test_drop_sd']:.2f} | "
              f"{e['vs_analytic']:+.2f} [{e['ci_low']:+.2f}, {e['ci_high']:+.2f}] | {e['rho_top20']:.2f} | "
              f"{e['search_drop']:.2f} | {e['gap']:+.2f} | {e['seconds']:.1f} s |")
    png = Path(args.png)
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_curves({**curves_test, **curves_search}, png, "best so far", columns=len(curves_test))
    print(f"\nwrote {png}")
    if args.json:
        Path(args.json).write_text(json.dumps({"table": table, "runs": numbers}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
