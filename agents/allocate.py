"""Each layer's K under a bit budget (mixed precision): the searches and their command.

    python -m agents.allocate --bit-budget 3.5                 # PPO in TapQuant-<Model>-Mixed-v0
    python -m agents.allocate --bit-budget 3.5 --algo knapsack
    python -m agents.allocate --levels conv1=8,conv2=16,fc1=32,fc2=32

Every method returns an allocation {layer: K} within the budget whose tables
are each layer's exact analytic TAP at that K (envs/mixed.py), chosen by the
search-split reward; the result file is the TAP search's (quant/result.py,
so agents.evaluate, report, export and `train_baselines.py student` take it)
with `levels` per layer, `bit_budget` and `average_bits`. The methods
(docs/mixed.md):

  * uniform: the largest K that fits at every layer.
  * exhaustive: every allocation within the budget, scored: the exact
    optimum on the search split (the referee; refused beyond EXHAUSTIVE_LIMIT).
  * knapsack: each layer alone at each K (every other layer exact) gives a
    sensitivity; the allocation of least summed sensitivity is solved exactly
    (quant/budget.knapsack), HAWQ-style; then scored once.
  * greedy: the same sensitivities; from the largest K everywhere, lower the
    layer whose next K costs the least per bit saved until the budget holds.
  * random, tpe: uniform random or Optuna-TPE choices through the env.
  * ppo: SB3's PPO in the mixed env (the design card's agent).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from agents.selection import scored_entry
from common.cli import (Parser, add_common_args, add_config_args, config_from_args, option, positive_int, run_main)
from common.errors import UserError
from common import progress
from envs.config import ProblemConfig
from envs.mixed import MixedKEnv, MixedProblem
from envs.problem import TapProblem
from quant.budget import (ALLOWED_LEVELS, allocations, average_bits, bits, capacity, check_budget,
                          check_levels_set, cost, count_allocations, knapsack, parse_levels, uniform_levels)
from quant.result import build_result, result_path, write_result

EXHAUSTIVE_LIMIT = 20_000
METHODS = ("ppo", "uniform", "exhaustive", "knapsack", "greedy", "random", "tpe", "fixed")
LEARNERS = ("ppo", "random", "tpe")  # the methods that play --episodes episodes
# 4-step episodes, one terminal reward: gamma = 1 as in the TAP search (agents/algos.py); a little entropy so
# that the discrete policy keeps trying other K while the memoised scorer makes repeats free.
PPO_DEFAULTS = dict(n_steps=64, batch_size=64, n_epochs=10, learning_rate=3e-3, gamma=1.0, gae_lambda=1.0,
                    ent_coef=0.01, policy_kwargs=dict(net_arch=[64, 64]))


def allowed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated K such as 4,8,16,32, got {text!r}") from None


@dataclass(frozen=True)
class AllocateConfig:
    """One allocation search: the TAP problem (its `levels` unused) and how the K are chosen."""

    problem: ProblemConfig = field(default_factory=ProblemConfig)
    bit_budget: float | None = option(None, "average bits per stored activation, weighted by each layer's output "
                                            "elements (uniform K = 8 is 3 bits); None: 3, or what --levels takes",
                                      type=float)
    allowed_levels: tuple[int, ...] = option(ALLOWED_LEVELS, "the K a layer may take, powers of 2",
                                             type=allowed_list)
    algo: str = option("ppo", "how: " + ", ".join(METHODS[:-1]) + " (agents/allocate.py)",
                       choices=METHODS[:-1])
    levels: str | None = option(None, "instead of a search: this allocation, e.g. conv1=8,conv2=16,fc1=32,fc2=32")
    episodes: int = option(1000, "random, tpe and ppo: allocations to try", type=positive_int)
    seed: int = option(0, "seed of random, tpe and ppo", type=int)
    result_file: str | None = option(None, "result file under <out-dir>/tri_ppo_int_codes/; None means "
                                           "<model>_mixed_<algo>_B<budget>_result.json")
    no_progress: bool = option(False, "no progress bar", action="store_true")

    @property
    def method(self) -> str:
        return "fixed" if self.levels else self.algo


class EpisodeLog(gym.Wrapper):
    """Keeps every finished episode's info (allocation, reward, drop) as the learner plays."""

    def __init__(self, env, on_episode):
        super().__init__(env)
        self.on_episode = on_episode

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated:
            self.on_episode(info)
        return obs, reward, terminated, truncated, info


