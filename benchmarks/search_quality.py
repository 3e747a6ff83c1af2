"""RL versus random search, and the effect of the budget K, on the LeNet-5 teacher.

    python benchmarks/search_quality.py [--data PATH] [--out-dir outputs] [--episodes 1000]

For K = 16 it runs PPO and uniform random search for each seed and reports
the best search-split reward (mean and standard deviation over seeds) and
the test-set drop of PPO's best configuration; for each K in --levels it
reports PPO's test-set drop. One `name: value unit` line per figure, and a
markdown table at the end for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import search  # noqa: E402
from agents.evaluate import evaluate_result  # noqa: E402
from agents.result import result_path  # noqa: E402
from models.cli import run_main  # noqa: E402
from models.data import default_data_path  # noqa: E402


def run(args, algo: str, seed: int, levels: int) -> dict:
    name = f"bench_{algo}_k{levels}_s{seed}.json"
    rc = run_main(search.main, ["--algo", algo, "--seed", str(seed), "--levels", str(levels), "--episodes",
                                str(args.episodes), "--out-dir", args.out_dir, "--data", args.data,
                                "--result-file", name, "--no-progress"])
    if rc != 0:
        raise SystemExit(rc)
    path = result_path(args.out_dir, name)
    res = json.loads(path.read_text())
    test = evaluate_result(path, data=args.data, verbose=False)
    return {"reward": res["best"]["reward"], "search_drop": res["best"]["drop"], "att": res["best"]["att"],
            "test_drop": test["drop"], "teacher": test["teacher"], "student": test["student"],
            "seconds": res["seconds"]}


def mean_sd(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data_path())
    p.add_argument("--out-dir", default="outputs")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--levels", type=int, nargs="+", default=[4, 8, 16])
    args = p.parse_args()

    # Reference point: tables exact below tmax that only saturate above it (the
    # best any K can do under the tmax = p90 + 10 rule).
    import numpy as np
    from envs.problem import TapProblem
    prob = TapProblem(out_dir=args.out_dir, data=args.data)
    sat = prob.score({n: np.minimum(np.arange(256), prob.stats[n].tmax).astype(np.uint8) for n in prob.layers})
    print(f"saturation_only: reward {sat.reward:.3f} | search drop {sat.drop:.2f} pt | att {sat.att:.4f}", flush=True)
    del prob

    rows = {}
    for levels in sorted(set(args.levels) | {16}):
        for algo in (["ppo", "random"] if levels == 16 else ["ppo"]):
            for seed in args.seeds:
                r = run(args, algo, seed, levels)
                rows.setdefault((algo, levels), []).append(r)
                print(f"run_{algo}_k{levels}_seed{seed}: reward {r['reward']:.3f} | search drop "
                      f"{r['search_drop']:.2f} pt | att {r['att']:.4f} | test drop {r['test_drop']:.2f} pt | "
                      f"{r['seconds']:.0f} s", flush=True)

    print()
    print("| algo | K | best search reward (mean ± sd) | search drop (pt) | test drop (pt, mean ± sd) | student test acc | s/run |")
    print("|---|---|---|---|---|---|---|")
    for (algo, levels), rs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rw, rws = mean_sd([r["reward"] for r in rs])
        sd, _ = mean_sd([r["search_drop"] for r in rs])
        td, tds = mean_sd([r["test_drop"] for r in rs])
        st, _ = mean_sd([r["student"] for r in rs])
        secs, _ = mean_sd([r["seconds"] for r in rs])
        print(f"| {algo} | {levels} | {rw:.3f} ± {rws:.3f} | {sd:.2f} | {td:.2f} ± {tds:.2f} | {st:.2f} % | {secs:.0f} |")
        print(f"{algo}_k{levels}_best_reward_mean: {rw:.3f}")
        print(f"{algo}_k{levels}_test_drop_mean: {td:.2f} pt")
    if ("ppo", 16) in rows and ("random", 16) in rows:
        gap = (statistics.mean(r["reward"] for r in rows[("ppo", 16)])
               - statistics.mean(r["reward"] for r in rows[("random", 16)]))
        print(f"ppo_minus_random_reward_k16: {gap:.3f}")


if __name__ == "__main__":
    main()
