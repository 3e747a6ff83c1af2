"""Per-layer K under a bit budget: the arithmetic, the exact knapsack, the env, the searches, the command."""

import itertools
import json

import gymnasium as gym
import pytest
from hypothesis import given, settings, strategies as st

from agents import allocate
from envs.mixed import MixedKEnv
from quant.budget import allocations, average_bits, clamp_to_budget, cost, knapsack
from tests.test_env import env_kwargs

LENET5 = {"conv1": 1176, "conv2": 400, "fc1": 120, "fc2": 84}  # stored (pooled) activations per image
LAYERS = list(LENET5)
KS = (4, 8, 16, 32)


def test_budget_arithmetic_by_hand():
    # (8, 16, 32, 32): 1176*3 + 400*4 + 120*5 + 84*5 = 6148 bits over 1780 activations
    alloc = dict(zip(LAYERS, (8, 16, 32, 32)))
    assert cost(LENET5, alloc) == 6148
    assert average_bits(LENET5, alloc) == pytest.approx(6148 / 1780)
    assert average_bits(LENET5, dict.fromkeys(LAYERS, 8)) == 3.0
    # 3 bits: uniform 8 is on the frontier (no layer can go up a notch); 3.5 bits allow (8, 16, 32, 32)
    assert dict.fromkeys(LAYERS, 8) in list(allocations(LENET5, LAYERS, KS, 3.0, frontier=True))
    assert alloc in list(allocations(LENET5, LAYERS, KS, 3.5, frontier=True))
    assert all(average_bits(LENET5, a) <= 2.5 for a in allocations(LENET5, LAYERS, KS, 2.5))


def test_greedy_gives_back_the_bits_its_last_removal_freed():
    # a (10 activations) goes 32 -> 16 first (0.01 per bit), then b (100) 16 -> 8 frees 100 bits where 60 were
    # needed: a goes back to 32 (50 + 300 = 350 <= 400 bits), the allocation the removal alone would miss.
    loss = {"a": {4: 0.9, 8: 0.3, 16: 0.1, 32: 0.0}, "b": {4: 5.0, 8: 1.6, 16: 1.5, 32: 0.0}}
    assert allocate.greedy_removal({"a": 10, "b": 100}, ["a", "b"], KS, 400 / 110, loss) == {"a": 32, "b": 8}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=5), st.floats(2.0, 5.0),
       st.data())
def test_knapsack_matches_brute_force(sizes, budget, data):
    el = {f"l{i}": s for i, s in enumerate(sizes)}
    layers = list(el)
    loss = {n: {k: data.draw(st.floats(0, 10)) for k in KS} for n in layers}
    best = min((sum(loss[n][k] for n, k in zip(layers, ks)) for ks in itertools.product(KS, repeat=len(layers))
                if average_bits(el, dict(zip(layers, ks))) <= budget), default=None)
    got = knapsack(el, layers, KS, budget, loss)
    assert average_bits(el, got) <= budget + 1e-12
    assert sum(loss[n][k] for n, k in got.items()) == pytest.approx(best)


@settings(max_examples=60, deadline=None)
@given(st.floats(2.0, 5.0), st.lists(st.sampled_from(KS), min_size=4, max_size=4))
def test_every_clamped_episode_meets_the_budget(budget, wanted):
    done = {}
    for n, k in zip(LAYERS, wanted):
        done[n] = clamp_to_budget(LENET5, LAYERS, done, n, k, KS, budget)
        assert done[n] <= k
    assert average_bits(LENET5, done) <= budget + 1e-9
    if average_bits(LENET5, dict(zip(LAYERS, wanted))) <= budget:
        assert done == dict(zip(LAYERS, wanted))  # a choice that fits is kept as it is


class Planted:
    """A scorer with one planted best allocation: reward = -(distance of each K from the planted one)."""

    def __init__(self, planted):
        self.elements, self.layers, self.allowed, self.planted, self.calls = LENET5, LAYERS, KS, planted, 0

    def score(self, alloc):
        self.calls += 1
        return {"levels": dict(alloc), "reward": -sum(abs(KS.index(alloc[n]) - KS.index(k))
                                                      for n, k in self.planted.items() if n in alloc)}


def test_exhaustive_finds_a_planted_optimum():
    planted = dict(zip(LAYERS, (4, 8, 32, 16)))  # 2.52 bits, inside a 2.6-bit budget
    cfg = allocate.AllocateConfig(algo="exhaustive", no_progress=True)
    best, rewards = allocate.search(cfg, Planted(planted), 2.6)
    assert best["levels"] == planted and best["reward"] == 0
    assert len(rewards) == len(list(allocations(LENET5, LAYERS, KS, 2.6)))


@pytest.fixture(scope="module")
def mixed_env(tiny_teacher, tiny_tar, cache_dir):
    return gym.make("TapQuant-LeNet5-Mixed-v0", bit_budget=2.5, **env_kwargs(tiny_teacher, tiny_tar, cache_dir))


def test_the_registered_mixed_env_passes_both_env_checkers_and_meets_the_budget(mixed_env):
    import warnings

    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = mixed_env.unwrapped
    assert isinstance(env, MixedKEnv) and env.mixed.elements == LENET5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check(env, skip_render_check=True)
        sb3_check(env, warn=True)
    assert mixed_env.spec.max_episode_steps == 4
    mixed_env.action_space.seed(0)
    for _ in range(5):
        obs, _ = mixed_env.reset()
        for t in range(4):
            assert mixed_env.observation_space.contains(obs)
            obs, reward, term, _, info = mixed_env.step(mixed_env.action_space.sample())
        assert term and info["average_bits"] <= 2.5 and reward == info["reward"]
        assert set(info["levels"]) == set(LAYERS)


