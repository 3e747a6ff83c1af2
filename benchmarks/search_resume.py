"""Exact search resume at full length: SIGKILL at seeded moments, --resume, compare; and the checkpoint's cost.

    python benchmarks/search_resume.py --teacher-dir outputs/teachers/seed0 [--algos ppo tpe random]
                                       [--kills 5] [--episodes 1000] [--seed 3] [--overhead-pairs 3]

For each algorithm: one uninterrupted search (`python -m agents.search
--seed 3`), then `--kills` searches, each killed with SIGKILL at a moment
drawn uniformly from 15-90 % of the uninterrupted run's wall time (waiting
for the first checkpoint if none exists yet), and rerun with `--resume`.
A resumed result counts as equal when it matches the uninterrupted one in
everything but wall time and its own file name. Then `--overhead-pairs`
interleaved pairs of PPO searches, checkpointing every 100 episodes (the
default) and never, compare their search times. Run on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path


def search_cmd(args, algo: str, name: str, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "agents.search", "--algo", algo, "--episodes", str(args.episodes), "--seed",
           str(args.seed), "--out-dir", str(args.teacher_dir), "--result-file", name, "--no-progress", *extra]
    return cmd + (["--data", args.data] if args.data else [])


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def result(args, name: str) -> dict:
    return json.loads((Path(args.teacher_dir) / "tri_ppo_int_codes" / name).read_text())


def comparable(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "seconds"} | {"search": res["search"] | {"result_file": None}}


def kill_at(cmd: list[str], at: float, ckpt: Path) -> float:
    """Starts `cmd`, SIGKILLs it `at` seconds in (or just after its first checkpoint, if later); returns when."""
    ckpt.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    while time.perf_counter() - t0 < at or not ckpt.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the search ended before the kill at {at:.1f}s")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-dir", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--algos", nargs="*", default=["ppo", "tpe", "random"])
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--overhead-pairs", type=int, default=3)
    args = p.parse_args()
    schedule = random.Random(21)
    out = Path(args.teacher_dir) / "tri_ppo_int_codes"
    equal_total = 0
    for algo in args.algos:
        wall = run(search_cmd(args, algo, f"resume_full_{algo}.json"))
        full = comparable(result(args, f"resume_full_{algo}.json"))
        rows = []
        for k in range(args.kills):
            name = f"resume_killed_{algo}_{k}.json"
            at = kill_at(search_cmd(args, algo, name), schedule.uniform(0.15, 0.9) * wall,
                         out / name.replace(".json", ".ckpt"))
            said = subprocess.run(search_cmd(args, algo, name, "--resume"), check=True, capture_output=True,
                                  text=True).stdout
            episodes = int(said.split("[Search] resuming after episode ")[1].split()[0])
            res = comparable(result(args, name))
            same = res == full
            first = next((i for i, (a, b) in enumerate(zip(res["reward_history"], full["reward_history"])) if a != b),
                         None)
            rows.append((at, episodes, same, first))
            equal_total += same
        print(f"{algo}: uninterrupted {wall:.1f}s; " + "; ".join(
            f"killed at {at:.1f}s, resumed after episode {ep}: {'equal' if same else f'DIFFERENT from {first}'}"
            for at, ep, same, first in rows), flush=True)
    if args.algos and args.kills:
        print(f"equal: {equal_total}/{args.kills * len(args.algos)}", flush=True)

    if args.overhead_pairs:
        times = {"every 100": [], "never": []}
        for _ in range(args.overhead_pairs):
            for label, every in (("every 100", "100"), ("never", str(10 * args.episodes))):
                run(search_cmd(args, "ppo", "resume_overhead.json", "--checkpoint-every", every))
                times[label].append(result(args, "resume_overhead.json")["seconds"])
        ratios = [a / b for a, b in zip(times["every 100"], times["never"])]
        print(f"checkpoint overhead (ppo, {args.episodes} episodes, search seconds): every 100 "
              f"{times['every 100']} vs never {times['never']}; ratio {statistics.mean(ratios):.4f} "
              f"(pairs {[round(r, 4) for r in ratios]})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
