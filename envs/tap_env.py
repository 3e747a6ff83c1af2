"""`TapQuantEnv`: one episode chooses one TAP per quantized layer (docs/tap.md section 6)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.config import ProblemConfig
from envs.problem import TapProblem
from quant.histogram import percentile_nonzero
from quant.tap import TapParams

HIST_BINS = 16
CODE_STATS = 5  # tmax, p90, zero fraction, saturation fraction, mean code
LAYER_KIND = 3  # position, is-conv, is-fc
N_PARAMS = 6  # the previous layer's b1/tmax, b2/tmax, n1/M, n2/M, n3/M, tmax/255
TAIL = (99.0, 99.9, 100.0)  # tail percentiles of the non-zero codes: what a clip decision needs
OBS_DIM = HIST_BINS + CODE_STATS + LAYER_KIND + N_PARAMS + len(TAIL)

_PROBLEMS: dict[ProblemConfig, TapProblem] = {}


def shared_problem(config: ProblemConfig) -> TapProblem:
    """One TapProblem per configuration and process: vectorised envs (DummyVecEnv)
    and repeated gym.make calls share the teacher's cached codes and the memo."""
    if config not in _PROBLEMS:
        _PROBLEMS[config] = TapProblem(config)
    return _PROBLEMS[config]


class TapQuantEnv(gym.Env):
    """
    ## Description

    Searches a tri-segment approximation (TAP) of the INT8 activation codes of
    each quantized layer of a QAT teacher (LeNet-5: conv1, conv2, fc1, fc2;
    never the classifier). One episode is one configuration: step t decides the
    table of the t-th approximated layer, in execution order; after the last
    layer the student (the teacher with every table applied at its record
    point) is scored on the search split, images held out of the training set
    (docs/tap.md).

    On a residual net (`TapQuant-ResNet20-v1`, -32, -56) the layers are every
    ReLU output: the stem conv1, then per block its inner ReLU (g<group>b<block>c1)
    and its post-add ReLU (g<group>b<block>c2): 19 steps for ResNet-20. A block's
    post-add codes feed both the next conv and the next join, so its table
    changes both paths: that is the activation a deployment stores, so that is
    where the table goes. The attention layers are the outputs of groups 2
    and 3 (g2b3c2, g3b3c2 for ResNet-20), attention transfer's place in a
    ResNet (models/resnet.py).

    ## Action Space

    `Box(-1, 1, (4,), float32)`: the layer's (a0, a1, a2, a3); with
    `tmax_rule="search"`, `Box(-1, 1, (5,), float32)`: a4 also moves the
    layer's clip, tmax = rnd(t* 2^a4) with t* the `mse` clip (quant/clip.py),
    and the other four then decode at that clip. Every action
    decodes to a valid TAP by construction (quant/tap.py, docs/tap.md):
    a0 -> breakpoint b1 in 1..tmax-2, a1 -> b2 in b1+1..tmax-1, a2 -> n1
    levels in the first segment, a3 -> n2 in the second, n3 = K - 1 - n1 - n2.
    With `anchor="analytic"` (the default) the action is a correction: the
    numbers decoded are `clip(a* + 0.5 * a, -1, 1)`, where a* encodes the
    layer's analytic TAP (least histogram-weighted squared code error,
    quant/analytic.py), so zeros decode to the analytic tables. With
    `anchor="none"` the numbers are the action itself, as in the guide.
    tmax is each layer's clip: set by `tmax_rule` (`guide`: p90 + 10;
    `mse`: the exact least-squared-error clip and table; `pQ`: a percentile;
    `search`: moved by a4).

    ## Observation Space

    `Box(0, 1, (33,), float32)`, describing the layer being decided. Codes are
    counted on the calibration batches; M = K - 1; tmax is the rule's clip
    (with `search`, the clip its corrections start from).

    | index | feature                                                    | range  |
    |-------|------------------------------------------------------------|--------|
    | 0     | histogram bin 1 of 16 over codes [0, tmax], / all codes    | [0, 1] |
    | 1     | histogram bin 2                                            | [0, 1] |
    | 2     | histogram bin 3                                            | [0, 1] |
    | 3     | histogram bin 4                                            | [0, 1] |
    | 4     | histogram bin 5                                            | [0, 1] |
    | 5     | histogram bin 6                                            | [0, 1] |
    | 6     | histogram bin 7                                            | [0, 1] |
    | 7     | histogram bin 8                                            | [0, 1] |
    | 8     | histogram bin 9                                            | [0, 1] |
    | 9     | histogram bin 10                                           | [0, 1] |
    | 10    | histogram bin 11                                           | [0, 1] |
    | 11    | histogram bin 12                                           | [0, 1] |
    | 12    | histogram bin 13                                           | [0, 1] |
    | 13    | histogram bin 14                                           | [0, 1] |
    | 14    | histogram bin 15                                           | [0, 1] |
    | 15    | histogram bin 16 (the bin that ends at tmax)               | [0, 1] |
    | 16    | tmax / 255                                                 | [0, 1] |
    | 17    | p90 of the non-zero codes / 255                            | [0, 1] |
    | 18    | share of zero codes                                        | [0, 1] |
    | 19    | share of codes above tmax (saturated by the table)         | [0, 1] |
    | 20    | mean code / 255                                            | [0, 1] |
    | 21    | layer position among the quantized layers (0 first, 1 last) | [0, 1] |
    | 22    | 1 if the layer is a conv                                   | {0, 1} |
    | 23    | 1 if the layer is an fc                                    | {0, 1} |
    | 24    | previous layer's b1 / tmax (0 at the first step)           | [0, 1] |
    | 25    | previous layer's b2 / tmax                                 | [0, 1] |
    | 26    | previous layer's n1 / M                                    | [0, 1] |
    | 27    | previous layer's n2 / M                                    | [0, 1] |
    | 28    | previous layer's n3 / M                                    | [0, 1] |
    | 29    | previous layer's tmax / 255                                | [0, 1] |
    | 30    | p99 of the non-zero codes / 255                            | [0, 1] |
    | 31    | p99.9 of the non-zero codes / 255                          | [0, 1] |
    | 32    | largest code seen / 255                                    | [0, 1] |

    ## Rewards

    0 after every step but the last; after the last,
    `-(drop + attention_weight * att + kl_weight * kl)` on the search split:
    `drop` is the teacher's accuracy minus the student's in percentage
    points, `att` the mean attention-transfer distance at the attention
    layers (LeNet-5: conv2, fc1), `kl` the mean KL(teacher || student) of
    the logits. `kl_weight=0` (the default) is the guide's reward. Identity
    tables score exactly 0.

    ## Starting State

    The first approximated layer's features and no previous parameters. The
    env draws no random numbers: the search split, the calibration batches
    and so every observation are fixed.

    ## Episode End

    Terminated after the last approximated layer's step (4 for LeNet-5). The
    registered ids set `max_episode_steps` to that count, so Gymnasium's
    TimeLimit also marks that step truncated; SB3 bootstraps only on
    truncation without termination, so nothing changes.

    `info` holds the layer decided and its decoded parameters at every step;
    at the last, also `acc_teacher`, `acc_student`, `drop`, `att`,
    `att_per_layer`, `kl`, `reward` and `config` (per layer: parameters and table).

    ## Arguments

    ```python
    import gymnasium as gym
    import envs  # registers the ids
    env = gym.make("TapQuant-LeNet5-v0", levels=16, attention_weight=50.0)
    ```

    | argument           | default     | meaning |
    |--------------------|-------------|---------|
    | `model`            | set by id   | `lenet5`, `alexnet`, `vgg16`, `vgg19` |
    | `teacher`          | `None`      | INT8 teacher checkpoint; `None`: `<out_dir>/<model>_qat_preconvert.pth` |
    | `width`            | `None`      | refuse a teacher of another width (`train_baselines.py float --width`); `None`: the teacher's |
    | `levels`           | `16`        | TAP budget K (4..256), code 0 included; or each layer's, `{"conv1": 8, ...}` |
    | `attention_weight` | `50.0`      | w_att in the reward |
    | `kl_weight`        | `0.0`       | w_kl in the reward (0: the guide's reward) |
    | `layers`           | `None`      | layers to approximate; `None`: every quantized layer |
    | `anchor`           | `"analytic"` | what zeros decode to: `"analytic"` tables, or `"none"` (the guide's decoding) |
    | `tmax_rule`        | `"mse"`     | each layer's clip: `"guide"` (p90 + 10), `"mse"`, `"pQ"` (e.g. `"p99.9"`), `"search"` |
    | `search_size`      | `5000`      | search-split images (the first of the validation split) |
    | `calib_batches`    | `10`        | training batches of 128 for histograms, p90, tmax |
    | `backend`          | `"auto"`    | student kernels: `"int8"` (oneDNN, x86 CPU), `"float"`, `"auto"` |
    | `out_dir`          | `"outputs"` | where the default teacher is |
    | `data`             | `None`      | CIFAR-10 source; `None`: `$TAPQUANT_DATA`, else `./data` |
    | `cache_dir`        | `None`      | decoded-image cache; `None`: `$TAPQUANT_CACHE`, else `~/.cache/tapquant` |
    | `device`           | `"auto"`    | `cpu`, `cuda` (untested), `auto` |
    | `problem`          | `None`      | an already built `TapProblem` to share (then the others are ignored) |

    These are `envs.config.ProblemConfig`'s fields, the search CLI's flags.

    ## Version History

    * v1: the clip is a decision. `tmax_rule` (`"search"`: a 5th action
      number per layer); the observation gains the previous layer's clip and
      the codes' tail (p99, p99.9, largest code): 33 features.
    * v0: the guide's environment: tmax = p90 + 10, a 4-number action, the
      first 29 features above (no previous clip, no tail). Registered as
      `TapQuant-<Model>-v0` (`TapQuantEnvV0`).
    """

    metadata = {"render_modes": []}
    obs_dim = OBS_DIM

    def __init__(self, problem: TapProblem | None = None, **config):
        super().__init__()
        self.problem = problem or shared_problem(ProblemConfig(**config))
        self.layers = self.problem.layers
        self.levels = self.problem.config.levels
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.problem.action_dim,), dtype=np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self.obs_dim,), dtype=np.float32)
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
                 [i / max(1, n_quant - 1), float(qnet.stages[i].kind == "conv"), float(qnet.stages[i].kind == "fc")],
                 [percentile_nonzero(st.counts, q) / 255 for q in TAIL]]
        return np.clip(np.concatenate(feats), 0.0, 1.0).astype(np.float32)

    def _obs(self) -> np.ndarray:
        prev = np.zeros(N_PARAMS, dtype=np.float32)
        if self._params:
            p = self._params[-1]
            m = p.K - 1
            prev[:] = [p.b1 / p.tmax, p.b2 / p.tmax, p.n1 / m, p.n2 / m, p.n3 / m, p.tmax / 255]
        static = self._static[self._t]  # layer features, then the tail
        obs = np.concatenate([static[:-len(TAIL)], prev, static[-len(TAIL):]])
        return np.clip(obs[:self.obs_dim], 0.0, 1.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # the env itself draws no random numbers
        self._t = 0
        self._params = []
        return self._obs(), {"layer": self.layers[0]}

    def step(self, action):
        if self._t >= len(self.layers):
            raise RuntimeError("step() called after the episode ended; call reset()")
        name = self.layers[self._t]
        params = self.problem.decode(name, action)
        self._params.append(params)
        info = {"layer": name, "params": params.as_dict()}
        self._t += 1
        if self._t < len(self.layers):
            return self._obs(), 0.0, False, False, info
        info.update(self.problem.score_params(dict(zip(self.layers, self._params))))
        # The final observation is never acted on; repeat the last layer's features.
        self._t -= 1
        obs = self._obs()
        self._t += 1
        return obs, float(info["reward"]), True, False, info


class TapQuantEnvV0(TapQuantEnv):
    """The guide's environment (`TapQuant-<Model>-v0`): registered with `tmax_rule="guide"`; the
    observation is TapQuantEnv's first 29 features (no previous clip, no tail); see its Version History."""

    obs_dim = OBS_DIM - 1 - len(TAIL)
