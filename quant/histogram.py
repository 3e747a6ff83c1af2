"""Per-layer INT8 code histograms, p90 and tmax (docs/tap.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from quant.tap import N_CODES

TMAX_MARGIN = 10


@dataclass(frozen=True)
class CodeStats:
    """What the search knows about one layer's codes."""

    counts: np.ndarray  # (256,) int64, code histogram over the calibration batches
    p90: int
    tmax: int  # the layer's clip: the guide's p90 + 10 here; a TapProblem sets its rule's (quant/clip.py)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def zero_frac(self) -> float:
        return float(self.counts[0] / max(1, self.total))

    @property
    def sat_frac(self) -> float:
        """Share of codes above tmax (those the table saturates)."""
        return float(self.counts[self.tmax + 1:].sum() / max(1, self.total))

    @property
    def mean_code(self) -> float:
        return float((self.counts * np.arange(N_CODES)).sum() / max(1, self.total))

    def binned(self, bins: int) -> np.ndarray:
        """Histogram over codes [0, tmax] in `bins` equal bins, normalised by all codes."""
        idx = (np.arange(self.tmax + 1) * bins) // (self.tmax + 1)
        out = np.zeros(bins, dtype=np.float64)
        np.add.at(out, idx, self.counts[: self.tmax + 1])
        return out / max(1, self.total)


def code_histogram(codes: torch.Tensor) -> np.ndarray:
    """Counts of codes 0..255 in a tensor of INT8 codes (any shape)."""
    return torch.bincount(codes.detach().flatten().to(torch.int64).cpu(), minlength=N_CODES)[:N_CODES].numpy()


def percentile_nonzero(counts: np.ndarray, q: float) -> int:
    """The q-th percentile (0 < q <= 100) of the non-zero codes (lower interpolation: an actual code); 0 if none."""
    nz = counts.astype(np.int64).copy()
    nz[0] = 0
    total = nz.sum()
    if total == 0:
        return 0
    cum = np.cumsum(nz)
    return int(np.searchsorted(cum, q / 100.0 * total, side="left"))


def p90_nonzero(counts: np.ndarray) -> int:
    """90th percentile of the non-zero codes: the guide's statistic."""
    return percentile_nonzero(counts, 90)


def tmax_from_counts(counts: np.ndarray) -> int:
    """tmax = min(255, p90 + 10), and at least 1 so a table is defined."""
    return max(1, min(N_CODES - 1, p90_nonzero(counts) + TMAX_MARGIN))


def stats_from_counts(counts: np.ndarray) -> CodeStats:
    counts = np.asarray(counts, dtype=np.int64)
    return CodeStats(counts=counts, p90=p90_nonzero(counts), tmax=tmax_from_counts(counts))
