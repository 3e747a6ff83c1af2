"""Mixed precision: each layer's K under a bit budget, the tables themselves exact (docs/mixed.md).

`MixedProblem` holds, for every approximated layer and every allowed K, the
layer's analytic TAP at its rule's clip (quant/analytic.py, the `mse` rule by
default), so an allocation {layer: K} is one configuration of tables, scored
by the TAP problem's own scorer (same search split, same reward). The budget
arithmetic is quant/budget.py.

`MixedKEnv` is the env an RL agent learns the allocation in.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from envs.config import ProblemConfig
from envs.problem import TapProblem
from envs.tap_env import shared_problem
from models.pooling import max_pool2x2
from quant.analytic import AnalyticSolver, table_error
from quant.budget import (ALLOWED_LEVELS, MAX_BITS, average_bits, bits, check_budget, check_levels_set,
                          clamp_to_budget)
from quant.clip import rule_tmax
from quant.tap import TapParams


class MixedProblem:
    """The analytic TAPs of every (layer, K) and the scorer of allocations, on one TapProblem."""

    def __init__(self, problem: TapProblem, allowed: tuple[int, ...] = ALLOWED_LEVELS):
        self.problem = problem
        self.layers = problem.layers
        self.allowed = check_levels_set(allowed)
        self.elements = self._elements()
        self.calls = 0  # scorer calls (memoised repeats included): what a method spent
        self.params: dict[str, dict[int, TapParams]] = {}
        self.code_error: dict[str, dict[int, float]] = {}
        for n in self.layers:
            counts = problem.stats[n].counts
            self.params[n], self.code_error[n] = {}, {}
            for k in self.allowed:
                solver = problem.solvers[n] if k == problem.levels[n] else AnalyticSolver(counts, k)
                p = solver.params_at(rule_tmax(problem.config.tmax_rule, counts, k, solver))
                self.params[n][k] = p
                self.code_error[n][k] = table_error(counts, p)

    @torch.no_grad()
    def _elements(self) -> dict[str, int]:
        """Each approximated layer's stored activations per image: its record point's elements, after the
        layer's max-pool where it has one (a monotone table commutes with it, so the pooled codes are what a
        layer hands on; LeNet-5: conv1 1,176, conv2 400, fc1 120, fc2 84). A residual net's block output is
        read twice (by the next conv and at the next join) but stored once, at its layer's bits: counted once."""
        qnet = self.problem.qnet
        rec: dict = {}
        qnet(torch.zeros(1, 3, 32, 32, dtype=torch.uint8, device=self.problem.torch_device), record=rec)
        out = {}
        for n in self.layers:
            codes = rec[n][:1]
            out[n] = int((max_pool2x2(codes) if qnet.stages[qnet.stage_index(n)].pool else codes).numel())
        return out

    def config(self, alloc: dict[str, int]) -> dict[str, TapParams]:
        return {n: self.params[n][k] for n, k in alloc.items()}

    def score(self, alloc: dict[str, int]) -> dict:
        """The allocation's search-split score and info (problem.score_params), with its average bits; a
        partial allocation leaves the other layers exact (INT8)."""
        self.calls += 1
        info = self.problem.score_params(self.config(alloc))
        info["levels"] = dict(alloc)
        info["average_bits"] = average_bits(self.elements, alloc)
        return info

    def share(self, layer: str) -> float:
        """The layer's share of the approximated layers' stored activations."""
        return self.elements[layer] / sum(self.elements.values())


_MIXED: dict = {}


def shared_mixed(config: ProblemConfig, allowed: tuple[int, ...]) -> MixedProblem:
    """One MixedProblem per configuration and process (its TapProblem shared with the TAP env's)."""
    key = (config, tuple(sorted(allowed)))
    if key not in _MIXED:
        _MIXED[key] = MixedProblem(shared_problem(config), allowed)
    return _MIXED[key]


