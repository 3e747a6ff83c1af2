"""Speed of the TAP env and of a full PPO search, one `name: value unit` line each.

    python benchmarks/env_speed.py [--data PATH] [--out-dir outputs] [--episodes 1000]
    python benchmarks/env_speed.py --model vgg16 --out-dir outputs/vgg16 --search-size 1000 --episodes 0

  * env_build:                 gym.make (teacher load, calibration, teacher cache)
  * scorer_backend:            the student's kernels (quant/kernels.py): int8 on an x86 CPU
  * random_episode_median:     one episode of uniform random actions (200 episodes)
  * random_episodes_per_s:     1 / that median
  * float_random_episode_median, int8_vs_float:  the same episodes with the float
                               simulation as the scorer's kernels, interleaved with the
                               int8 ones (same process, same actions), and the time ratio
  * int8_vs_float_same_accuracy, int8_vs_float_max_reward_diff: how far the two
                               kernels' scores of those episodes differ
  * ppo_search_wall:           `python -m agents.search --episodes N` (PPO, its updates included)

Needs the model's QAT teacher (python train_baselines.py qat). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np


import envs  # noqa: F401  (registers the TapQuant-* ids)
from agents import search
from common.cli import run_main
from common.cli import default_data_path
from envs import GUIDE_ENV_IDS
from quant.kernels import Int8Stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data_path())
    p.add_argument("--out-dir", default="outputs")
    p.add_argument("--episodes", type=int, default=1000, help="PPO search length (0: skip the PPO search)")
    p.add_argument("--random-episodes", type=int, default=200)
    p.add_argument("--levels", type=int, default=16)
    p.add_argument("--model", default="lenet5", choices=list(GUIDE_ENV_IDS))
    p.add_argument("--search-size", type=int, default=5000, help="search-split images (an episode's cost grows with it)")
    args = p.parse_args()

    t0 = time.perf_counter()
    kw = dict(out_dir=args.out_dir, data=args.data, levels=args.levels, search_size=args.search_size)
    env_id = GUIDE_ENV_IDS[args.model]
    env = gym.make(env_id, **kw)
    print(f"env_build: {time.perf_counter() - t0:.2f} s")
    int8 = isinstance(env.unwrapped.problem.kernels, Int8Stages)
    print(f"scorer_backend: {'int8' if int8 else 'float'}")
    runs = {"main": env}
    if int8:
        runs["float"] = gym.make(env_id, backend="float", **kw)
    times: dict = {k: [] for k in runs}
    scores: dict = {k: [] for k in runs}
    rng = np.random.default_rng(0)
    n_layers = len(env.unwrapped.layers)
    for ep in range(args.random_episodes):
        actions = rng.uniform(-1, 1, size=(n_layers, 4)).astype(np.float32)
        for name, e in runs.items():
            t0 = time.perf_counter()
            e.reset(seed=ep)
            for a in actions:
                info = e.step(a)[-1]
            times[name].append(time.perf_counter() - t0)
            scores[name].append((info["acc_student"], info["reward"]))
    med = statistics.median(times["main"])
    print(f"random_episode_median: {1000 * med:.1f} ms")
    print(f"random_episodes_per_s: {1 / med:.1f} ep/s")
    if "float" in times:
        med_f = statistics.median(times["float"])
        print(f"float_random_episode_median: {1000 * med_f:.1f} ms")
        print(f"int8_vs_float: {med / med_f:.2f} x")
        pairs = list(zip(scores["main"], scores["float"]))
        same = sum(a[0] == b[0] for a, b in pairs)
        print(f"int8_vs_float_same_accuracy: {same} of {len(pairs)} episodes")
        print(f"int8_vs_float_max_reward_diff: {max(abs(a[1] - b[1]) for a, b in pairs):.2e}")

    if args.episodes <= 0:
        return
    t0 = time.perf_counter()
    rc = run_main(search.main, ["--model", args.model, "--episodes", str(args.episodes), "--out-dir", args.out_dir,
                                "--data", args.data, "--levels", str(args.levels), "--search-size",
                                str(args.search_size), "--result-file", f"bench_env_speed_{args.model}_ppo.json",
                                "--no-progress"])
    if rc != 0:
        raise SystemExit(rc)
    print(f"ppo_search_wall: {time.perf_counter() - t0:.1f} s for {args.episodes} episodes")


if __name__ == "__main__":
    main()
