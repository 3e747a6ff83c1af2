"""The clip tmax of a layer's TAP: the rule that sets it, and the search's correction of it.

A table saturates every code above tmax (docs/tap.md section 4), so tmax
decides what the table spends its K levels on. Rules (`--tmax-rule`):

    guide   p90 + 10 of the non-zero codes, min 255 (the guide's fixed clip)
    mse     the tmax of the exact joint least-squared-error (tmax, TAP) over
            all 256 codes, saturation included (quant/analytic.py); it
            depends on K: wide at K = 16, tight at K = 4
    pQ      the Q-th percentile of the non-zero codes, 0 < Q <= 100 (p99.9)
    search  the search moves each layer's clip: a 5th action number a in
            [-1, 1] gives tmax = rnd(t* 2^a), t* the mse clip, so zeros
            decode to the mse clip and |a| = 1 halves or doubles it
"""

from __future__ import annotations

import math
import re

import numpy as np

from quant.analytic import AnalyticSolver
from quant.histogram import percentile_nonzero, tmax_from_counts
from quant.tap import N_CODES, rnd

RULES = ("guide", "mse", "search")  # and pQ
RULE_HELP = ("clip tmax of each layer's table: guide (p90 + 10), mse (exact joint least squared code error "
             "with the table, saturation included), pQ (the Q-th percentile of the non-zero codes, e.g. p99.9), "
             "or search (the search moves each clip around mse's by up to 2x)")
CLIP_OCTAVES = 1.0  # |a| = 1 scales the anchor clip by 2^CLIP_OCTAVES
_PERCENTILE = re.compile(r"p(\d+(?:\.\d*)?)")


def check_rule(rule: str) -> str:
    """`rule` if it is one of RULES or pQ with 0 < Q <= 100; ValueError naming the choices otherwise."""
    m = _PERCENTILE.fullmatch(rule) if isinstance(rule, str) else None
    if rule in RULES or (m and 0 < float(m.group(1)) <= 100):
        return rule
    raise ValueError(f"unknown tmax rule {rule!r}; choose guide, mse, search, or pQ with 0 < Q <= 100 (e.g. p99.9)")


def rule_tmax(rule: str, counts: np.ndarray, levels: int, solver: AnalyticSolver | None = None) -> int:
    """The clip `rule` gives a layer with code histogram `counts` and budget `levels` (search: its anchor)."""
    check_rule(rule)
    if rule == "guide":
        return tmax_from_counts(counts)
    if not np.asarray(counts)[1:].any():
        raise ValueError("the layer never fires (every calibration code is 0), so no clip can be placed")
    if rule in ("mse", "search"):
        return (solver or AnalyticSolver(counts, levels)).joint().tmax
    return max(1, percentile_nonzero(np.asarray(counts), float(rule[1:])))


def decode_clip(a: float, anchor: int) -> int:
    """The search's clip for action number `a` in [-1, 1] around `anchor`: rnd(anchor 2^a), in 1..255."""
    a = min(1.0, max(-1.0, float(a)))
    return min(N_CODES - 1, max(1, rnd(anchor * 2.0 ** (CLIP_OCTAVES * a))))


def encode_clip(tmax: int, anchor: int) -> float:
    """An action number that decode_clip maps back to `tmax` (exact for tmax within 2x of the anchor)."""
    return max(-1.0, min(1.0, math.log2(tmax / anchor) / CLIP_OCTAVES))
