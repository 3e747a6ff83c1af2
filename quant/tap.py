"""The tri-segment approximation (TAP) of one layer's codes (docs/tap.md section 4).

`decode_action` maps an agent's 4 numbers in [-1, 1] to the parameters
{tmax, b1, b2, n1, n2, n3, K}; `build_table` turns them into the 256-entry
lookup table T that replaces each INT8 code c by T[c]. Every action decodes
to a valid, monotone table by construction.

Rounding: `rnd(x) = floor(x + 0.5)` (half up) everywhere, so Python and
torch agree and results do not depend on banker's rounding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

N_CODES = 256
MIN_LEVELS = 4  # K - 1 = 3 non-zero levels: one per segment


def rnd(x: float) -> int:
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class TapParams:
    """Decoded TAP of one layer. `exact` marks tmax < K: every code up to tmax
    fits in the budget, so the table is the identity up to tmax (only the
    saturation above tmax is lossy) whatever b1, b2, n1..n3 say."""

    tmax: int
    b1: int
    b2: int
    n1: int
    n2: int
    n3: int
    K: int
    exact: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _unit(a: float) -> float:
    """[-1, 1] -> [0, 1]; out-of-range inputs are brought into range first."""
    return (min(1.0, max(-1.0, float(a))) + 1.0) / 2.0


def decode_action(action, tmax: int, levels: int = 16) -> TapParams:
    """docs/tap.md's action decoding. `action` has 4 numbers in [-1, 1]."""
    if levels < MIN_LEVELS:
        raise ValueError(f"levels K must be >= {MIN_LEVELS} (one zero level and one per segment), got {levels}")
    if not 1 <= tmax <= N_CODES - 1:
        raise ValueError(f"tmax must be in 1..255, got {tmax}")
    a = [_unit(v) for v in np.asarray(action, dtype=np.float64).reshape(-1)]
    if len(a) != 4:
        raise ValueError(f"a TAP action has 4 numbers, got {len(a)}")
    m = levels - 1
    n1 = 1 + rnd(a[2] * (m - 3))
    n2 = 1 + rnd(a[3] * (m - n1 - 2))
    n3 = m - n1 - n2
    exact = tmax < levels
    if tmax < 4:
        # Too few codes for two breakpoints; the table is the identity anyway.
        b1, b2 = min(1, tmax), min(2, tmax)
    else:
        b1 = 1 + rnd(a[0] * (tmax - 3))
        b2 = b1 + 1 + rnd(a[1] * (tmax - b1 - 2))
    return TapParams(tmax, b1, b2, n1, n2, n3, levels, exact)


def encode_action(p: TapParams) -> np.ndarray:
    """An action that decode_action maps back to p: the centre of p's cell of the action space."""
    m = p.K - 1

    def centre(steps: int, span: int) -> float:  # solves steps = rnd(u * span) for u, mapped to [-1, 1]
        return 0.0 if span <= 0 else 2.0 * steps / span - 1.0

    b = ([centre(p.b1 - 1, p.tmax - 3), centre(p.b2 - p.b1 - 1, p.tmax - p.b1 - 2)] if p.tmax >= 4
         else [0.0, 0.0])  # tmax < 4: the breakpoints are fixed
    return np.array(b + [centre(p.n1 - 1, m - 3), centre(p.n2 - 1, m - p.n1 - 2)])


def with_clip(p: TapParams, tmax: int) -> TapParams:
    """p with its clip moved to `tmax` (1..255): breakpoints scaled in proportion, level counts kept.

    A clip learned during fine-tuning (quant/finetune.py) moves the whole
    table with it, as a learned step size moves a uniform quantizer's levels.
    """
    tmax = min(N_CODES - 1, max(1, tmax))
    if tmax < 4:
        b1, b2 = min(1, tmax), min(2, tmax)
    else:
        r = tmax / p.tmax
        b1 = min(max(1, rnd(p.b1 * r)), tmax - 2)
        b2 = min(max(b1 + 1, rnd(p.b2 * r)), tmax - 1)
    return TapParams(tmax, b1, b2, p.n1, p.n2, p.n3, p.K, tmax < p.K)


def levels_of(p: TapParams) -> list[int]:
    """The distinct codes the table maps to, ascending (0 included)."""
    if p.exact:
        return list(range(p.tmax + 1))
    out = {0}
    for lo, hi, n in ((0, p.b1, p.n1), (p.b1, p.b2, p.n2), (p.b2, p.tmax, p.n3)):
        for i in range(1, n + 1):
            out.add(rnd(lo + (hi - lo) * i / n))  # evenly spaced, the last at hi
    return sorted(out)


def build_table(p: TapParams) -> np.ndarray:
    """256-entry uint8 table: T[c] = nearest level to c (ties to the lower), saturating above tmax."""
    lv = np.array(levels_of(p), dtype=np.int64)
    codes = np.arange(p.tmax + 1)
    # index of the first level >= c; compare with the level below it
    hi = np.searchsorted(lv, codes, side="left")
    lo = np.maximum(hi - 1, 0)
    hi = np.minimum(hi, len(lv) - 1)
    pick_lo = (codes - lv[lo]) <= (lv[hi] - codes)
    table = np.empty(N_CODES, dtype=np.int64)
    table[: p.tmax + 1] = np.where(pick_lo, lv[lo], lv[hi])
    table[p.tmax + 1:] = table[p.tmax]
    return table.astype(np.uint8)


def identity_table() -> np.ndarray:
    return np.arange(N_CODES, dtype=np.uint8)
