"""What `--wandb offline` costs a 1000-episode search (issue #13: at most 10 %).

    python benchmarks/wandb_overhead.py [--episodes 1000] [--rounds 2]

Runs the default search (PPO, seed 0) without W&B and with `--wandb offline`,
interleaved (off, on, off, on, ...) so that drift hits both alike, and
prints each wall time and the ratio of the means. W&B writes under a
temporary WANDB_DIR.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


from agents import search
from envs.config import ProblemConfig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out-dir", default="outputs")
    args = p.parse_args()
    os.environ["WANDB_DIR"] = tempfile.mkdtemp(prefix="wandb-bench-")
    os.environ.setdefault("WANDB_SILENT", "true")
    times = {"disabled": [], "offline": []}
    for r in range(args.rounds):
        for mode in times:
            cfg = search.SearchConfig(problem=ProblemConfig(out_dir=args.out_dir), episodes=args.episodes,
                                      result_file=f"bench_wandb_{mode}.json", wandb=mode, no_progress=True)
            t0 = time.perf_counter()
            search.run(cfg)
            times[mode].append(time.perf_counter() - t0)
            print(f"round {r + 1} {mode}: {times[mode][-1]:.1f} s", flush=True)
    off, on = (sum(v) / len(v) for v in times.values())
    print(f"wandb_offline_overhead: {100 * (on / off - 1):+.1f} % ({on:.1f} s vs {off:.1f} s, mean of {args.rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
