import itertools

import numpy as np
import pytest

from agents import search
from agents.baselines import neighbours
from quant.analytic import analytic_params, table_error
from agents.evaluate import evaluate_result
from quant.result import read_result
from common.cli import run_main
from quant.tap import TapParams, build_table


@pytest.mark.parametrize("tmax,levels,seed", [(12, 6, 0), (17, 8, 1), (9, 5, 2)])
def test_analytic_equals_brute_force_over_every_decodable_tap(tmax, levels, seed):
    counts = np.random.default_rng(seed).integers(0, 1000, 256)
    m = levels - 1
    every = [TapParams(tmax, b1, b2, n1, n2, m - n1 - n2, levels, False)
             for b1, b2 in itertools.combinations(range(1, tmax), 2)
             for n1 in range(1, m - 1) for n2 in range(1, m - n1)]
    best = min(table_error(counts, p) for p in every)
    got = analytic_params(counts, tmax, levels)
    assert table_error(counts, got) == pytest.approx(best)
    assert got in every


def test_analytic_gives_the_identity_when_every_code_fits():
    p = analytic_params(np.ones(256), 10, 16)
    assert p.exact and build_table(p)[:11].tolist() == list(range(11))


def test_neighbours_are_valid_one_step_moves():
    p = TapParams(20, 5, 10, 3, 4, 8, 16, False)
    moves = list(neighbours(p))
    assert len(moves) == 10 and p not in moves
    for q in moves:
        assert 1 <= q.b1 < q.b2 < q.tmax and min(q.n1, q.n2, q.n3) >= 1 and q.n1 + q.n2 + q.n3 == 15
        assert abs(q.b1 - p.b1) + abs(q.b2 - p.b2) + abs(q.n1 - p.n1) + abs(q.n2 - p.n2) <= 2
        build_table(q)


@pytest.mark.parametrize("algo,episodes", [("analytic", 40), ("greedy", 40), ("tpe", 40)])
def test_baseline_writes_a_result_that_evaluate_accepts(algo, episodes, tiny_teacher, tiny_tar, cache_dir):
    common = ["--out-dir", str(tiny_teacher), "--data", str(tiny_tar), "--cache-dir", str(cache_dir),
              "--search-size", "60", "--calib-batches", "2", "--no-progress"]
    assert run_main(search.main, ["--algo", algo, "--episodes", str(episodes), "--levels", "8",
                                  "--result-file", f"{algo}.json", *common]) == 0
    path = tiny_teacher / "tri_ppo_int_codes" / f"{algo}.json"
    res = read_result(path)
    assert res["complete"] and res["algo"] == algo and res["backend"] in ("int8", "float")
    assert 1 <= res["episodes"] <= episodes and res["top"][0]["reward"] == pytest.approx(max(res["reward_history"]))
    if res["selection"] is None:  # analytic: its one configuration is the result
        assert res["best"]["reward"] == res["top"][0]["reward"]
    else:  # confirmed on held-out images: the anchor, or one of the search's best few
        assert res["selection"]["chosen"] == "anchor" or res["best"]["episode"] in [t["episode"] for t in res["top"]]
    if algo == "analytic":
        assert res["episodes"] == 1
    ev = evaluate_result(path, data=tiny_tar, cache_dir=cache_dir, verbose=False)
    assert ev["drop"] == pytest.approx(ev["teacher"] - ev["student"])