class MixedKEnv(gym.Env):
    """
    ## Description

    Chooses each approximated layer's number of levels K (its activations'
    bits, log2 K) under a budget on the average bits per stored activation
    (weighted by each layer's output elements: the bytes moved between
    layers). One episode is one allocation: step t picks the K of the t-th
    approximated layer, in execution order; every layer's table is then its
    exact analytic TAP at that K (least histogram-weighted squared code
    error, at the clip rule's tmax), and the student is scored on the search
    split as in `TapQuantEnv`. The agent learns the allocation, not the tables.

    ## Action Space

    `Discrete(len(allowed_levels))`: index into `allowed_levels` (default
    4, 8, 16, 32). The budget is enforced at every step: a K that would leave
    a later layer less than the smallest K is lowered to the largest K that
    fits (HAQ's rule, applied per step), so every episode meets the budget.
    `info["levels"]` holds the K applied.

    ## Observation Space

    `Box(0, 1, (7 + len(allowed_levels),), float32)`, for the layer being decided:

    | index | feature                                                                    |
    |-------|----------------------------------------------------------------------------|
    | 0     | layer position among the approximated layers (0 first, 1 last)             |
    | 1     | 1 if the layer is a conv                                                   |
    | 2     | 1 if the layer is an fc                                                    |
    | 3     | the layer's share of the approximated layers' stored activations           |
    | 4     | average bits still available per remaining activation / 8                  |
    | 5     | the bit budget / 8                                                         |
    | 6     | previous layer's bits (log2 K) / 8 (0 at the first step)                    |
    | 7..   | per allowed K: the layer's analytic squared code error at K, / at the smallest K |

    ## Rewards

    0 after every step but the last; after the last, the TAP env's reward
    `-(drop + attention_weight * att + kl_weight * kl)` on the search split.

    ## Starting State

    The first approximated layer, the whole budget left. The env draws no
    random numbers.

    ## Episode End

    Terminated after the last approximated layer's step (registered with
    `max_episode_steps` equal to it).

    ## Arguments

    ```python
    import gymnasium as gym
    import envs
    env = gym.make("TapQuant-LeNet5-Mixed-v0", bit_budget=3.5)
    ```

    `bit_budget` (default 3.0: uniform K = 8), `allowed_levels` (default
    (4, 8, 16, 32)), and `TapQuantEnv`'s arguments but `levels` (the K of
    the env's TAP problem; here each layer's K is the action).

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, mixed: MixedProblem | None = None, bit_budget: float = 3.0,
                 allowed_levels: tuple[int, ...] = ALLOWED_LEVELS, **config):
        super().__init__()
        self.mixed = mixed or shared_mixed(ProblemConfig(**config), allowed_levels)
        self.allowed = self.mixed.allowed
        check_budget(bit_budget, self.allowed)
        self.budget = float(bit_budget)
        self.layers = self.mixed.layers
        self.action_space = spaces.Discrete(len(self.allowed))
        self.observation_space = spaces.Box(0.0, 1.0, shape=(7 + len(self.allowed),), dtype=np.float32)
        self._static = [self._layer_features(n) for n in self.layers]
        self._alloc: dict[str, int] = {}

    def _layer_features(self, name: str) -> np.ndarray:
        qnet = self.mixed.problem.qnet
        i = self.layers.index(name)
        kind = qnet.stages[qnet.stage_index(name)].kind
        err = self.mixed.code_error[name]
        worst = err[self.allowed[0]] or 1.0
        return np.array([i / max(1, len(self.layers) - 1), float(kind == "conv"), float(kind == "fc"),
                         self.mixed.share(name)] + [err[k] / worst for k in self.allowed], dtype=np.float32)

    def _obs(self) -> np.ndarray:
        t = min(len(self._alloc), len(self.layers) - 1)
        el = self.mixed.elements
        left = self.budget * sum(el.values()) - sum(el[n] * bits(k) for n, k in self._alloc.items())
        rest = sum(el[n] for n in self.layers[t:])
        prev = bits(self._alloc[self.layers[t - 1]]) / MAX_BITS if t else 0.0
        s = self._static[t]
        obs = np.concatenate([s[:4], [left / rest / MAX_BITS, self.budget / MAX_BITS, prev], s[4:]])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._alloc = {}
        return self._obs(), {"layer": self.layers[0]}

    def step(self, action):
        t = len(self._alloc)
        if t >= len(self.layers):
            raise RuntimeError("step() called after the episode ended; call reset()")
        name = self.layers[t]
        wanted = self.allowed[int(action)]
        k = clamp_to_budget(self.mixed.elements, self.layers, self._alloc, name, wanted, self.allowed, self.budget)
        self._alloc[name] = k
        info = {"layer": name, "k": k, "asked": wanted}
        if len(self._alloc) < len(self.layers):
            return self._obs(), 0.0, False, False, info
        info.update(self.mixed.score(self._alloc))
        info["bit_budget"] = self.budget
        return self._obs(), float(info["reward"]), True, False, info

