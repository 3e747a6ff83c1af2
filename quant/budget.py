"""Per-layer K under a bit budget: the arithmetic of mixed-precision tables (docs/mixed.md).

A layer approximated with K levels stores log2(K) bits per activation
instead of 8, so what a configuration moves between layers, per image, is
sum_l n_l log2(K_l) bits, n_l being layer l's output elements. The budget B
is the average over those elements:

    average_bits = sum_l n_l log2(K_l) / sum_l n_l  <=  B

Weighting by n_l makes the budget the bytes moved: LeNet-5's conv1 holds
1,176 of its 1,780 stored activations per image, so one bit at conv1 costs
as much as ten at fc1.

Allocations are tuples of K in layer order. Costs are integers (n_l * log2 K
for K a power of 2), so every comparison with the budget is exact.
"""

from __future__ import annotations

import itertools
import math

from common.errors import UserError

ALLOWED_LEVELS = (4, 8, 16, 32)
MAX_BITS = 8.0


def bits(k: int) -> int:
    """log2(K): the bits a code of a K-level table needs."""
    return int(math.log2(k))


def check_levels_set(levels: tuple[int, ...]) -> tuple[int, ...]:
    """The allowed K set, sorted; each a power of 2 in 4..256."""
    out = tuple(sorted(set(levels)))
    if not out or any(k < 4 or k > 256 or k & (k - 1) for k in out):
        raise UserError(f"allowed K must be powers of 2 in 4..256 (a K-level code takes log2 K bits), got "
                        f"{list(levels)}; e.g. --allowed-levels 4,8,16,32")
    return out


def cost(elements: dict[str, int], alloc: dict[str, int]) -> int:
    """Bits moved per image: sum_l n_l log2 K_l."""
    return sum(elements[n] * bits(k) for n, k in alloc.items())


def average_bits(elements: dict[str, int], alloc: dict[str, int]) -> float:
    """Bits per stored activation of `alloc`, weighted by each layer's output elements."""
    return cost(elements, alloc) / sum(elements[n] for n in alloc)


def capacity(elements: dict[str, int], budget: float) -> int:
    """The largest integer cost within `budget` average bits (rounded down, with a float guard)."""
    return math.floor(budget * sum(elements.values()) + 1e-9)


def check_budget(budget: float, allowed: tuple[int, ...]) -> None:
    """One error line for a budget no allocation meets, or one above 8 bits (INT8 itself)."""
    lowest = bits(min(allowed))
    if not lowest <= budget <= MAX_BITS:
        raise UserError(f"--bit-budget {budget} is outside {lowest}..{MAX_BITS:g}: the smallest allowed K "
                        f"({min(allowed)}) takes {lowest} bits at every layer and INT8 codes take 8")


def parse_levels(text: str, layers: list[str], allowed: tuple[int, ...] | range) -> dict[str, int]:
    """`--levels conv1=8,conv2=4,fc1=16,fc2=8` (every approximated layer once) -> {layer: K}."""
    alloc: dict[str, int] = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise UserError(f"--levels {text!r}: expected layer=K items such as conv1=8, got {item!r}")
        name, k = name.strip(), int(value)
        if name not in layers:
            raise UserError(f"--levels: the model has no approximated layer {name!r}; its layers are "
                            f"{','.join(layers)}")
        if k not in allowed:
            raise UserError(f"--levels {name}={k}: K must be " + (
                f"in {allowed[0]}..{allowed[-1]}" if isinstance(allowed, range)
                else f"one of {','.join(map(str, allowed))} (--allowed-levels)"))
        if name in alloc:
            raise UserError(f"--levels names {name} twice")
        alloc[name] = k
    missing = [n for n in layers if n not in alloc]
    if missing:
        raise UserError(f"--levels gives no K for {','.join(missing)}; give one per layer: "
                        + ",".join(f"{n}=8" for n in layers))
    return {n: alloc[n] for n in layers}


def uniform_levels(allowed: tuple[int, ...], budget: float) -> int:
    """The largest allowed K that fits the budget at every layer."""
    return max((k for k in allowed if bits(k) <= budget + 1e-9), default=min(allowed))


def clamp_to_budget(elements: dict[str, int], layers: list[str], done: dict[str, int], layer: str, k: int,
                    allowed: tuple[int, ...], budget: float) -> int:
    """The largest allowed K <= k for `layer` that still leaves every later layer its smallest K.

    What the mixed env applies to each step (HAQ's rule, made per step): every
    episode ends within the budget, and a choice that fits is kept as it is."""
    cap = capacity(elements, budget)
    later = layers[layers.index(layer) + 1:]
    room = cap - cost(elements, done) - sum(elements[n] for n in later) * bits(min(allowed))
    fitting = [c for c in allowed if c <= k and elements[layer] * bits(c) <= room]
    return max(fitting) if fitting else min(allowed)


def allocations(elements: dict[str, int], layers: list[str], allowed: tuple[int, ...], budget: float,
                frontier: bool = False):
    """Every allocation within the budget, in lexicographic order; with `frontier`, only those where no
    layer's K can be raised to the next allowed K without breaking it."""
    cap = capacity(elements, budget)
    for ks in itertools.product(allowed, repeat=len(layers)):
        alloc = dict(zip(layers, ks))
        c = cost(elements, alloc)
        if c > cap:
            continue
        if frontier and any(k != allowed[-1] and c + elements[n] * (bits(allowed[allowed.index(k) + 1]) - bits(k)) <= cap
                            for n, k in alloc.items()):
            continue
        yield alloc


def count_allocations(layers: list[str], allowed: tuple[int, ...]) -> int:
    return len(allowed) ** len(layers)


def knapsack(elements: dict[str, int], layers: list[str], allowed: tuple[int, ...], budget: float,
             loss: dict[str, dict[int, float]]) -> dict[str, int]:
    """The allocation of least sum_l loss[l][K_l] within the budget: exact (a multiple-choice knapsack).

    Dynamic programming over Pareto fronts of (cost, loss): after each layer,
    keep only the partial allocations that no other beats on both; what
    survives the last layer and fits holds the optimum. Ties go to the
    cheaper allocation."""
    cap = capacity(elements, budget)
    floor_rest = [sum(elements[n] for n in layers[i + 1:]) * bits(min(allowed)) for i in range(len(layers))]
    front = [(0, 0.0, ())]
    for i, n in enumerate(layers):
        grown = [(c + elements[n] * bits(k), v + loss[n][k], ks + (k,)) for c, v, ks in front for k in allowed]
        grown = [g for g in grown if g[0] + floor_rest[i] <= cap]
        grown.sort(key=lambda g: (g[0], g[1], g[2]))
        front, best = [], math.inf
        for g in grown:  # by cost: keep one only if it loses less than every cheaper one
            if g[1] < best:
                front.append(g)
                best = g[1]
    if not front:
        raise UserError(f"no allocation of K in {list(allowed)} fits --bit-budget {budget}")
    c, v, ks = min(front, key=lambda g: (g[1], -g[0], g[2]))
    return dict(zip(layers, ks))
