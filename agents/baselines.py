"""Learner-free searches for the TAP search: `random`, `analytic`, `greedy` and `tpe`.

Each is called as run(problem, env, tracker, seed, saved) (agents/algos.py).

  * random: uniform random actions on the vec env: the baseline every RL
    search must beat.
  * analytic: per layer, the TAP whose table minimises the histogram-weighted
    squared code error, sum_c h[c] (T[c] - c)^2, over every parameter set the
    action decoder can produce (docs/tap.md section 4). No accuracy feedback:
    one scorer call, to report the configuration's score.
  * greedy: accuracy-in-the-loop coordinate search from the analytic tables.
    Each round tries, layer by layer, every one-step move of b1, b2, n1, n2
    (and the shift of one level between segments) and keeps the best
    improvement of the search reward, until the scorer-call budget is spent
    or no move improves.
  * tpe: Optuna's TPE sampler over the same 4 (with the search rule, 5)
    action numbers per layer that the RL agents choose, decoded the same way;
    one trial = one scorer call.

Why by hand (greedy): no library does coordinate search over this decoder's parameters.
The analytic TAP itself is quant/analytic.py.
"""

from __future__ import annotations

import numpy as np

from agents.resume import set_space_state, space_state
from common.errors import UserError
from quant.tap import TapParams


def neighbours(p: TapParams, move_clip: bool = False):
    """Valid TAPs one step away from p: b1 or b2 by +-1, or one level moved between two segments;
    with `move_clip`, also tmax by +-1 (the search rule's 5th decision)."""
    if move_clip:
        for t in (p.tmax - 1, p.tmax + 1):
            if p.b2 < t <= 255 and t >= p.K:
                yield TapParams(t, p.b1, p.b2, p.n1, p.n2, p.n3, p.K, False)
    if p.exact:
        return
    m = p.K - 1
    for db1, db2 in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        b1, b2 = p.b1 + db1, p.b2 + db2
        if 1 <= b1 < b2 < p.tmax:
            yield TapParams(p.tmax, b1, b2, p.n1, p.n2, p.n3, p.K, False)
    for d1, d2 in ((1, -1), (-1, 1), (0, 1), (0, -1), (1, 0), (-1, 0)):
        n1, n2 = p.n1 + d1, p.n2 + d2
        n3 = m - n1 - n2
        if min(n1, n2, n3) >= 1:
            yield TapParams(p.tmax, p.b1, p.b2, n1, n2, n3, p.K, False)


def run_analytic(problem, env, tracker, seed: int = 0, saved=None) -> None:
    tracker.on_episode(problem.score_params(problem.analytic), 1)


def run_greedy(problem, env, tracker, seed: int = 0, saved=None) -> None:
    """Coordinate search from the analytic tables; every scorer call is one episode of the budget.

    Layer by layer, it scores every neighbour of the layer's current TAP and
    moves to the best one if it beats the best reward so far; rounds repeat
    until a whole round improves nothing or the budget is spent.

    It is deterministic, so a resumed search replays its moves from the
    tracker's reward history (the first calls are answered from it, unscored)
    and needs no saved state of its own.
    """
    replay = list(tracker.rewards)

    def score(params: dict) -> dict:
        if replay:
            return {"reward": replay.pop(0)}
        info = problem.score_params(params)
        tracker.on_episode(info, tracker.episodes + 1)
        tracker.at_boundary()
        return info

    current = problem.analytic
    best = score(current)
    improved = True
    while improved and not tracker.finished:
        improved = False
        for name in problem.layers:
            tried = []
            for cand in neighbours(current[name], move_clip=problem.action_dim == 5):
                if tracker.finished:
                    return
                info = score({**current, name: cand})
                tried.append((info["reward"], cand))
            if tried and max(r for r, _ in tried) > best["reward"]:
                reward, cand = max(tried, key=lambda rc: rc[0])
                current = {**current, name: cand}
                best = {"reward": reward}
                improved = True


def run_tpe(problem, env, tracker, seed: int = 0, saved=None) -> None:
    """Optuna's TPE sampler (seeded) maximising the search reward, one trial per episode.

    The checkpoint holds the in-memory study (its trials and the sampler's
    generator), pickled as Optuna documents for saving a study; `saved` is it.
    """
    try:
        import optuna
    except ImportError:
        raise UserError("--algo tpe needs Optuna: pip install -e . (it is a dependency) or pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = saved or optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        tracker.algo_state = lambda: study
        while not tracker.finished:
            trial = study.ask()
            params = {n: problem.decode(n, [trial.suggest_float(f"{n}.a{k}", -1.0, 1.0)
                                            for k in range(problem.action_dim)])
                      for n in problem.layers}
            info = problem.score_params(params)
            study.tell(trial, info["reward"])
            tracker.on_episode(info, tracker.episodes + 1)
            tracker.at_boundary()
    except (optuna.exceptions.OptunaError, ValueError) as e:
        raise UserError(f"the TPE search (Optuna) failed: {e}; try another --seed or --algo random") from None


def run_random(problem, env, tracker, seed: int = 0, saved=None) -> None:
    """Uniform random actions: the baseline every RL search must beat.

    Every env plays its 4-step episode in lockstep, so after each step that
    ends them is a boundary; the checkpoint holds the action space's generator.
    """
    env.action_space.seed(seed)
    if saved is not None:
        set_space_state(env.action_space, saved)
    tracker.algo_state = lambda: space_state(env.action_space)
    env.reset()
    step = 0
    while not tracker.finished:
        actions = np.stack([env.action_space.sample() for _ in range(env.num_envs)])
        _, _, dones, infos = env.step(actions)
        step += env.num_envs
        tracker.update(infos, dones, step)
        if all(dones):
            tracker.at_boundary()
