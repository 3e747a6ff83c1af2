"""Learner-free baselines for the TAP search: `analytic`, `greedy` and `tpe`.

  * analytic: per layer, the TAP whose table minimises the histogram-weighted
    squared code error, sum_c h[c] (T[c] - c)^2, over every parameter set the
    action decoder can produce (docs/tap.md section 4). No accuracy feedback:
    one scorer call, to report the configuration's score.
  * greedy: accuracy-in-the-loop coordinate search from the analytic tables.
    Each round tries, layer by layer, every one-step move of b1, b2, n1, n2
    (and the shift of one level between segments) and keeps the best
    improvement of the search reward, until the scorer-call budget is spent
    or no move improves.
  * tpe: Optuna's TPE sampler over the same 4 action numbers per layer that
    the RL agents choose, decoded the same way; one trial = one scorer call.

Why by hand (analytic, greedy): the exact minimiser is a small dynamic-programming table, and no
library enumerates this decoder's parameter space.

The error of the codes in a segment (lo, hi] depends only on (lo, hi, n):
its levels are lo (the previous segment's last level, or code 0) and its own
n levels, the last at hi. So E[lo, hi, n] is computed once, and a TAP's
error is E[0, b1, n1] + E[b1, b2, n2] + E[b2, tmax, n3] plus the saturation
error above tmax, which is the same for every table.
"""

from __future__ import annotations

import numpy as np

from models.errors import UserError
from quant.tap import TapParams, build_table, decode_action, rnd


def segment_errors(counts: np.ndarray, tmax: int, max_levels: int) -> np.ndarray:
    """E[lo, hi, n]: histogram-weighted squared error of codes lo+1..hi with levels lo and n evenly spaced up to hi."""
    err = np.full((tmax + 1, tmax + 1, max_levels + 1), np.inf)
    for lo in range(tmax):
        for hi in range(lo + 1, tmax + 1):
            codes = np.arange(lo + 1, hi + 1)
            weight = counts[lo + 1: hi + 1]
            for n in range(1, max_levels + 1):
                levels = np.array(sorted({lo} | {rnd(lo + (hi - lo) * i / n) for i in range(1, n + 1)}))
                above = np.searchsorted(levels, codes, side="left")  # first level >= code
                below = levels[above - 1]
                up = levels[above]
                nearest = np.where(codes - below <= up - codes, below, up)  # ties to the lower level
                err[lo, hi, n] = float((weight * (nearest - codes) ** 2).sum())
    return err


def analytic_params(counts: np.ndarray, tmax: int, levels: int) -> TapParams:
    """The decodable TAP with the least histogram-weighted squared code error (ties: the first found)."""
    if tmax < levels or tmax < 4:  # every code fits: the table is the identity up to tmax
        return decode_action(np.zeros(4), tmax, levels)
    m = levels - 1
    err = segment_errors(np.asarray(counts, dtype=np.float64), tmax, m - 2)
    best, best_err = None, np.inf
    for b1 in range(1, tmax - 1):
        for b2 in range(b1 + 1, tmax):
            for n1 in range(1, m - 1):
                e1 = err[0, b1, n1]
                n2 = np.arange(1, m - n1)  # n2 = 1 .. M-n1-1, n3 = M - n1 - n2 >= 1
                total = e1 + err[b1, b2, n2] + err[b2, tmax, m - n1 - n2]
                k = int(np.argmin(total))
                if total[k] < best_err:
                    best_err, best = total[k], (b1, b2, n1, int(n2[k]))
    b1, b2, n1, n2 = best
    return TapParams(tmax, b1, b2, n1, n2, m - n1 - n2, levels, False)


def table_error(counts: np.ndarray, params: TapParams) -> float:
    """sum_c h[c] (T[c] - c)^2 of a TAP's table, all 256 codes."""
    t = build_table(params).astype(np.int64)
    return float((np.asarray(counts, dtype=np.float64) * (t - np.arange(256)) ** 2).sum())


def neighbours(p: TapParams):
    """Valid TAPs one step away from p: b1 or b2 by +-1, or one level moved between two segments."""
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


def episode_info(problem, params: dict[str, TapParams]) -> dict:
    """What the env's last step reports for a configuration: its score and its tables."""
    tables = {n: build_table(p) for n, p in params.items()}
    info = problem.score(tables).as_dict()
    info["config"] = {n: {**p.as_dict(), "table": tables[n]} for n, p in params.items()}
    return info


def analytic_config(problem) -> dict[str, TapParams]:
    """analytic_params for every approximated layer of `problem` (envs/problem.TapProblem)."""
    return {n: analytic_params(problem.stats[n].counts, problem.stats[n].tmax, problem.config.levels)
            for n in problem.layers}


def run_analytic(problem, tracker, seed: int = 0) -> None:
    tracker.on_episode(episode_info(problem, analytic_config(problem)), 1)


def run_greedy(problem, tracker, seed: int = 0) -> None:
    """Coordinate search from the analytic tables; every scorer call is one episode of the budget.

    Layer by layer, it scores every neighbour of the layer's current TAP and
    moves to the best one if it beats the best reward so far; rounds repeat
    until a whole round improves nothing or the budget is spent.
    """
    current = analytic_config(problem)
    best = episode_info(problem, current)
    tracker.on_episode(best, 1)
    improved = True
    while improved and not tracker.finished:
        improved = False
        for name in problem.layers:
            tried = []
            for cand in neighbours(current[name]):
                if tracker.finished:
                    return
                info = episode_info(problem, {**current, name: cand})
                tracker.on_episode(info, tracker.episodes + 1)
                tried.append((info["reward"], cand))
            if tried and max(r for r, _ in tried) > best["reward"]:
                reward, cand = max(tried, key=lambda rc: rc[0])
                current = {**current, name: cand}
                best = {"reward": reward}
                improved = True


def run_tpe(problem, tracker, seed: int = 0) -> None:
    """Optuna's TPE sampler (seeded) maximising the search reward, one trial per episode."""
    try:
        import optuna
    except ImportError:
        raise UserError("--algo tpe needs Optuna: pip install -e . (it is a dependency) or pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        while not tracker.finished:
            trial = study.ask()
            params = {n: decode_action([trial.suggest_float(f"{n}.a{k}", -1.0, 1.0) for k in range(4)],
                                       problem.stats[n].tmax, problem.config.levels) for n in problem.layers}
            info = episode_info(problem, params)
            study.tell(trial, info["reward"])
            tracker.on_episode(info, tracker.episodes + 1)
    except (optuna.exceptions.OptunaError, ValueError) as e:
        raise UserError(f"the TPE search (Optuna) failed: {e}; try another --seed or --algo random") from None


BASELINES = {"analytic": run_analytic, "greedy": run_greedy, "tpe": run_tpe}
