"""`TapQuantEnv`: one episode = one TAP configuration (TAP.md section 6).

Step t decides the table of the t-th approximated layer (execution order).
The observation describes that layer: its code histogram over [0, tmax]
(HIST_BINS bins, normalised by all codes), tmax, p90, zero and saturation
fractions, mean code, its position and kind, and the previous layer's
decoded parameters. The reward is 0 until the last layer, then
-(drop + w_att * att) on the search split; `info` carries every term and the
decoded tables. Best-so-far tracking lives outside the env (agents/tracker.py).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.problem import TapProblem
from quant.tap import TapParams, build_table, decode_action

HIST_BINS = 16
N_PARAMS = 5  # b1/tmax, b2/tmax, n1/M, n2/M, n3/M of the previous layer
OBS_DIM = HIST_BINS + 5 + 3 + N_PARAMS  # histogram, code stats, position + kind(2), previous params

_PROBLEMS: dict = {}


def shared_problem(**kwargs) -> TapProblem:
    """One TapProblem per distinct configuration and process: vectorised envs
    (DummyVecEnv) and repeated gym.make calls share the teacher cache."""
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    if key not in _PROBLEMS:
        _PROBLEMS[key] = TapProblem(**kwargs)
    return _PROBLEMS[key]


class TapQuantEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, model: str = "lenet5", teacher: str | None = None, out_dir: str = "outputs",
                 levels: int = 16, attention_weight: float = 50.0, layers: list | None = None,
                 search_size: int = 5000, calib_batches: int = 10, device: str = "cpu",
                 data: str | None = None, cache_dir: str | None = None, backend: str = "auto",
                 problem: TapProblem | None = None):
        super().__init__()
        self.problem = problem or shared_problem(
            model=model, teacher=teacher, out_dir=out_dir, levels=levels, attention_weight=attention_weight,
            layers=list(layers) if layers else None, search_size=search_size, calib_batches=calib_batches,
            device=device, data=data, cache_dir=cache_dir, backend=backend)
        self.layers = self.problem.layers
        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(OBS_DIM,), dtype=np.float32)
        self._static = [self._layer_features(n) for n in self.layers]
        self._t = 0
        self._params: list[TapParams] = []

    def _layer_features(self, name: str) -> np.ndarray:
        st = self.problem.stats[name]
        qnet = self.problem.qnet
        i = qnet.stage_index(name)
        n_quant = len(qnet.quant_layers)
        feats = [st.binned(HIST_BINS),
                 [st.tmax / 255, st.p90 / 255, st.zero_frac, st.sat_frac, st.mean_code / 255],
                 [i / max(1, n_quant - 1), float(qnet.stages[i].kind == "conv"), float(qnet.stages[i].kind == "fc")]]
        return np.clip(np.concatenate(feats), 0.0, 1.0).astype(np.float32)

    def _obs(self) -> np.ndarray:
        prev = np.zeros(N_PARAMS, dtype=np.float32)
        if self._params:
            p = self._params[-1]
            m = p.K - 1
            prev[:] = [p.b1 / p.tmax, p.b2 / p.tmax, p.n1 / m, p.n2 / m, p.n3 / m]
        return np.clip(np.concatenate([self._static[self._t], prev]), 0.0, 1.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # the env itself draws no random numbers
        self._t = 0
        self._params = []
        return self._obs(), {"layer": self.layers[0]}

    def step(self, action):
        if self._t >= len(self.layers):
            raise RuntimeError("step() called after the episode ended; call reset()")
        name = self.layers[self._t]
        params = decode_action(action, self.problem.stats[name].tmax, self.problem.levels)
        self._params.append(params)
        info = {"layer": name, "params": params.as_dict()}
        self._t += 1
        if self._t < len(self.layers):
            return self._obs(), 0.0, False, False, info
        tables = {n: build_table(p) for n, p in zip(self.layers, self._params)}
        score = self.problem.score(tables)
        info.update(score.as_dict())
        info["config"] = {n: {**p.as_dict(), "table": tables[n]} for n, p in zip(self.layers, self._params)}
        # The final observation is never acted on; repeat the last layer's features.
        self._t -= 1
        obs = self._obs()
        self._t += 1
        return obs, float(score.reward), True, False, info
