"""The algorithms `--algo` can pick (the registry), with defaults that suit short (4-step) episodes.

Hyperparameters can be overridden from a YAML file in RL Zoo's style:

    lenet5:            # or the env id, or "default"
      n_steps: 256
      learning_rate: 0.001
      policy_kwargs: "dict(net_arch=[64, 64])"

Keys are passed to the SB3 constructor as they are; `policy_kwargs` may be a
dict or a Zoo-style "dict(...)" string.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common.errors import UserError


@dataclass(frozen=True)
class AlgoSpec:
    """One `--algo`: adding an algorithm is its own code plus one entry in ALGOS; the search's dispatch,
    choices and help text derive from here.

    A learner is an SB3-style class ("module:Class", imported when used) driven by `learn()` on the
    registered env; a learner-free search is a function ("module:function") called as
    `run(problem, env, tracker, seed, saved)`: `env` is the vec env when `needs_env` (else None), `saved`
    what it left in the last checkpoint through `tracker.algo_state` (else None).
    """

    name: str
    help: str
    learner: str | None = None
    runner: str | None = None
    needs_env: bool = True
    defaults: dict = field(default_factory=dict)  # constructor keywords (learners), overridable by --hyperparams

    def load(self):
        """The learner class or the runner function."""
        module, attr = (self.learner or self.runner).split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as e:
            raise UserError(f"--algo {self.name} needs {e.name}: pip install -e . installs it") from None


# Episodes are 4 steps with one terminal reward: gamma = 1 (the return is the
# configuration's score). PPO: 16-episode rollouts and lr 3e-3, so 1000
# episodes give ~60 updates; on LeNet-5 this beat 32-episode rollouts at lr
# 1e-3 on the best search reward for each of 3 seeds (benchmarks/README.md).
_ON_POLICY = dict(gamma=1.0, gae_lambda=1.0)
_POLICY = dict(net_arch=[64, 64], log_std_init=-0.5)
# Off-policy replay buffers hold 20,000 steps (5,000 LeNet-5 episodes) rather than SB3's 1,000,000: the same
# learner for searches that size, and a checkpoint of megabytes, not hundreds.
_OFF_POLICY = dict(learning_starts=200, buffer_size=20_000, batch_size=64, gamma=1.0, train_freq=4,
                   gradient_steps=4, learning_rate=1e-3, policy_kwargs=dict(net_arch=[64, 64]))

ALGOS = {a.name: a for a in (
    AlgoSpec("ppo", "SB3's PPO (the default)", learner="stable_baselines3:PPO",
             defaults=dict(n_steps=64, batch_size=64, n_epochs=10, learning_rate=3e-3, ent_coef=0.0, **_ON_POLICY,
                           policy_kwargs=_POLICY)),
    AlgoSpec("a2c", "SB3's A2C", learner="stable_baselines3:A2C",
             defaults=dict(n_steps=8, learning_rate=1e-3, **_ON_POLICY, policy_kwargs=_POLICY)),
    AlgoSpec("sac", "SB3's SAC", learner="stable_baselines3:SAC", defaults=_OFF_POLICY),
    AlgoSpec("td3", "SB3's TD3", learner="stable_baselines3:TD3", defaults=_OFF_POLICY),
    AlgoSpec("ddpg", "SB3's DDPG", learner="stable_baselines3:DDPG", defaults=_OFF_POLICY),
    AlgoSpec("trpo", "sb3-contrib's TRPO", learner="sb3_contrib:TRPO",
             defaults=dict(n_steps=128, batch_size=64, learning_rate=1e-3, **_ON_POLICY, policy_kwargs=_POLICY)),
    AlgoSpec("random", "uniform random actions", runner="agents.baselines:run_random"),
    AlgoSpec("analytic", "least squared code error, no accuracy feedback", runner="agents.baselines:run_analytic",
             needs_env=False),
    AlgoSpec("greedy", "coordinate search from analytic", runner="agents.baselines:run_greedy", needs_env=False),
    AlgoSpec("tpe", "Optuna's TPE sampler", runner="agents.baselines:run_tpe", needs_env=False),
)}


def algo_help() -> str:
    return "; ".join(f"{a.name}: {a.help}" for a in ALGOS.values())


def _parse_policy_kwargs(value):
    if isinstance(value, dict) or value is None:
        return value
    text = str(value).strip()
    if text.startswith("dict(") and text.endswith(")"):
        # Zoo style "dict(a=1, b=[2])": parse the keyword arguments as literals, never eval.
        call = ast.parse(text, mode="eval").body
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    return ast.literal_eval(text)


def hyperparams(algo: str, model: str, env_id: str, yaml_path: str | None = None) -> dict:
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ALGOS[algo].defaults.items()}
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise UserError(f"hyperparameter file {path} not found")
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"hyperparameter file {path} is not valid YAML: {e}") from None
        if not isinstance(doc, dict):
            raise UserError(f"hyperparameter file {path} must map a model name, env id or 'default' to settings")
        section = doc.get(env_id, doc.get(model, doc.get("default", {}))) or {}
        if not isinstance(section, dict):
            raise UserError(f"hyperparameter file {path}: the {model} section must be a mapping")
        try:
            section = {k: (_parse_policy_kwargs(v) if k == "policy_kwargs" else v) for k, v in section.items()}
        except (ValueError, SyntaxError) as e:
            raise UserError(f"hyperparameter file {path}: cannot read policy_kwargs ({e})") from None
        params.update(section)
    return params
