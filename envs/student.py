"""The student (the teacher with lookup tables at its record points) on the search split.

Scoring is the env's hot path, so `StudentRunner` starts each configuration
from the teacher's cached codes at the first tabled layer and runs only the
layers downstream of it:

  * for a pooled layer that is not an attention layer the cached codes are
    already max-pooled (a monotone table commutes with max-pooling), so
    only the lookup is left;
  * it runs on codes, stage by stage, with real int8 kernels on the CPU
    (quant/kernels.py; the float simulation elsewhere), conv maps
    channels-last; tables map codes to codes, two at a time
    (quant/lookup.py), and the pair indices of the cached codes are
    computed once;
  * images go CHUNK at a time;
  * a residual join whose source lies before the first tabled layer reads
    the teacher's cached codes of that source (untabled, so exact).
"""

from __future__ import annotations

import numpy as np
import torch

from models.pooling import max_pool2x2
from quant.attention import energy, square_pair_table, tabled_energy
from quant.lookup import apply_table, code_pairs, pair_table
from quant.qat import QuantNet

# Chunks of 2,500 images bound the memory of a large search split. On this
# project's 2-core CPU they were the fastest with the float kernels (of 250 ...
# 5,000; one 5,000-image batch ~1.7x slower); with the int8 kernels 1,000 and
# 1,250 are ~10 % slower and one 5,000-image chunk ~5 % faster.
CHUNK = 2500


class StudentRunner:
    """Runs tabled students from the teacher's codes `record` (layer -> codes of every image)."""

    def __init__(self, qnet: QuantNet, kernels, layers: list[str], attention_layers: list[str], record: dict,
                 device: torch.device):
        self.qnet, self.kernels, self.device = qnet, kernels, device
        self.layers, self.attention_layers = layers, attention_layers
        self.n_images = len(next(iter(record.values())))
        self.start_codes, self.start_pooled = {}, {}
        for n in layers:
            pooled = qnet.stages[qnet.stage_index(n)].pool and n not in attention_layers
            # Conv maps channels-last: oneDNN's float conv2 is ~2.5x faster that way on the
            # CPU, its int8 one ~1.2x. The lookup's pair indices (quant/lookup.py) are made once.
            codes = (max_pool2x2(record[n]) if pooled else record[n]).to(kernels.dtype)
            if codes.dim() == 4:
                codes = codes.contiguous(memory_format=torch.channels_last)
            self.start_codes[n] = [(c, code_pairs(c)) for c in codes.split(CHUNK)]
            self.start_pooled[n] = pooled
        # Residual sources' teacher output (what their successor reads), where start_codes do not hold it.
        self.source_codes = {}
        for n in qnet.sources:
            if n in self.start_codes and (self.start_pooled[n] or not qnet.stages[qnet.stage_index(n)].pool):
                self.source_codes[n] = [c for c, _ in self.start_codes[n]]
            else:
                st = qnet.stages[qnet.stage_index(n)]
                codes = (max_pool2x2(record[n]) if st.pool else record[n]).to(kernels.dtype)
                self.source_codes[n] = list(codes.contiguous(memory_format=torch.channels_last).split(CHUNK))

    def device_tables(self, tables: dict[str, np.ndarray]) -> dict[str, tuple]:
        """(table, pair table, pair-squares table) of each tabled layer, in the kernels' code dtype.

        The pair squares serve only a pooled attention layer (see _finish_stage); None elsewhere.
        """
        out = {}
        for n in self.layers:
            if n in tables:
                t = torch.as_tensor(np.asarray(tables[n], dtype=np.uint8), device=self.device).to(self.kernels.dtype)
                st = self.qnet.stages[self.qnet.stage_index(n)]
                squares = square_pair_table(t) if st.pool and n in self.attention_layers else None
                out[n] = t, pair_table(t), squares
        return out

    def chunks(self, t: dict[str, tuple]):
        """Yields (lo, hi, logits, attention-layer energies) of the student with device tables `t`.

        Nothing when `t` is empty: the student is then the teacher.
        """
        if not t:
            return
        first = next(n for n in self.layers if n in t)
        for k, lo in enumerate(range(0, self.n_images, CHUNK)):
            energies: dict = {}
            logits = self._logits(first, t, energies, k)
            yield lo, min(lo + CHUNK, self.n_images), logits, energies

    def _logits(self, first: str, t: dict, energies: dict, k: int) -> torch.Tensor:
        """Student logits for chunk k, starting from the teacher's codes at `first`.

        The same chain as QuantNet.forward_from, on codes (tests check they agree).
        """
        qn, kern = self.qnet, self.kernels
        i = qn.stage_index(first)
        # Sources before `first` are untabled: the teacher's codes.
        kept = {n: self.source_codes[n][k] for n in qn.sources if qn.stage_index(n) < i}
        codes, pairs = self.start_codes[first][k]
        if self.start_pooled[first]:  # cached max-pooled: only the lookup is left
            table, pair_tab, _ = t[first]
            h = apply_table(codes, table, pairs=pairs, pair_tab=pair_tab)
        else:
            h = self._finish_stage(i, codes, t[first], energies, pairs)
        if first in qn.sources:
            kept[first] = h
        for i in range(i + 1, len(qn.stages)):
            st = qn.stages[i]
            if st.classifier:
                return kern.logits(i, h)
            h = self._finish_stage(i, kern.codes(i, h, kept.get(st.residual)), t.get(st.name), energies)
            if st.name in qn.sources:
                kept[st.name] = h
        raise AssertionError("unreachable: the last stage is the classifier")

    def _finish_stage(self, i: int, q: torch.Tensor, tab: tuple | None, energies: dict,
                      pairs: torch.Tensor | None = None) -> torch.Tensor:
        """Stage i's codes q -> what stage i+1 reads: table (if any), attention energy, max-pool."""
        st = self.qnet.stages[i]
        if tab is None:
            if st.name in self.attention_layers:
                energies[st.name] = energy(q)
            return max_pool2x2(q) if st.pool else q
        table, pair_tab, sq_pair_tab = tab
        if st.pool:
            # A monotone table commutes with max-pooling: look up the 4x fewer pooled
            # codes, and take the attention energy straight from the unpooled codes.
            if st.name in self.attention_layers:
                energies[st.name] = tabled_energy(q, table, pairs, sq_pair_tab)
            return apply_table(max_pool2x2(q), table, pair_tab=pair_tab)
        v = apply_table(q, table, pairs=pairs, pair_tab=pair_tab)
        if st.name in self.attention_layers:
            energies[st.name] = energy(v)
        return v
