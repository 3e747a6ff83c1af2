"""Does a search's choice hold on new images? Measured without the test set.

    python benchmarks/studies/heldout_choice.py [--levels 8] [--seeds 3] [--algo ppo]

Held-out images: 20,000 training images that neither the calibration, the
search split (validation) nor the search's selection images touch
(models/data.py's fixed order: calibration first, selection last, these in
between). For each variant of the search it prints the held-out drop of
the chosen configuration and of the search split's best, against the
analytic tables' held-out drop. This is how the default search was chosen
(benchmarks/README.md); the test set plays no part.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import numpy as np


from agents import search
from agents.selection import Correctness
from envs.config import ProblemConfig
from envs.problem import CALIB_BATCH_SIZE, TapProblem
from models.data import load_cifar10
from quant.tap import TapParams

HELD_OUT = 20000
VARIANTS = {  # name: (ProblemConfig overrides, SearchConfig overrides)
    "guide (anchor none)": ({"anchor": "none"}, {}),
    "anchored, search split's best": ({}, {"select_size": 0}),
    "anchored + KL reward, search split's best": ({"attention_weight": 0.0, "kl_weight": 100.0}, {"select_size": 0}),
    "default (anchored, confirmed)": ({}, {}),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--algo", default="ppo")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--out-dir", default="outputs")
    args = p.parse_args()

    data = load_cifar10()
    first = 10 * CALIB_BATCH_SIZE
    idx = data._train_order()[first:first + HELD_OUT]
    problem = TapProblem(ProblemConfig(levels=args.levels, out_dir=args.out_dir))
    held_out = Correctness(problem, data.train_x[idx], data.train_y[idx])

    def accuracy(params) -> float:
        return 100.0 * float(held_out.correct(params).mean())

    teacher = accuracy(None)
    print(f"K={args.levels}: analytic tables, held-out drop {teacher - accuracy(problem.analytic):.2f} pt", flush=True)
    for name, (prob_kw, search_kw) in VARIANTS.items():
        chosen, best = [], []
        for seed in range(args.seeds):
            cfg = search.SearchConfig(problem=ProblemConfig(levels=args.levels, out_dir=args.out_dir, **prob_kw),
                                      algo=args.algo, episodes=args.episodes, seed=seed, no_progress=True,
                                      result_file=f"heldout_choice/k{args.levels}_{len(chosen)}_{seed}.json",
                                      **search_kw)
            with contextlib.redirect_stdout(io.StringIO()):
                res = search.run(cfg)
            params = {n: TapParams(**{k: v for k, v in c.items() if k != "table"})
                      for n, c in res["best"]["config"].items()}
            chosen.append(teacher - accuracy(params))
            best.append(teacher - accuracy({n: TapParams(**q) for n, q in res["top"][0]["params"].items()}))
        print(f"{name:44s} held-out drop: chosen {np.mean(chosen):.2f} ({' '.join(f'{v:.2f}' for v in chosen)}) | "
              f"search split's best {np.mean(best):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
