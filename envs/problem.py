"""The search problem behind the env: teacher, search split, and a fast scorer.

`TapProblem` loads the INT8 teacher, measures each layer's code histogram on
calibration batches (p90, tmax), and scores a set of lookup tables on the
search split (TAP.md section 5). Scoring is the env's hot path, so:

  * the teacher's codes at every quantized layer, its predictions and its
    attention maps on the search split are computed once;
  * a configuration is scored by starting from the teacher's cached codes at
    the first approximated layer, so only the layers downstream of it run
    (for a conv layer the cached codes are already max-pooled: a monotone
    table commutes with max-pooling);
  * scores are memoised by the tables themselves (different actions often
    decode to the same tables);
  * the student runs on codes, stage by stage, with real int8 kernels on the
    CPU (quant/kernels.py; the float simulation elsewhere), conv maps
    channels-last; tables map codes to codes, two at a time
    (quant/lookup.py), and the pair indices of the cached teacher codes are
    computed once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models import ATTENTION_LAYERS, build_model
from models.checkpoint import checkpoint_path, file_sha256, load_checkpoint
from models.cli import resolve_device
from models.data import iterate, load_cifar10
from models.errors import UserError
from models.pooling import max_pool2x2
from quant.attention import energy, map_distance, square_pair_table, tabled_energy, unit
from quant.histogram import CodeStats, code_histogram, stats_from_counts
from quant.kernels import stage_kernels
from quant.lookup import apply_table, code_pairs, pair_table
from quant.qat import QuantNet
from quant.tap import identity_table

CALIB_BATCH_SIZE = 128
MEMO_LIMIT = 200_000
CHUNK = 2500


def load_teacher(path: str | os.PathLike, model: str) -> QuantNet:
    """The INT8 (QAT) teacher from its checkpoint; clear errors if missing or wrong."""
    ckpt = load_checkpoint(path, model=model, stage="qat")
    if not ckpt["meta"].get("complete", False):
        raise UserError(f"teacher {path} is unfinished (QAT epoch {ckpt['meta']['epochs_done']} of "
                        f"{ckpt['meta']['epochs']}); finish it with: python train_baselines.py qat "
                        f"--model {model} --resume")
    qnet = QuantNet(build_model(model))
    try:
        qnet.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise UserError(f"teacher {path} does not fit the {model} INT8 model: {str(e).splitlines()[0]}") from None
    qnet.observing = False
    return qnet.eval().freeze()


@dataclass
class Score:
    acc_teacher: float
    acc_student: float
    drop: float
    att: float
    att_per_layer: dict
    reward: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TapProblem:
    model: str = "lenet5"
    teacher: str | None = None
    out_dir: str = "outputs"
    levels: int = 16
    attention_weight: float = 50.0
    layers: list | None = None
    search_size: int = 5000
    calib_batches: int = 10
    device: str = "cpu"
    data: str | None = None
    cache_dir: str | None = None
    backend: str = "auto"  # the student's kernels: "int8" (CPU), "float", or "auto" (quant/kernels.py)
    _memo: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.levels < 4 or self.levels > 256:
            raise UserError(f"levels K must be in 4..256 (one zero level plus one per segment), got {self.levels}")
        if self.search_size <= 0 or self.calib_batches <= 0:
            raise UserError("search size and calibration batches must be positive")
        if not self.attention_weight >= 0:
            raise UserError(f"attention weight must be >= 0, got {self.attention_weight}")
        self.teacher = str(self.teacher or checkpoint_path(self.out_dir, self.model, "qat"))
        if not Path(self.teacher).is_file():
            raise UserError(f"teacher checkpoint {self.teacher} not found; make it with: python train_baselines.py "
                            f"float --model {self.model} && python train_baselines.py qat --model {self.model}")
        self.torch_device = resolve_device(self.device)
        self.qnet = load_teacher(self.teacher, self.model).to(self.torch_device)
        self.teacher_sha256 = file_sha256(self.teacher)
        try:
            self.kernels = stage_kernels(self.qnet, self.torch_device, self.backend)
        except ValueError as e:
            raise UserError(str(e)) from None
        all_layers = self.qnet.quant_layers
        self.layers = list(self.layers) if self.layers else list(all_layers)
        bad = [n for n in self.layers if n not in all_layers]
        if bad or len(set(self.layers)) != len(self.layers):
            raise UserError(f"layers {self.layers} are not distinct quantized layers of {self.model}; "
                            f"choose from {', '.join(all_layers)}")
        self.layers.sort(key=all_layers.index)  # execution order
        self.attention_layers = list(ATTENTION_LAYERS[self.model])

        data = load_cifar10(self.data, self.cache_dir)
        self.data_hash = data.source_hash
        _, val_idx = data.split()
        if self.search_size > len(val_idx):
            raise UserError(f"search size {self.search_size} exceeds the {len(val_idx)} validation images")
        self.search_idx = val_idx[: self.search_size]
        self.stats = self._calibrate(data.train_x[data.calibration_indices(self.calib_batches * CALIB_BATCH_SIZE)])
        self._cache_teacher(data.train_x[self.search_idx], data.train_y[self.search_idx])

    # ---- set-up -------------------------------------------------------------------
    @torch.no_grad()
    def _calibrate(self, x: torch.Tensor) -> dict[str, CodeStats]:
        counts = {n: np.zeros(256, dtype=np.int64) for n in self.qnet.quant_layers}
        for xb, _ in iterate(x, torch.zeros(len(x), dtype=torch.long), CALIB_BATCH_SIZE, self.torch_device):
            rec: dict = {}
            self.qnet(xb, record=rec)
            for n in counts:
                counts[n] += code_histogram(rec[n])
        return {n: stats_from_counts(c) for n, c in counts.items()}

    @torch.no_grad()
    def _cache_teacher(self, x: torch.Tensor, y: torch.Tensor) -> None:
        rec: dict = {}
        xb = next(iterate(x, y, len(x), self.torch_device))[0]
        self.qnet(xb, record=rec)
        self.labels = y.to(self.torch_device)
        # Codes the student starts from: max-pooled where the layer pools (see module doc).
        self.start_codes, self.start_pooled = {}, {}
        for n in self.layers:
            pooled = self.qnet.stages[self.qnet.stage_index(n)].pool and n not in self.attention_layers
            # Conv maps channels-last: oneDNN's float conv2 is ~2.5x faster that way on the
            # CPU, its int8 one ~1.2x. The lookup's pair indices (quant/lookup.py) are made once.
            codes = (max_pool2x2(rec[n]) if pooled else rec[n]).to(self.kernels.dtype)
            if codes.dim() == 4:
                codes = codes.contiguous(memory_format=torch.channels_last)
            self.start_codes[n] = [(c, code_pairs(c)) for c in codes.split(CHUNK)]
            self.start_pooled[n] = pooled
        # The teacher's hits and attention maps from the scorer's own arithmetic with
        # identity tables, so that identity tables score a drop and att of exactly 0
        # (the layout and chunking change float rounding in the last bit).
        self.teacher_hits, maps = 0, {}
        for lo, hi, logits, values in self._chunks(self._device_tables({n: identity_table() for n in self.layers})):
            self.teacher_hits += int((logits.argmax(1) == self.labels[lo:hi]).sum().item())
            for n, e in values.items():
                maps.setdefault(n, []).append(unit(e))
        self.teacher_att = {n: torch.cat(m) for n, m in maps.items()}

    # ---- scoring ------------------------------------------------------------------
    @property
    def acc_teacher(self) -> float:
        return 100.0 * self.teacher_hits / len(self.labels)

    @torch.no_grad()
    def score(self, tables: dict[str, np.ndarray]) -> Score:
        """Scores tables {layer: 256 uint8 codes} on the search split (memoised)."""
        key = tuple((n, np.asarray(tables[n], dtype=np.uint8).tobytes()) for n in self.layers if n in tables)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        result = self._score(tables)
        if len(self._memo) < MEMO_LIMIT:
            self._memo[key] = result
        return result

    @torch.no_grad()
    def _score(self, tables: dict[str, np.ndarray]) -> Score:
        t = self._device_tables(tables)
        correct, att_sum = 0, dict.fromkeys(self.attention_layers, 0.0)
        if not t:
            correct = self.teacher_hits
        for lo, hi, logits, values in self._chunks(t):
            correct += (logits.argmax(1) == self.labels[lo:hi]).sum().item()
            for n, e in values.items():  # layers upstream of the first table match the teacher
                att_sum[n] += map_distance(unit(e), self.teacher_att[n][lo:hi]).item() * (hi - lo)
        acc = 100.0 * correct / len(self.labels)
        att = {n: v / len(self.labels) for n, v in att_sum.items()}
        mean_att = float(np.mean(list(att.values()))) if att else 0.0
        drop = self.acc_teacher - acc
        return Score(self.acc_teacher, acc, drop, mean_att, att, -(drop + self.attention_weight * mean_att))

    def _device_tables(self, tables: dict[str, np.ndarray]) -> dict[str, tuple]:
        """(table, pair table, pair-squares table) of each tabled layer, in the kernels' code dtype.

        The pair squares serve only a pooled attention layer (see _finish_stage); None elsewhere.
        """
        out = {}
        for n in self.layers:
            if n in tables:
                t = torch.as_tensor(np.asarray(tables[n], dtype=np.uint8), device=self.torch_device)
                t = t.to(self.kernels.dtype)
                st = self.qnet.stages[self.qnet.stage_index(n)]
                squares = square_pair_table(t) if st.pool and n in self.attention_layers else None
                out[n] = t, pair_table(t), squares
        return out

    def _chunks(self, t: dict[str, torch.Tensor]):
        """Yields (lo, hi, logits, attention-layer values) of the student, CHUNK images at a time.

        Chunks of 2,500 images bound the memory of a large search split. On this
        project's 2-core CPU they were the fastest with the float kernels (of 250
        ... 5,000; one 5,000-image batch ~1.7x slower); with the int8 kernels 1,000
        and 1,250 are ~10 % slower and one 5,000-image chunk ~5 % faster.
        """
        if not t:
            return
        first = next(n for n in self.layers if n in t)
        for k, lo in enumerate(range(0, len(self.labels), CHUNK)):
            hi = min(lo + CHUNK, len(self.labels))
            values: dict = {}
            logits = self._student_logits(first, t, values, k)
            yield lo, hi, logits, values

    def _student_logits(self, first: str, t: dict, values: dict, k: int) -> torch.Tensor:
        """Student logits for chunk k of the search split, starting from the teacher's codes at `first`.

        The same chain as QuantNet.forward_from, on codes (tests check they
        agree). `values` collects each attention layer's energy
        (quant/attention.py).
        """
        qn, kern = self.qnet, self.kernels
        i = qn.stage_index(first)
        codes, pairs = self.start_codes[first][k]
        if self.start_pooled[first]:  # cached max-pooled: only the lookup is left
            table, pair_tab, _ = t[first]
            h = apply_table(codes, table, pairs=pairs, pair_tab=pair_tab)
        else:
            h = self._finish_stage(i, codes, t[first], values, pairs)
        for i in range(i + 1, len(qn.stages)):
            st = qn.stages[i]
            if st.classifier:
                return kern.logits(i, h)
            h = self._finish_stage(i, kern.codes(i, h), t.get(st.name), values)
        raise AssertionError("unreachable: the last stage is the classifier")

    def _finish_stage(self, i: int, q: torch.Tensor, tab: tuple | None, values: dict,
                      pairs: torch.Tensor | None = None) -> torch.Tensor:
        """Stage i's codes q -> what stage i+1 reads: table (if any), attention energy, max-pool."""
        st = self.qnet.stages[i]
        if tab is None:
            if st.name in self.attention_layers:
                values[st.name] = energy(q)
            return max_pool2x2(q) if st.pool else q
        table, pair_tab, sq_pair_tab = tab
        if st.pool:
            # A monotone table commutes with max-pooling: look up the 4x fewer pooled
            # codes, and take the attention energy straight from the unpooled codes.
            if st.name in self.attention_layers:
                values[st.name] = tabled_energy(q, table, pairs, sq_pair_tab)
            return apply_table(max_pool2x2(q), table, pair_tab=pair_tab)
        v = apply_table(q, table, pairs=pairs, pair_tab=pair_tab)
        if st.name in self.attention_layers:
            values[st.name] = energy(v)
        return v