def test_ppo_and_the_baselines_meet_the_budget(mixed_env):
    mixed = mixed_env.unwrapped.mixed
    exact, _ = allocate.search(allocate.AllocateConfig(algo="exhaustive", no_progress=True), mixed, 3.5)
    for algo in ("ppo", "knapsack", "greedy", "uniform", "tpe"):
        best, rewards = allocate.search(allocate.AllocateConfig(algo=algo, episodes=64), mixed, 3.5)
        assert average_bits(LENET5, best["levels"]) <= 3.5
        assert best["reward"] <= exact["reward"]  # the exhaustive search is the referee
    assert len(rewards) == 64


def test_the_command_writes_a_result_evaluate_reads(tiny_teacher, tiny_tar, cache_dir, capsys):
    from agents.evaluate import evaluate_result

    common = ["--out-dir", str(tiny_teacher), "--data", str(tiny_tar), "--cache-dir", str(cache_dir),
              "--search-size", "60", "--calib-batches", "2"]
    assert allocate.main(["--levels", "conv1=4,conv2=8,fc1=32,fc2=32", "--result-file", "fixed.json", *common]) == 0
    path = tiny_teacher / "tri_ppo_int_codes" / "fixed.json"
    res = json.loads(path.read_text())
    assert res["levels"] == {"conv1": 4, "conv2": 8, "fc1": 32, "fc2": 32}
    assert res["average_bits"] == pytest.approx((1176 * 2 + 400 * 3 + 204 * 5) / 1780, abs=1e-4)
    assert {n: c["K"] for n, c in res["best"]["config"].items()} == res["levels"]
    out = evaluate_result(path, data=str(tiny_tar), cache_dir=str(cache_dir), verbose=True)
    assert "K=conv1=4,conv2=8,fc1=32,fc2=32" in capsys.readouterr().out and 0 <= out["student"] <= 100
    # the student fine-tuned with those tables, as for any result
    from train_baselines import main as train_main
    assert train_main(["student", "--config-path", str(path), "--epochs", "1", "--data", str(tiny_tar),
                       "--cache-dir", str(cache_dir), "--out-dir", str(tiny_teacher), "--no-progress"]) == 0
    student = tiny_teacher / "lenet5_student_fixed.pth"
    assert 0 <= evaluate_result(path, data=str(tiny_tar), cache_dir=str(cache_dir), student=str(student),
                                verbose=False)["student"] <= 100


def test_the_search_takes_each_layers_k_and_gives_the_allocations_tables(tiny_teacher, tiny_tar, cache_dir):
    """agents.search --levels conv1=4,...: each layer's table at its own K; the analytic tables are the ones
    agents.allocate applies to the same allocation, and the env takes the same as a dict."""
    from agents import search

    common = ["--out-dir", str(tiny_teacher), "--data", str(tiny_tar), "--cache-dir", str(cache_dir),
              "--search-size", "60", "--calib-batches", "2"]
    levels = "conv1=4,conv2=8,fc1=32,fc2=16"
    assert search.main(["--algo", "analytic", "--levels", levels, "--no-progress", *common]) == 0
    written, = (tiny_teacher / "tri_ppo_int_codes").glob("lenet5_analytic_K4-8-32-16_*result.json")
    res = json.loads(written.read_text())
    assert res["levels"] == {"conv1": 4, "conv2": 8, "fc1": 32, "fc2": 16}
    assert {n: c["K"] for n, c in res["best"]["config"].items()} == res["levels"]
    assert allocate.main(["--levels", levels, "--result-file", "same.json", *common]) == 0
    same = json.loads((tiny_teacher / "tri_ppo_int_codes" / "same.json").read_text())
    assert {n: c["table"] for n, c in res["best"]["config"].items()} == \
        {n: c["table"] for n, c in same["best"]["config"].items()}
    env = gym.make("TapQuant-LeNet5-v1", **env_kwargs(tiny_teacher, tiny_tar, cache_dir,
                                                      levels={"conv1": 4, "conv2": 8, "fc1": 32, "fc2": 16}))
    env.reset(seed=0)
    for _ in range(4):
        *_, info = env.step(env.action_space.sample() * 0)
    assert {n: c["K"] for n, c in info["config"].items()} == res["levels"]


@pytest.mark.parametrize("flags, says", [
    (["--levels", "conv1=8,conv2=8,fc1=8,fc9=8"], "no approximated layer 'fc9'"),
    (["--levels", "conv1=8,conv2=8,fc1=8,fc2=12"], "K must be one of 4,8,16,32"),
    (["--bit-budget", "1.5"], "outside 2..8"),
    (["--bit-budget", "9"], "outside 2..8"),
    (["--levels", "conv1=32,conv2=8,fc1=8,fc2=8", "--bit-budget", "3"], "above --bit-budget 3"),
    (["--allowed-levels", "4,6"], "powers of 2"),
])
def test_bad_input_is_one_line(flags, says, tiny_teacher, tiny_tar, cache_dir, capsys):
    from common.cli import run_main

    argv = [*flags, "--out-dir", str(tiny_teacher), "--data", str(tiny_tar), "--cache-dir", str(cache_dir),
            "--search-size", "60", "--calib-batches", "2"]
    assert run_main(allocate.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not list((tiny_teacher / "tri_ppo_int_codes").glob("*mixed*"))
