"""The analytic TAP: per layer, the decodable table of least histogram-weighted squared code error.

    min over TapParams of  sum_c h[c] (T[c] - c)^2

over every parameter set the action decoder can produce (docs/tap.md
section 4), found exactly. It needs no accuracy feedback, so it is both the
`analytic` baseline (agents/baselines.py) and the anchor the env's actions
correct by default (envs/tap_env.py).

Why by hand: the exact minimiser is a small dynamic-programming table, and
no library enumerates this decoder's parameter space.

The error of the codes in a segment (lo, hi] depends only on (lo, hi, n):
its levels are lo (the previous segment's last level, or code 0) and its own
n levels, the last at hi. So E[lo, hi, n] is computed once, and a TAP's
error is E[0, b1, n1] + E[b1, b2, n2] + E[b2, tmax, n3] plus the saturation
error above tmax, which is the same for every table.
"""

from __future__ import annotations

import numpy as np

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
