"""Two recipes' teachers side by side, seed by seed: accuracy and the analytic tables' drop, paired per image.

    python benchmarks/studies/teacher_pairs.py --base outputs outputs/seed1 outputs/seed2 \
        --new outputs/kd/seed0 outputs/kd/seed1 outputs/kd/seed2 [--levels 16 8 4] [--json F]

`--base` and `--new` name LeNet-5 teacher folders (float and QAT checkpoints,
train_baselines.py), paired in order (the same seed). On the 10,000 test
images (nothing is chosen here: both recipes are fixed before), for each
recipe: the float and QAT accuracy (mean ± sd over seeds) and, at each K,
the test drop of the analytic `mse` tables (the default search's result
whenever its confirmation keeps them). Then new - base, per image and
pooled over the seed pairs (95 % normal CI, in points): for accuracy, the
new teacher's hit minus the base teacher's; for the drop, the new pair's
(teacher hit - student hit) minus the base pair's. A CI that straddles 0 is
no difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_rules import paired_ci  # noqa: E402

from agents.selection import Correctness  # noqa: E402
from envs.config import ProblemConfig  # noqa: E402
from envs.mixed import MixedProblem  # noqa: E402
from envs.problem import TapProblem  # noqa: E402
from models.checkpoint import checkpoint_path, load_float_model  # noqa: E402
from models.data import load_cifar10  # noqa: E402
from models.metrics import predict  # noqa: E402


def measure(folder: str, levels: list[int], data, data_arg) -> dict:
    """Per-image hits of the float net, the QAT teacher and its analytic students at each K."""
    float_model = load_float_model(checkpoint_path(folder, "lenet5", "float"), "lenet5")
    out = {"float": (predict(float_model, data.test_x, "cpu") == data.test_y).numpy()}
    # One problem and one recording of the test set; MixedProblem solves each layer's mse table at every K.
    problem = TapProblem(ProblemConfig(out_dir=folder, tmax_rule="mse", data=data_arg, search_size=256))
    tables = MixedProblem(problem, tuple(sorted(set(levels))))
    test = Correctness(problem, data.test_x, data.test_y)
    out["qat"] = test.correct(None)
    for k in levels:
        out[k] = test.correct(tables.config({n: k for n in tables.layers}))
    return out


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", nargs="+", required=True, help="teacher folders of the reference recipe")
    p.add_argument("--new", nargs="+", required=True, help="teacher folders of the new recipe, the same seeds")
    p.add_argument("--levels", type=int, nargs="+", default=[16, 8, 4])
    p.add_argument("--data", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if len(args.base) != len(args.new):
        p.error("--base and --new pair folders by seed: give as many of each")

    data = load_cifar10(args.data)
    runs = {side: [measure(f, args.levels, data, args.data) for f in getattr(args, side)] for side in ("base", "new")}
    rows = []
    print("| | base: mean ± sd | new: mean ± sd | new - base, 95 % CI (pt) |\n|---|---|---|---|")
    for key in ("float", "qat"):
        acc = {s: [100 * r[key].mean() for r in runs[s]] for s in runs}
        ci = paired_ci([n[key].astype(np.int8) - b[key].astype(np.int8) for b, n in zip(runs["base"], runs["new"])])
        rows.append({"what": f"{key} test acc", **{s: [round(a, 2) for a in acc[s]] for s in acc},
                     "ci": [round(c, 3) for c in ci]})
    for k in args.levels:
        drop = {s: [100 * (r["qat"].mean() - r[k].mean()) for r in runs[s]] for s in runs}
        ci = paired_ci([(n["qat"].astype(np.int8) - n[k]) - (b["qat"].astype(np.int8) - b[k])
                        for b, n in zip(runs["base"], runs["new"])])
        rows.append({"what": f"K = {k} drop (mse tables)", **{s: [round(d, 2) for d in drop[s]] for s in drop},
                     "ci": [round(c, 3) for c in ci]})
    for r in rows:
        m, lo, hi = r["ci"]
        print(f"| {r['what']} | {np.mean(r['base']):.2f} ± {sd(r['base']):.2f} | {np.mean(r['new']):.2f} ± "
              f"{sd(r['new']):.2f} | {m:+.2f} [{lo:+.2f}, {hi:+.2f}] |")
    if args.json:
        Path(args.json).write_text(json.dumps({"base": args.base, "new": args.new, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
