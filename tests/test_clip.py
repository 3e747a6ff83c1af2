"""The clip as a decision: tmax rules, the exact joint minimiser, the 5-number action (quant/clip.py)."""

import itertools
import warnings

import gymnasium as gym
import numpy as np
import pytest

from envs.config import ProblemConfig
from envs.problem import TapProblem
from common.errors import UserError
from quant.analytic import AnalyticSolver, analytic_params, table_error
from quant.clip import check_rule, decode_clip, encode_clip, rule_tmax
from quant.histogram import tmax_from_counts
from quant.tap import TapParams, build_table, encode_action, rnd
from tests.test_env import env_kwargs


def every_tap(tmax: int, levels: int):
    """Every decodable TAP with clip `tmax`, in (b1, b2, n1, n2) order."""
    m = levels - 1
    for b1, b2 in itertools.combinations(range(1, tmax), 2):
        for n1 in range(1, m - 1):
            for n2 in range(1, m - n1):
                yield TapParams(tmax, b1, b2, n1, n2, m - n1 - n2, levels, False)


@pytest.mark.parametrize("tmax,levels,seed", [(14, 6, 0), (11, 5, 1), (9, 4, 2)])
def test_fixed_clip_is_the_first_least_error_tap_of_a_brute_force(tmax, levels, seed):
    """Same parameters as enumerating every TAP in order and keeping the first least error (the rule the
    guide clip's tables have always used), on histograms with many ties."""
    rng = np.random.default_rng(seed)
    for counts in (rng.integers(0, 3, 256), rng.integers(0, 500, 256)):
        errors = [(table_error(counts, p), p) for p in every_tap(tmax, levels)]
        least = min(e for e, _ in errors)
        first = next(p for e, p in errors if e == least)
        assert analytic_params(counts, tmax, levels) == first


@pytest.mark.parametrize("levels", [4, 5, 8])
def test_joint_minimiser_equals_brute_force_over_clip_and_table(levels):
    """Codes live in 1..12, so a clip above 24 only wastes levels; brute force over clips 1..24 and every TAP."""
    rng = np.random.default_rng(levels)
    counts = np.zeros(256, dtype=np.int64)
    counts[:13] = rng.integers(0, 200, 13)
    solver = AnalyticSolver(counts, levels)
    best = min(table_error(counts, solver.params_at(t)) for t in range(1, levels))  # the exact identities
    for t in range(max(levels, 4), 25):
        best = min([best] + [table_error(counts, p) for p in every_tap(t, levels)])
    joint = solver.joint()
    assert table_error(counts, joint) == best
    errs = solver.errors_by_clip()
    assert all(errs[t] == table_error(counts, solver.params_at(t)) for t in range(1, 256))
    assert joint.tmax == int(np.argmin(errs))


def test_rules():
    counts = np.zeros(256, dtype=np.int64)
    counts[0], counts[1:201] = 1000, 1  # non-zero codes 1..200, uniform
    assert rule_tmax("guide", counts, 16) == tmax_from_counts(counts) == 190
    assert rule_tmax("p50", counts, 16) == 100 and rule_tmax("p100", counts, 16) == 200
    assert rule_tmax("mse", counts, 16) == AnalyticSolver(counts, 16).joint().tmax
    assert rule_tmax("search", counts, 16) == rule_tmax("mse", counts, 16)
    for bad in ("p0", "p100.5", "max", "p", "P99"):
        with pytest.raises(ValueError, match="unknown tmax rule"):
            check_rule(bad)
    with pytest.raises(ValueError, match="never fires"):
        rule_tmax("mse", np.eye(256, dtype=np.int64)[0] * 50, 16)


def test_clip_action_round_trip():
    for anchor in (5, 37, 128, 200):
        for t in range(max(1, -(-anchor // 2)), min(255, 2 * anchor) + 1):
            assert decode_clip(encode_clip(t, anchor), anchor) == t
        assert decode_clip(0.0, anchor) == anchor
        assert decode_clip(-1.0, anchor) == max(1, rnd(anchor / 2)) and decode_clip(1.0, anchor) == min(255, 2 * anchor)


@pytest.fixture(scope="module")
def problems(tiny_teacher, tiny_tar, cache_dir):
    kw = env_kwargs(tiny_teacher, tiny_tar, cache_dir, levels=8)
    return {rule: TapProblem(ProblemConfig(tmax_rule=rule, **kw)) for rule in ("guide", "mse", "search")}


def test_search_rule_decodes_five_numbers_around_the_joint_minimiser(problems):
    mse, srch = problems["mse"], problems["search"]
    assert srch.action_dim == 5 and mse.action_dim == 4
    for name in srch.layers:
        assert srch.analytic[name] == mse.analytic[name]  # the anchor is mse's joint (tmax, table)
        assert srch.decode(name, np.zeros(5)) == mse.analytic[name]
        # the clip moves, and the other four numbers then correct the least-error TAP at that clip
        moved = srch.decode(name, [0, 0, 0, 0, 1.0])
        assert moved.tmax == decode_clip(1.0, mse.stats[name].tmax)
        assert moved == srch.solvers[name].params_at(moved.tmax)
        with pytest.raises(ValueError, match="5 numbers"):
            srch.decode(name, np.zeros(4))


def test_search_rule_round_trip_without_anchor(tiny_teacher, tiny_tar, cache_dir):
    p = TapProblem(ProblemConfig(tmax_rule="search", anchor="none",
                                 **env_kwargs(tiny_teacher, tiny_tar, cache_dir, levels=8)))
    for name in p.layers:
        anchor = p.stats[name].tmax
        for t in (max(8, anchor // 2 + 1), anchor, min(255, 2 * anchor - 1)):
            want = p.solvers[name].params_at(t)
            action = np.append(encode_action(want), encode_clip(t, anchor))
            assert p.decode(name, action) == want


def test_guide_rule_keeps_the_p90_clip_and_its_tables(problems):
    guide = problems["guide"]
    for name in guide.layers:
        st = guide.stats[name]
        assert st.tmax == tmax_from_counts(st.counts)
        assert np.array_equal(build_table(guide.analytic[name]),
                              build_table(analytic_params(st.counts, st.tmax, 8)))


@pytest.mark.parametrize("rule", ["guide", "mse", "p99.9", "search"])
def test_env_checkers_pass_on_every_rule(rule, tiny_teacher, tiny_tar, cache_dir):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = gym.make("TapQuant-LeNet5-v1", **env_kwargs(tiny_teacher, tiny_tar, cache_dir, tmax_rule=rule,
                                                      search_size=20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check(env.unwrapped, skip_render_check=True)
        sb3_check(env.unwrapped, warn=True)
    assert env.action_space.shape == ((5,) if rule == "search" else (4,))
    env.reset(seed=0)
    for _ in range(4):
        _, r, term, _, info = env.step(env.action_space.sample())
    assert term and np.isfinite(r) and all(len(c["table"]) == 256 for c in info["config"].values())


@pytest.mark.parametrize("rule", ["p0", "p101", "clip", ""])
def test_a_bad_rule_is_one_error_before_any_work(rule):
    with pytest.raises(UserError, match="unknown tmax rule"):
        ProblemConfig(tmax_rule=rule, teacher="/nonexistent.pth")
