"""The anchor (actions as corrections around the analytic tables) and the held-out confirmation of the choice."""

import json

import numpy as np
import pytest

from agents import search
from agents.selection import ALPHA, Selection
from common.cli import run_main
from common.errors import UserError
from tests.test_search import common


def test_zero_actions_decode_to_the_analytic_tables(tiny_teacher, tiny_tar, cache_dir):
    from envs.config import ProblemConfig
    from envs.problem import TapProblem
    from quant.tap import decode_action

    kw = dict(out_dir=str(tiny_teacher), data=str(tiny_tar), cache_dir=str(cache_dir), search_size=60,
              calib_batches=2, levels=8)
    anchored = TapProblem(ProblemConfig(**kw))
    for name, params in anchored.analytic.items():
        assert anchored.decode(name, np.zeros(4)) == params
        assert anchored.decode(name, np.ones(4)) != params or params.exact
    plain = TapProblem(ProblemConfig(anchor="none", **kw))
    a = np.array([0.3, -0.2, 0.5, -0.9])
    assert plain.decode("conv1", a) == decode_action(a, plain.stats["conv1"].tmax, 8)


def fake_selection(outcomes: dict[str, np.ndarray], anchor: np.ndarray) -> Selection:
    sel = Selection.__new__(Selection)  # no data: the test gives each configuration's per-image correctness
    sel.correct = lambda params: anchor if params == "anchor" else outcomes[params]
    return sel


def test_a_candidate_is_chosen_only_if_it_beats_the_anchor_significantly():
    rng = np.random.default_rng(0)
    n = 20000
    anchor = rng.random(n) < 0.75
    flip = rng.random(n)
    tie = anchor ^ (flip < 0.02)  # 2 % of images change either way: no real gain
    better = anchor | (flip < 0.02)  # only gains: +~0.5 pt, z >> 3
    sel = fake_selection({"tie": tie, "better": better}, anchor)
    idx, tests = sel.choose(["tie", "better"], "anchor")
    assert idx == 1 and tests[1]["p"] < ALPHA / 2 < tests[0]["p"]
    idx, _ = sel.choose(["tie"], "anchor")
    assert idx is None  # the anchor stays


def test_default_search_confirms_its_choice_on_held_out_images(tiny_teacher, tiny_tar, cache_dir):
    from agents.evaluate import evaluate_result

    assert run_main(search.main, ["--algo", "random", "--episodes", "30", "--levels", "8", "--result-file",
                                  "sel.json", *common(tiny_teacher, tiny_tar, cache_dir)]) == 0
    res = json.loads((tiny_teacher / "tri_ppo_int_codes" / "sel.json").read_text())
    sel = res["selection"]
    assert res["anchor"] == "analytic" and sel["images"] == 540 - 2 * 128 and len(sel["candidates"]) <= 5
    assert sel["chosen"] == "anchor" or sel["chosen"].startswith("candidate ")
    if sel["chosen"] == "anchor":  # the analytic tables, which the random search need never have visited
        assert res["best"]["episode"] is None
    ev = evaluate_result(tiny_teacher / "tri_ppo_int_codes" / "sel.json", data=tiny_tar, cache_dir=cache_dir,
                         verbose=False)
    assert 0 <= ev["student"] <= 100

    # Without an anchor, or with --select-size 0, the search split's best is the result (the guide's choice).
    for extra in (["--anchor", "none"], ["--select-size", "0"]):
        assert run_main(search.main, ["--algo", "random", "--episodes", "10", "--result-file", "plain.json", *extra,
                                      *common(tiny_teacher, tiny_tar, cache_dir)]) == 0
        plain = json.loads((tiny_teacher / "tri_ppo_int_codes" / "plain.json").read_text())
        assert plain["selection"] is None and plain["best"]["reward"] == max(plain["reward_history"])


def test_the_default_held_out_check_fits_in_memory(tiny_teacher, tiny_tar, cache_dir, monkeypatch, capsys):
    """A deep net's teacher codes for 20,000 images outgrow the machine: the default size is capped to half
    the memory free, and says so; with memory to spare it stays the default."""
    from agents import selection
    from envs.problem import TapProblem

    problem = TapProblem(out_dir=str(tiny_teacher), data=str(tiny_tar), cache_dir=str(cache_dir), search_size=60,
                         calib_batches=2)
    data = selection.load_cifar10(str(tiny_tar), str(cache_dir))
    assert selection.memory_cap(problem, data) >= selection.DEFAULT_SIZE
    page = 4096
    monkeypatch.setattr(selection.os, "sysconf", lambda name: page if name == "SC_PAGE_SIZE" else 10_000)
    cap = selection.memory_cap(problem, data)  # 41 MB free
    assert 1000 <= cap < selection.DEFAULT_SIZE and "held-out check uses" in capsys.readouterr().out


def test_too_many_selection_images_is_one_clear_error(tiny_teacher, tiny_tar, cache_dir):
    with pytest.raises(UserError, match="exceeds the 284 training images left after calibration"):
        search.main(["--algo", "random", "--episodes", "5", "--select-size", "100000",
                     *common(tiny_teacher, tiny_tar, cache_dir)])


def test_a_search_split_past_the_validation_images_takes_training_images_no_one_else_uses(tiny_teacher, tiny_tar,
                                                                                         cache_dir):
    from envs.config import ProblemConfig
    from envs.problem import CALIB_BATCH_SIZE, TapProblem
    from models.data import load_cifar10

    kw = dict(out_dir=str(tiny_teacher), data=str(tiny_tar), cache_dir=str(cache_dir), calib_batches=2, levels=8)
    problem = TapProblem(ProblemConfig(search_size=100, **kw))
    data = load_cifar10(tiny_tar, cache_dir)
    train_idx, val_idx = data.split()
    search = set(problem.search_idx.tolist())
    calibration = set(data.calibration_indices(2 * CALIB_BATCH_SIZE).tolist())
    sel = Selection(problem, None)
    selection = set(data.selection_indices(sel.size).tolist())
    assert len(search) == 100 and set(val_idx.tolist()) <= search and problem.search_train_images == 100 - len(val_idx)
    assert not search & calibration and not search & selection and sel.size == len(train_idx) - 2 * CALIB_BATCH_SIZE - 40
    with pytest.raises(UserError, match="exceeds the 60 validation images plus the 284 of 540 training images that "
                       r"calibration leaves \(it takes --calib-batches 2 x 128 = 256\); use --search-size 344"):
        TapProblem(ProblemConfig(search_size=60 + 285, **kw))
    with pytest.raises(UserError, match="--calib-batches 6 needs 768 calibration images, but the training split "
                       "holds 540; use --calib-batches 4 or fewer"):
        TapProblem(ProblemConfig(**{**kw, "calib_batches": 6}, search_size=100))
