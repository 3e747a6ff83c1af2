"""The analytic TAP: the decodable table of least histogram-weighted squared code error.

    err(T) = sum over all 256 codes c of  h[c] (T[c] - c)^2

over every parameter set the action decoder can produce (docs/tap.md
section 4), found exactly, either for a given clip tmax (`params_at`) or
jointly over tmax in 1..255 and the table (`joint`), saturation above tmax
included. It needs no accuracy feedback, so it is the `analytic` baseline
(agents/baselines.py), the anchor the env's actions correct by default
(envs/tap_env.py), and the `mse` clip rule (quant/clip.py).

Why by hand: the exact minimiser is a small dynamic program over segment
errors, and no library enumerates this decoder's parameter space.

How: the error of the codes in a segment (lo, hi] depends only on
(lo, hi, n): its levels are lo (the previous segment's last level, or
code 0) and its own n levels, the last at hi. Each code goes to its
nearest level (ties low), so the segment splits into runs of codes that
share a level, and a run's error is three prefix sums of the histogram:
sum h (c - L)^2 = S2 - 2 L S1 + L^2 S0. So E[lo, hi, n] is O(n) numbers for
every (lo, hi) pair at once, and a TAP's error is
E[0, b1, n1] + E[b1, b2, n2] + E[b2, tmax, n3] + sat(tmax), where sat(tmax)
= sum_{c > tmax} h[c] (c - tmax)^2 is the same for every table at that tmax.
All sums are of integers below 2^53, so they are exact and ties are real.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from quant.tap import MIN_LEVELS, N_CODES, TapParams, build_table, decode_action

TOP = N_CODES - 1  # the largest clip


class AnalyticSolver:
    """Exact least-squared-error TAPs of one layer's code histogram `counts` with budget `levels`."""

    def __init__(self, counts: np.ndarray, levels: int):
        self.counts = np.asarray(counts, dtype=np.float64)
        self.levels = levels
        self.m = levels - 1  # non-zero levels
        c = np.arange(N_CODES, dtype=np.float64)
        # P[k][i] = sum over codes < i of h c^k
        self._prefix = [np.concatenate([[0.0], np.cumsum(self.counts * c ** k)]) for k in range(3)]
        self.params_at = lru_cache(maxsize=None)(self._params_at)

    def run_error(self, a, b, level):
        """sum_{a <= c <= b} h[c] (c - level)^2, elementwise over arrays; 0 where b < a."""
        hi = np.maximum(np.asarray(b) + 1, a)
        s0, s1, s2 = (p[hi] - p[a] for p in self._prefix)
        return s2 - 2.0 * level * s1 + level * level * s0

    def saturation(self) -> np.ndarray:
        """sat[t] = sum_{c > t} h[c] (c - t)^2 for t in 0..255: what clipping at t costs."""
        t = np.arange(N_CODES)
        return self.run_error(t + 1, np.full(N_CODES, TOP), t.astype(np.float64))

    @property
    def max_segment_levels(self) -> int:
        return max(1, self.m - 2)  # n1, n2, n3 >= 1 and sum to m

    def segment_errors(self) -> np.ndarray:
        """E[lo, hi, n] for 0 <= lo < hi <= 255 and 1 <= n <= m - 2; inf where undefined (n = 0, hi <= lo)."""
        if not hasattr(self, "_segments"):
            top_n = self.max_segment_levels
            err = np.full((N_CODES, N_CODES, top_n + 1), np.inf)
            lo, hi = np.triu_indices(N_CODES, k=1)
            for n in range(1, top_n + 1):
                total = np.zeros(len(lo))
                prev = lo.astype(np.float64)
                for i in range(1, n + 1):
                    # quant.tap.levels_of's level, computed in the same order: rnd(lo + (hi - lo) * i / n)
                    cur = np.floor(lo + (hi - lo) * i / n + 0.5)
                    mid = np.floor((prev + cur) / 2).astype(np.int64)  # codes <= mid go to prev (ties low)
                    total += self.run_error(prev.astype(np.int64) + 1, mid, prev)
                    total += self.run_error(mid + 1, cur.astype(np.int64), cur)
                    prev = cur
                err[lo, hi, n] = total
            self._segments = err
        return self._segments

    def _params_at(self, tmax: int) -> TapParams:
        """The least-error TAP with clip `tmax`; ties go to the smallest (b1, b2, n1, n2)."""
        if tmax < self.levels or tmax < MIN_LEVELS:  # every code up to tmax fits: the identity
            return decode_action(np.zeros(4), tmax, self.levels)
        m, err = self.m, self.segment_errors()
        n = np.arange(1, m - 1)  # n1 and n2 both range over 1..m-2
        n3 = np.clip(m - n[:, None] - n[None, :], 0, None)  # (n1, n2); 0 is inf in E: n3 >= 1 enforced
        best, best_err = None, np.inf
        for b1 in range(1, tmax - 1):
            b2 = np.arange(b1 + 1, tmax)
            total = (err[0, b1, n][None, :, None] + err[b1, b2][:, n][:, None, :]
                     + err[b2, tmax][:, n3])  # (b2, n1, n2)
            k = int(np.argmin(total))  # first in (b2, n1, n2) order
            if total.flat[k] < best_err:
                i2, i1, j = np.unravel_index(k, total.shape)
                best_err, best = total.flat[k], (b1, int(b2[i2]), int(n[i1]), int(n[j]))
        b1, b2, n1, n2 = best
        return TapParams(tmax, b1, b2, n1, n2, m - n1 - n2, self.levels, False)

    def errors_by_clip(self) -> np.ndarray:
        """err[t]: the least error of any TAP clipped at t, all 256 codes (err[0] = inf)."""
        out = self.saturation()
        out[0] = np.inf
        exact_below = max(self.levels, MIN_LEVELS)  # t below this: the identity up to t, only saturation
        if exact_below > TOP:
            return out
        m, err = self.m, self.segment_errors()
        # two[b2, n12]: the best first two segments ending at b2 with n12 = n1 + n2 levels
        two = np.full((N_CODES, m), np.inf)
        for n12 in range(2, m):
            n1 = np.arange(1, n12)
            cand = err[0, :, n1].T[:, None, :] + err[:, :, n12 - n1]  # (b1, b2, n1)
            two[:, n12] = cand.min(axis=(0, 2))
        n12 = np.arange(2, m)
        third = err[:, :, m - n12]  # (b2, t, n12): the last segment (b2, t] with n3 = m - n12 levels
        tables = (two[:, None, n12] + third).min(axis=(0, 2))
        out[exact_below:] = tables[exact_below:] + out[exact_below:]
        return out

    def joint(self) -> TapParams:
        """The least-error (tmax, TAP) over tmax in 1..255; ties go to the smallest tmax."""
        return self.params_at(int(np.argmin(self.errors_by_clip())))


def analytic_params(counts: np.ndarray, tmax: int, levels: int) -> TapParams:
    """The decodable TAP with clip `tmax` of least histogram-weighted squared code error."""
    return AnalyticSolver(counts, levels).params_at(tmax)


def table_error(counts: np.ndarray, params: TapParams) -> float:
    """sum_c h[c] (T[c] - c)^2 of a TAP's table, all 256 codes."""
    t = build_table(params).astype(np.int64)
    return float((np.asarray(counts, dtype=np.float64) * (t - np.arange(256)) ** 2).sum())
