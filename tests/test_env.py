import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import ENV_IDS
from envs.config import ProblemConfig
from envs.problem import TapProblem
from envs.tap_env import OBS_DIM, TapQuantEnv
from models import build_model, quant_layer_names
from models.checkpoint import save_checkpoint
from common.errors import UserError
from quant.kernels import int8_kernels_available
from quant.qat import QuantNet
from quant.tap import identity_table


needs_int8 = pytest.mark.skipif(not int8_kernels_available(), reason="no oneDNN int8 kernels in this PyTorch build")


def env_kwargs(out_dir, data, cache, **kw):
    base = dict(out_dir=str(out_dir), data=str(data), cache_dir=str(cache), search_size=60, calib_batches=2)
    base.update(kw)
    return base


def test_gym_make_registered_id(tiny_teacher, tiny_tar, cache_dir):
    env = gym.make("TapQuant-LeNet5-v1", **env_kwargs(tiny_teacher, tiny_tar, cache_dir))
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["layer"] == "conv1"
    assert env.spec.max_episode_steps == 4
    rewards = []
    for t in range(4):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        rewards.append(r)
        # TimeLimit (max_episode_steps = 4) also flags the 4th step as truncated;
        # SB3 only bootstraps when truncated and not terminated.
        assert term == (t == 3) and (not trunc or t == 3)
    assert rewards[:3] == [0.0, 0.0, 0.0]
    for key in ("drop", "att", "att_per_layer", "acc_teacher", "acc_student", "reward", "config"):
        assert key in info
    assert rewards[3] == pytest.approx(-(info["drop"] + 50.0 * info["att"]))
    assert set(info["config"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert all(len(c["table"]) == 256 for c in info["config"].values())
    assert set(info["att_per_layer"]) == {"conv2", "fc1"}


def test_envs_prefix_form_works(tiny_teacher, tiny_tar, cache_dir):
    env = gym.make("envs:TapQuant-LeNet5-v1", **env_kwargs(tiny_teacher, tiny_tar, cache_dir))
    assert env.reset()[0].shape == env.observation_space.shape


def test_v0_is_the_guides_env_and_v1_extends_its_observation(tiny_teacher, tiny_tar, cache_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Gymnasium: v0 is out of date
        v0 = gym.make("TapQuant-LeNet5-v0", **env_kwargs(tiny_teacher, tiny_tar, cache_dir))
    v1 = gym.make("TapQuant-LeNet5-v1", **env_kwargs(tiny_teacher, tiny_tar, cache_dir, tmax_rule="guide"))
    assert v0.unwrapped.problem.config.tmax_rule == "guide"
    assert v0.observation_space.shape == (29,) and v1.observation_space.shape == (OBS_DIM,) == (33,)
    a, b = v0.reset()[0], v1.reset()[0]
    assert np.array_equal(a, b[:29])  # v1 appends the previous clip and the tail
    action = np.array([0.2, -0.4, 0.1, 0.6], dtype=np.float32)
    a, b = v0.step(action)[0], v1.step(action)[0]
    assert np.array_equal(a, b[:29]) and b[29] == pytest.approx(v1.unwrapped.problem.stats["conv1"].tmax / 255)


def random_weight_teacher(model: str, out_dir) -> None:
    """An untrained (random-weight, calibrated) INT8 teacher of `model`, saved where the env looks."""
    torch.manual_seed(0)
    q = QuantNet(build_model(model, "none"))
    q.calibrate([(torch.randn(8, 3, 32, 32), None)])
    save_checkpoint(out_dir / f"{model}_qat_preconvert.pth", model, "qat", q.state_dict(),
                    {"complete": True, "epochs": 0, "epochs_done": 0})


@pytest.fixture(scope="module")
def teachers(tiny_teacher, tmp_path_factory) -> dict:
    """out_dir per model: LeNet-5's trained tiny teacher, random-weight ones for the others."""
    out = {"lenet5": tiny_teacher}
    for model in ENV_IDS:
        if model != "lenet5":
            out[model] = tmp_path_factory.mktemp(model)
            random_weight_teacher(model, out[model])
    return out


@pytest.mark.parametrize("model", list(ENV_IDS))
def test_every_registered_id_passes_both_env_checkers_and_rolls_out(model, teachers, tiny_tar, cache_dir):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    kw = env_kwargs(teachers[model], tiny_tar, cache_dir, search_size=20, calib_batches=1)
    env = gym.make(ENV_IDS[model], **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check(env.unwrapped, skip_render_check=True)
        sb3_check(env.unwrapped, warn=True)
    n_layers = len(quant_layer_names(model))
    assert env.spec.max_episode_steps == n_layers
    obs, _ = env.reset(seed=0)
    steps, term = 0, False
    while not term:
        assert env.observation_space.contains(obs)
        obs, r, term, _, info = env.step(env.action_space.sample())
        steps += 1
    assert steps == n_layers and np.isfinite(r) and set(info["config"]) == set(quant_layer_names(model))
    assert r == pytest.approx(-(info["drop"] + 50.0 * info["att"]))


def test_two_independent_problems_give_the_same_episodes(tiny_teacher, tiny_tar, cache_dir):
    """Each env builds its own TapProblem (no shared memo or cache): same observations, rewards, infos."""
    def run(seed):
        env = TapQuantEnv(problem=TapProblem(ProblemConfig(**env_kwargs(tiny_teacher, tiny_tar, cache_dir))))
        env.action_space.seed(seed)
        obs, infos, rewards = [env.reset(seed=seed)[0]], [], []
        for _ in range(3):  # three episodes
            for _ in range(4):
                o, r, term, _, info = env.step(env.action_space.sample())
                obs.append(o)
            rewards.append(r)
            infos.append({k: info[k] for k in ("acc_teacher", "acc_student", "drop", "att", "att_per_layer")})
            infos.append({n: c["table"].tolist() for n, c in info["config"].items()})
            env.reset()
        return np.stack(obs), rewards, infos, env.problem

    obs_a, rew_a, info_a, prob_a = run(3)
    obs_b, rew_b, info_b, prob_b = run(3)
    assert prob_a is not prob_b
    assert np.array_equal(obs_a, obs_b) and rew_a == rew_b and info_a == info_b


def test_the_documented_observation_table_has_a_row_per_feature():
    rows = [line.split("|")[1].strip() for line in TapQuantEnv.__doc__.splitlines()
            if line.strip().startswith("|") and line.split("|")[1].strip().isdigit()]
    assert [int(r) for r in rows] == list(range(OBS_DIM))


def test_the_documented_arguments_are_the_config_fields():
    from dataclasses import fields

    doc = TapQuantEnv.__doc__
    documented = {line.split("|")[1].strip().strip("`") for line in doc[doc.index("## Arguments"):].splitlines()
                  if line.strip().startswith("| `")}
    assert documented == {f.name for f in fields(ProblemConfig)} | {"problem"}


@pytest.mark.parametrize("backend", ["float", pytest.param("int8", marks=needs_int8)])
def test_identity_tables_score_exactly_as_teacher(backend, tiny_teacher, tiny_tar, cache_dir):
    p = TapProblem(**env_kwargs(tiny_teacher, tiny_tar, cache_dir, backend=backend))
    ident = {n: identity_table() for n in p.layers}
    s = p.score_uncached(ident)  # bypass the memo: really run the student
    assert s.drop == 0.0 and s.att == 0.0 and s.acc_student == p.acc_teacher
    # and the scorer agrees with a plain full forward of the student model
    harsh = {n: np.minimum(np.arange(256), 2).astype(np.uint8) for n in p.layers}
    fast = p.score_uncached(harsh)
    from models.data import load_cifar10
    from models.metrics import accuracy
    d = load_cifar10(tiny_tar, cache_dir)
    x, y = d.train_x[p.search_idx], d.train_y[p.search_idx]
    full = accuracy(p.qnet, x, y, "cpu", tables={n: torch.tensor(t).float() for n, t in harsh.items()})
    # The int8 kernels may round a code differently from the float simulation
    # (quant/kernels.py): a few in a million, far below one image in 60.
    assert fast.acc_student == pytest.approx(full)
    assert fast.att > 0


def test_conv_only_layers(tiny_teacher, tiny_tar, cache_dir):
    env = TapQuantEnv(**env_kwargs(tiny_teacher, tiny_tar, cache_dir, layers=["conv2", "conv1"]))
    assert env.layers == ["conv1", "conv2"]
    env.reset(seed=0)
    env.step(env.action_space.sample())
    _, _, term, _, info = env.step(env.action_space.sample())
    assert term and set(info["config"]) == {"conv1", "conv2"}


def test_a_backend_the_device_cannot_run_is_a_clear_error(tiny_teacher, tiny_tar, cache_dir):
    with pytest.raises(UserError, match="auto, int8 or float"):
        TapProblem(**env_kwargs(tiny_teacher, tiny_tar, cache_dir, backend="fast"))


def test_missing_teacher_names_the_command(tmp_path, tiny_tar, cache_dir):
    with pytest.raises(UserError, match="python train_baselines.py qat --model lenet5"):
        TapQuantEnv(**env_kwargs(tmp_path, tiny_tar, cache_dir))


def test_the_reward_uses_the_configured_weights(tiny_teacher, tiny_tar, cache_dir):
    from envs.reward import guide_reward

    env = TapQuantEnv(**env_kwargs(tiny_teacher, tiny_tar, cache_dir, levels=4, attention_weight=7.0, kl_weight=3.0))
    env.reset(seed=0)
    for _ in range(4):
        _, r, term, _, info = env.step(np.full(4, -1.0, dtype=np.float32))  # a harsh table: every term > 0
    assert term and info["att"] > 0 and info["kl"] > 0
    assert r == pytest.approx(-(info["drop"] + 7.0 * info["att"] + 3.0 * info["kl"]))
    assert r == guide_reward(info["drop"], info["att"], 7.0, info["kl"], 3.0)
