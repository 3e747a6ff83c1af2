"""Speed of the TAP env and of a full PPO search, one `name: value unit` line each.

    python benchmarks/env_speed.py [--data PATH] [--out-dir outputs] [--episodes 1000]

  * env_build:                 gym.make (teacher load, calibration, teacher cache)
  * random_episode_median:     one episode of uniform random actions (200 episodes)
  * random_episodes_per_s:     1 / that median
  * ppo_search_wall:           `python -m agents.search --episodes N` (PPO, its updates included)

Needs the LeNet-5 QAT teacher (python train_baselines.py qat). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402,F401
from agents import search  # noqa: E402
from models.cli import run_main  # noqa: E402
from models.data import default_data_path  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data_path())
    p.add_argument("--out-dir", default="outputs")
    p.add_argument("--episodes", type=int, default=1000, help="PPO search length")
    p.add_argument("--random-episodes", type=int, default=200)
    p.add_argument("--levels", type=int, default=16)
    args = p.parse_args()

    t0 = time.perf_counter()
    env = gym.make("TapQuant-LeNet5-v0", out_dir=args.out_dir, data=args.data, levels=args.levels, search_size=5000)
    print(f"env_build: {time.perf_counter() - t0:.2f} s")
    env.action_space.seed(0)
    times = []
    for ep in range(args.random_episodes):
        t0 = time.perf_counter()
        env.reset(seed=ep)
        done = False
        while not done:
            _, _, done, _, _ = env.step(env.action_space.sample())
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"random_episode_median: {1000 * med:.1f} ms")
    print(f"random_episodes_per_s: {1 / med:.1f} ep/s")

    t0 = time.perf_counter()
    rc = run_main(search.main, ["--episodes", str(args.episodes), "--out-dir", args.out_dir, "--data", args.data,
                                "--levels", str(args.levels), "--result-file", "bench_env_speed_ppo.json",
                                "--no-progress"])
    if rc != 0:
        raise SystemExit(rc)
    print(f"ppo_search_wall: {time.perf_counter() - t0:.1f} s for {args.episodes} episodes")


if __name__ == "__main__":
    main()
