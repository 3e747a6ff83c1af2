"""A sweep on local Ray against the same searches one after another (issue #13's 1.3x target).

    python benchmarks/sweep_speed.py [sweeps/algos_k.yaml] [--out-dir outputs]

Runs every trial of the sweep file as its own `python -m agents.search`
process, one after another, then the whole sweep with `python -m
agents.sweep` (a fresh sweep folder), and prints both wall times, their
ratio, and whether each trial's search (reward history and chosen tables)
is identical in both. The sequential side runs no test eval, the sweep
does (one per trial): the ratio is, if anything, against the sweep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from agents.sweep import SweepSpec, as_flags, trial_result_file


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_file", nargs="?", default=str(ROOT / "sweeps" / "algos_k.yaml"))
    p.add_argument("--out-dir", default="outputs")
    p.add_argument("--data", default=None)
    args = p.parse_args()
    common = {"data": args.data, "cache_dir": None, "out_dir": args.out_dir, "device": "cpu"}
    spec = SweepSpec(args.sweep_file, common)
    where = [a for k, v in common.items() if v is not None and k != "device" for a in as_flags(k, v)]

    seq_dir = f"{spec.name}_sequential"
    t0 = time.perf_counter()
    for point in spec.points():
        argv = [a for k, v in {**spec.options, **point}.items() for a in as_flags(k, v)]
        subprocess.run([sys.executable, "-m", "agents.search", *argv, *where, "--no-progress",
                        "--result-file", trial_result_file(common, seq_dir, point)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    sequential = time.perf_counter() - t0

    shutil.rmtree(Path(args.out_dir) / "sweeps" / spec.name, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "agents.sweep", args.sweep_file, *where, "--no-progress"], cwd=ROOT,
                   check=True)
    swept = time.perf_counter() - t0

    same = 0
    for point in spec.points():
        a = json.loads(Path(trial_result_file(common, seq_dir, point)).read_text())
        b = json.loads(Path(trial_result_file(common, spec.name, point)).read_text())
        same += a["reward_history"] == b["reward_history"] and a["best"]["config"] == b["best"]["config"]
    print(f"sequential_searches: {sequential:.1f} s ({spec.n_trials} x python -m agents.search)")
    print(f"ray_sweep: {swept:.1f} s (python -m agents.sweep, local Ray, with a test eval per trial)")
    print(f"ratio: {swept / sequential:.2f}x")
    print(f"identical_trials: {same}/{spec.n_trials}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