def _play(env: MixedKEnv, choose, episodes: int, on_episode) -> None:
    """Plays `episodes` episodes, the action at each step from choose(step, obs)."""
    for _ in range(episodes):
        obs, _ = env.reset()
        for t in range(len(env.layers)):
            obs, _, terminated, _, info = env.step(choose(t, obs))
        on_episode(info)


def sensitivities(mixed: MixedProblem) -> dict[str, dict[int, float]]:
    """Each layer alone at each K, every other layer exact: its loss, -reward, on the search split."""
    return {n: {k: -mixed.score({n: k})["reward"] for k in mixed.allowed} for n in mixed.layers}


def greedy_removal(elements: dict[str, int], layers: list[str], allowed: tuple[int, ...], budget: float,
                   loss: dict[str, dict[int, float]]) -> dict[str, int]:
    """From the largest K everywhere, lower one layer a notch at a time, the one whose sensitivity rises the
    least per bit saved, until the allocation fits; then, since the last step can free more bits than needed,
    raise a layer a notch where it lowers the loss most per bit while the allocation still fits: the usual
    heuristic for the knapsack (quant/budget.py)."""
    alloc = {n: allowed[-1] for n in layers}
    cap = capacity(elements, budget)

    def step(n, by):  # layer n's K `by` notches along `allowed`
        return allowed[allowed.index(alloc[n]) + by]

    def per_bit(n, other):  # loss change per stored bit from alloc[n] to `other`
        return (loss[n][other] - loss[n][alloc[n]]) / (elements[n] * (bits(alloc[n]) - bits(other)))

    while cost(elements, alloc) > cap:
        n = min((n for n in layers if alloc[n] != allowed[0]), key=lambda n: per_bit(n, step(n, -1)))
        alloc[n] = step(n, -1)
    while True:
        fits = [n for n in layers if alloc[n] != allowed[-1] and cost(elements, {**alloc, n: step(n, 1)}) <= cap]
        n = max(fits, key=lambda n: per_bit(n, step(n, 1)), default=None)
        if n is None or per_bit(n, step(n, 1)) <= 0:
            return alloc
        alloc[n] = step(n, 1)


def search(cfg: AllocateConfig, mixed: MixedProblem, budget: float) -> tuple[dict, list[float]]:
    """The method's allocation (best search-split reward among those it tried) and every reward it saw."""
    el, layers, allowed = mixed.elements, mixed.layers, mixed.allowed
    seen: list[dict] = []
    lines = progress.LogLines()

    def note(info: dict) -> None:  # every allocation scored; a line per PROGRESS_INTERVAL for the long searches
        seen.append(info)
        n = len(seen)
        if not cfg.no_progress and cfg.algo in LEARNERS and lines.due():
            print(f"[Mixed] {cfg.algo} | episode {n}/{cfg.episodes} | {lines.rate(n):.1f} ep/s | "
                  f"{lines.left(n, cfg.episodes)} left | best reward {max(i['reward'] for i in seen):.3f}", flush=True)
    if cfg.method == "fixed":
        note(mixed.score(parse_levels(cfg.levels, layers, allowed)))
    elif cfg.algo == "uniform":
        note(mixed.score({n: uniform_levels(allowed, budget) for n in layers}))
    elif cfg.algo == "exhaustive":
        n_all = count_allocations(layers, allowed)
        if n_all > EXHAUSTIVE_LIMIT:
            raise UserError(f"--algo exhaustive: {len(allowed)}^{len(layers)} = {n_all:,} allocations is beyond "
                            f"{EXHAUSTIVE_LIMIT:,}; use --algo knapsack, greedy or ppo")
        todo = list(allocations(el, layers, allowed, budget))
        for alloc in progress.progress(todo, len(todo), "[Mixed] exhaustive", "allocation", cfg.no_progress):
            note(mixed.score(alloc))
    elif cfg.algo == "knapsack":
        note(mixed.score(knapsack(el, layers, allowed, budget, sensitivities(mixed))))
    elif cfg.algo == "greedy":
        note(mixed.score(greedy_removal(el, layers, allowed, budget, sensitivities(mixed))))
    else:
        env = MixedKEnv(mixed, bit_budget=budget, allowed_levels=allowed)
        if cfg.algo == "random":
            rng = np.random.default_rng(cfg.seed)
            _play(env, lambda t, obs: int(rng.integers(len(allowed))), cfg.episodes, note)
        elif cfg.algo == "tpe":
            _run_tpe(env, cfg, note)
        else:
            _run_ppo(env, cfg, note)
    return max(seen, key=lambda i: i["reward"]), [i["reward"] for i in seen]


