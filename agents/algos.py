"""The learners `--algo` can pick, with defaults that suit short (4-step) episodes.

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
from pathlib import Path

import yaml

from models.errors import UserError

ALGOS = ["ppo", "a2c", "sac", "td3", "ddpg", "trpo", "random", "analytic", "greedy", "tpe"]

# Episodes are 4 steps with one terminal reward: gamma = 1 (the return is the
# configuration's score). PPO: 16-episode rollouts and lr 3e-3, so 1000
# episodes give ~60 updates; on LeNet-5 this beat 32-episode rollouts at lr
# 1e-3 on the best search reward for each of 3 seeds (benchmarks/README.md).
# Off-policy replay buffers hold 20,000 steps (5,000 LeNet-5 episodes) rather than SB3's 1,000,000: the same
# learner for searches that size, and a checkpoint of megabytes, not hundreds.
OFF_POLICY_BUFFER = 20_000

DEFAULTS = {
    "ppo": dict(n_steps=64, batch_size=64, n_epochs=10, learning_rate=3e-3, gamma=1.0, gae_lambda=1.0,
                ent_coef=0.0, policy_kwargs=dict(net_arch=[64, 64], log_std_init=-0.5)),
    "a2c": dict(n_steps=8, learning_rate=1e-3, gamma=1.0, gae_lambda=1.0,
                policy_kwargs=dict(net_arch=[64, 64], log_std_init=-0.5)),
    "trpo": dict(n_steps=128, batch_size=64, learning_rate=1e-3, gamma=1.0, gae_lambda=1.0,
                 policy_kwargs=dict(net_arch=[64, 64], log_std_init=-0.5)),
    "sac": dict(learning_starts=200, buffer_size=OFF_POLICY_BUFFER, batch_size=64, gamma=1.0, train_freq=4,
                gradient_steps=4, learning_rate=1e-3, policy_kwargs=dict(net_arch=[64, 64])),
    "td3": dict(learning_starts=200, buffer_size=OFF_POLICY_BUFFER, batch_size=64, gamma=1.0, train_freq=4,
                gradient_steps=4, learning_rate=1e-3, policy_kwargs=dict(net_arch=[64, 64])),
    "ddpg": dict(learning_starts=200, buffer_size=OFF_POLICY_BUFFER, batch_size=64, gamma=1.0, train_freq=4,
                gradient_steps=4, learning_rate=1e-3, policy_kwargs=dict(net_arch=[64, 64])),
    "random": {},
    "analytic": {},  # agents/baselines.py: no learner
    "greedy": {},
    "tpe": {},
}


def algo_class(name: str):
    if name == "trpo":
        from sb3_contrib import TRPO
        return TRPO
    import stable_baselines3 as sb3
    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3, "ddpg": sb3.DDPG}[name]


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
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS[algo].items()}
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
