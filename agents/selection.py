"""Choosing the final configuration on images the search did not optimise on.

A search that scores 1,000 configurations on 5,000 images ends up picking,
among configurations that are equal within the split's noise, the one that
noise favours: its search-split gain over the analytic tables does not
carry over to new images (benchmarks/README.md). So, when the search is
anchored at the analytic tables (envs/problem.TapProblem.decode),
its CANDIDATES best distinct configurations must each beat the anchor on
the selection images, training images that neither the search nor the
calibration used, by a paired one-sided test at level ALPHA (Bonferroni
over the candidates). The best candidate that passes is the result; if none
does, the anchor is.

The test is McNemar's in its normal form: per image, d = 1 if only the
candidate is right, -1 if only the anchor is, else 0; z = mean(d) /
(sd(d) / sqrt(n)).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from envs.problem import CALIB_BATCH_SIZE
from models.batching import iterate
from models.data import load_cifar10
from common.errors import UserError
from quant.tap import TapParams, build_table, identity_table

CANDIDATES = 5
ALPHA = 0.05
DEFAULT_SIZE = 20000


def selection_size(requested: int | None, data, used: int) -> int:
    """The selection images to use: `requested`, or DEFAULT_SIZE (fewer on a small data set) when None;
    `used`: the training images that calibration and the search split take first."""
    available = len(data.split()[0]) - used
    if requested is None:
        return max(0, min(DEFAULT_SIZE, available))
    if requested > available:
        raise UserError(f"--select-size {requested} exceeds the {available} training images left after calibration "
                        f"and the search split; pass at most {available}, or 0 to keep the search split's best")
    return requested


# The teacher's codes of every selection image are recorded in one forward pass and kept (as floats while
# recording, then in the kernels' dtype): about 12 bytes per recorded element at the peak. A deep net at full
# width records ~0.3 M elements an image, so 20,000 images would take ~70 GB; the default size is capped to
# half the memory free.
PEAK_BYTES_PER_ELEMENT = 12


def memory_cap(problem, data) -> int:
    """The most selection images whose teacher codes fit in half the memory free now."""
    rec: dict = {}
    with torch.no_grad():
        problem.qnet(next(iterate(data.train_x[:1], data.train_y[:1], 1, problem.torch_device))[0], record=rec)
    per_image = PEAK_BYTES_PER_ELEMENT * sum(v[0].numel() for v in rec.values())
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_SIZE
    cap = max(1000, int(free // 2 // per_image))
    if cap < DEFAULT_SIZE:
        print(f"[Search] the held-out check uses {cap:,} images, not {DEFAULT_SIZE:,}: their teacher codes "
              f"({per_image / 1e6:.1f} MB an image) must fit in half the {free / 2**30:.1f} GiB free; "
              f"--select-size sets it", flush=True)
    return cap


class Correctness:
    """A student's per-image correctness on images `x` (labels `y`), run from the teacher's cached codes
    (envs/student.py); the selection images here, held-out or test images in the benchmarks."""

    def __init__(self, problem, x: torch.Tensor, y: torch.Tensor):
        self.labels = y.to(problem.torch_device)
        self.runner = problem.student_runner(x, y)

    @torch.no_grad()
    def correct(self, params: dict[str, TapParams] | None) -> np.ndarray:
        """Per-image hits of the student with `params`' tables; None: the teacher (identity tables)."""
        tables = ({n: build_table(p) for n, p in params.items()} if params is not None
                  else {n: identity_table() for n in self.runner.layers})
        return np.concatenate([(logits.argmax(1) == self.labels[lo:hi]).cpu().numpy()
                               for lo, hi, logits, _ in self.runner.chunks(self.runner.device_tables(tables))])


class Selection(Correctness):
    """Correctness on the selection images: the last training images of the fixed order."""

    def __init__(self, problem, size: int | None):
        cfg = problem.config
        data = load_cifar10(cfg.data, cfg.cache_dir)
        self.size = selection_size(size, data, cfg.calib_batches * CALIB_BATCH_SIZE + problem.search_train_images)
        if size is None:
            self.size = min(self.size, memory_cap(problem, data))
        idx = data.selection_indices(self.size)
        super().__init__(problem, data.train_x[idx], data.train_y[idx])

    def choose(self, candidates: list[dict[str, TapParams]], anchor: dict[str, TapParams]) -> tuple[int | None, list]:
        """Index of the chosen candidate, or None for the anchor; and each candidate's test."""
        base = self.correct(anchor).astype(np.int8)
        tests, passed = [], []
        for i, cand in enumerate(candidates):
            d = self.correct(cand).astype(np.int8) - base
            sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
            z = float(d.mean()) / (sd / math.sqrt(len(d))) if sd > 0 else 0.0
            p = 0.5 * math.erfc(z / math.sqrt(2))  # one-sided: candidate more accurate than the anchor
            gain = 100.0 * float(d.mean())
            tests.append({"rank": i + 1, "gain_pt": round(gain, 4), "z": round(z, 3), "p": round(p, 5)})
            if p < ALPHA / max(1, len(candidates)):
                passed.append((gain, i))
        return (max(passed)[1] if passed else None), tests


def scored_entry(problem, params: dict[str, TapParams], episode: int | None) -> dict:
    """A result's `best` entry for `params`: its search-split score and per-layer parameters and tables."""
    entry = problem.score_params(params)
    entry["episode"] = episode
    entry["config"] = {n: {**c, "table": c["table"].tolist()} for n, c in entry["config"].items()}
    return entry


def confirm(problem, top: list[dict], sel: Selection) -> tuple[dict, dict]:
    """The final `best` entry and the record of how it was chosen (see the module's docstring)."""
    anchor = problem.analytic
    kept = [t for t in top if {n: TapParams(**p) for n, p in t["params"].items()} != anchor][:CANDIDATES]
    cands = [{n: TapParams(**p) for n, p in t["params"].items()} for t in kept]
    idx, tests = sel.choose(cands, anchor)
    best = scored_entry(problem, anchor if idx is None else cands[idx], None if idx is None else kept[idx]["episode"])
    record = {"images": sel.size, "alpha": ALPHA,
              "source": "training split: the last images of the fixed order (models/data.py), never scored by "
                        "the search nor used for calibration; never the test set",
              "candidates": [{**t, "search_reward": k["reward"]} for t, k in zip(tests, kept)],
              "chosen": "anchor" if idx is None else f"candidate {idx + 1}",
              "search_best": {"reward": top[0]["reward"] if top else None, "drop": top[0]["drop"] if top else None}}
    return best, record