def _run_tpe(env: MixedKEnv, cfg: AllocateConfig, note) -> None:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    for _ in range(cfg.episodes):
        trial = study.ask()
        obs, _ = env.reset()
        for n in env.layers:
            obs, reward, _, _, info = env.step(trial.suggest_categorical(n, list(range(len(env.allowed)))))
        study.tell(trial, reward)
        note(info)


def _run_ppo(env: MixedKEnv, cfg: AllocateConfig, note) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(cfg.seed)
    learner = PPO("MlpPolicy", EpisodeLog(env, note), seed=cfg.seed, device="cpu", verbose=0, **PPO_DEFAULTS)
    learner.learn(total_timesteps=cfg.episodes * len(env.layers))


def run(cfg: AllocateConfig) -> dict:
    """Runs the allocation search; writes and returns its result."""
    allowed = check_levels_set(cfg.allowed_levels)
    fixed = parse_levels(cfg.levels, cfg.problem.approximated_layers, allowed) if cfg.levels else None
    if cfg.bit_budget is not None:
        check_budget(cfg.bit_budget, allowed)
    t0 = time.perf_counter()
    problem = TapProblem(cfg.problem)
    mixed = MixedProblem(problem, allowed)
    el = mixed.elements
    budget = cfg.bit_budget if cfg.bit_budget is not None else (average_bits(el, fixed) if fixed else 3.0)
    check_budget(budget, allowed)
    if fixed and average_bits(el, fixed) > budget + 1e-9:
        raise UserError(f"--levels {cfg.levels} takes {average_bits(el, fixed):.3f} bits per activation, above "
                        f"--bit-budget {budget:g}; raise the budget or lower some K")
    print(f"[Mixed] {cfg.problem.model} | {cfg.method} | budget {budget:g} bits per activation | K in "
          f"{','.join(map(str, allowed))} | stored activations per image: "
          + ", ".join(f"{n} {el[n]}" for n in mixed.layers), flush=True)
    best, rewards = search(cfg, mixed, budget)
    entry = scored_entry(problem, mixed.config(best["levels"]), None)
    res = build_result(problem, search={"algo": cfg.method, "episodes": cfg.episodes, "seed": cfg.seed,
                                        "bit_budget": budget, "allowed_levels": list(allowed)},
                       options={k: str(v) for k, v in PPO_DEFAULTS.items()} if cfg.method == "ppo" else {},
                       best=entry, rewards=rewards,
                       complete=True, seconds=time.perf_counter() - t0)
    res.update(levels=dict(best["levels"]), bit_budget=budget, average_bits=round(average_bits(el, best["levels"]), 4),
               allowed_levels=list(allowed), activations=el, scorer_calls=mixed.calls)
    path = result_path(cfg.problem.out_dir, cfg.result_file or default_name(cfg.problem.model, cfg.method, budget))
    write_result(path, res)
    label = ",".join(f"{n}={k}" for n, k in best["levels"].items())
    print(f"[Mixed] wrote {path}", flush=True)
    print(f"[Mixed] {cfg.method} | {res['seconds']:.1f}s | {mixed.calls} scorer calls | {label} | "
          f"{res['average_bits']:.3f} bits (budget {budget:g})", flush=True)
    print(f"[Mixed] search split: Teacher {entry['acc_teacher']:.2f}% | Student {entry['acc_student']:.2f}% | "
          f"Drop {entry['drop']:.2f}% | Reward {entry['reward']:.4f} (agents.evaluate gives the test set's)",
          flush=True)
    return res


def default_name(model: str, method: str, budget: float) -> str:
    return f"{model}_mixed_{method}_B{budget:g}_result.json"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    add_config_args(p, ProblemConfig, skip=("levels", "data", "cache_dir", "out_dir", "device"))
    add_config_args(p, AllocateConfig)
    add_common_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # --levels is the allocation here; the TAP problem keeps its own default K (unused by the tables).
    problem = config_from_args(ProblemConfig, args, levels=ProblemConfig.__dataclass_fields__["levels"].default)
    run(config_from_args(AllocateConfig, args, problem=problem))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
