"""The search problem behind the env: the teacher, its code statistics, the search split, the score.

`TapProblem(config)` loads the INT8 teacher, measures each layer's code
histogram on calibration batches (p90, tmax; docs/tap.md section 3), records the
teacher on the search split once, and scores a set of lookup tables there
(envs/reward.py) by running the student from those cached codes
(envs/student.py). Scores are memoised by the tables themselves: different
actions often decode to the same tables.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np
import torch

from envs.config import ProblemConfig
from envs.reward import Score, score_student
from envs.student import StudentRunner
from models import ATTENTION_LAYERS
from common.files import file_sha256, missing_file
from common.cli import resolve_device
from models.batching import iterate
from models.data import load_cifar10
from common.errors import UserError
from quant.analytic import AnalyticSolver
from quant.attention import unit
from quant.clip import decode_clip, rule_tmax
from quant.histogram import CodeStats, code_histogram, stats_from_counts
from quant.kernels import announce_kernels, stage_kernels
from quant.qat import load_teacher
from quant.tap import TapParams, build_table, decode_action, encode_action, identity_table

CALIB_BATCH_SIZE = 128
# With the analytic anchor an action a decodes as anchor + CORRECTION * a (clipped to [-1, 1]), so
# a = 0 is the analytic TAP and |a| = 1 moves each decoded number by half its range.
CORRECTION = 0.5
MEMO_LIMIT = 200_000


@torch.no_grad()
def layer_stats(qnet, x: torch.Tensor, device) -> dict[str, CodeStats]:
    """Each quantized layer's code histogram, p90 and tmax over the images `x` (uint8)."""
    counts = {n: np.zeros(256, dtype=np.int64) for n in qnet.quant_layers}
    for xb, _ in iterate(x, torch.zeros(len(x), dtype=torch.long), CALIB_BATCH_SIZE, device):
        rec: dict = {}
        qnet(xb, record=rec)
        for n in counts:
            counts[n] += code_histogram(rec[n])
    return {n: stats_from_counts(c) for n, c in counts.items()}


def calibration_stats(qnet, data, calib_batches: int, device) -> dict[str, CodeStats]:
    """layer_stats on the calibration images: `calib_batches` batches of the training split."""
    return layer_stats(qnet, data.train_x[data.calibration_indices(calib_batches * CALIB_BATCH_SIZE)], device)


class TapProblem:
    """Teacher, per-layer code statistics and the search-split scorer of one `ProblemConfig`."""

    def __init__(self, config: ProblemConfig | None = None, **kwargs):
        self.config = config = config or ProblemConfig(**kwargs)
        teacher = config.teacher_path
        if not teacher.is_file():
            cost = ("" if config.model == "lenet5" else "; at width 1 that takes hours on 2 CPU cores (the float "
                    "stage's first line says how long on this CPU; --width 0.5 is about 3-4x cheaper)")
            raise UserError(missing_file("teacher checkpoint", teacher, f"make it with: python train_baselines.py "
                                         f"float --model {config.model} && python train_baselines.py qat --model "
                                         f"{config.model}" + cost))
        self.teacher_path = str(teacher)
        self.torch_device = resolve_device(config.device)
        self.qnet = load_teacher(teacher, config.model).to(self.torch_device)
        self.teacher_sha256 = file_sha256(teacher)
        if config.width is not None and config.width != self.qnet.width:
            raise UserError(f"teacher {teacher} is a {config.model} of width {self.qnet.width}, but --width is "
                            f"{config.width}; pass --width {self.qnet.width}, or train that width with: python "
                            f"train_baselines.py float --model {config.model} --width {config.width}")
        try:
            self.kernels = stage_kernels(self.qnet, self.torch_device, config.backend)
        except ValueError as e:
            raise UserError(str(e)) from None
        announce_kernels(self.torch_device, config.backend)
        self.layers = config.approximated_layers
        self.attention_layers = list(ATTENTION_LAYERS[config.model])

        data = load_cifar10(config.data, config.cache_dir)
        self.data_hash = data.source_hash
        train_idx, val_idx = data.split()
        # Past the validation split, the search split goes on with the training images that follow the
        # calibration batches in the fixed order (models/data.py); the selection images are the last ones.
        calib = config.calib_batches * CALIB_BATCH_SIZE
        self.search_train_images = max(0, config.search_size - len(val_idx))
        if calib > len(train_idx):
            raise UserError(f"--calib-batches {config.calib_batches} needs {calib} calibration images, but the "
                            f"training split holds {len(train_idx)}; use --calib-batches "
                            f"{len(train_idx) // CALIB_BATCH_SIZE} or fewer")
        if calib + self.search_train_images > len(train_idx):
            left = len(train_idx) - calib
            raise UserError(f"search size {config.search_size} exceeds the {len(val_idx)} validation images plus "
                            f"the {left} of {len(train_idx)} training images that calibration leaves (it takes "
                            f"--calib-batches {config.calib_batches} x {CALIB_BATCH_SIZE} = {calib}); use "
                            f"--search-size {len(val_idx) + left} or fewer --calib-batches")
        self.search_idx = torch.cat([val_idx[: config.search_size],
                                     data.calibration_indices(calib + self.search_train_images)[calib:]])
        self.stats = calibration_stats(self.qnet, data, config.calib_batches, self.torch_device)
        self.levels = config.layer_levels  # each approximated layer's K
        self.solvers = {n: AnalyticSolver(self.stats[n].counts, self.levels[n]) for n in self.layers}
        for n in self.layers:  # each approximated layer's clip by the rule (quant/clip.py); p90 stays
            try:
                tmax = rule_tmax(config.tmax_rule, self.stats[n].counts, self.levels[n], self.solvers[n])
            except ValueError as e:
                raise UserError(f"--tmax-rule {config.tmax_rule}, layer {n}: {e}; use --tmax-rule guide, more "
                                f"--calib-batches, or --layers without {n}") from None
            self.stats[n] = replace(self.stats[n], tmax=tmax)
        self._record_teacher(data.train_x[self.search_idx], data.train_y[self.search_idx])
        self._memo: dict = {}

    @torch.no_grad()
    def student_runner(self, x: torch.Tensor, y: torch.Tensor) -> StudentRunner:
        """The teacher recorded on images `x` and the StudentRunner that replays the student on them: the
        search split's scorer, and the held-out selection's (agents/selection.py)."""
        rec: dict = {}
        self.qnet(next(iterate(x, y, len(x), self.torch_device))[0], record=rec)
        return StudentRunner(self.qnet, self.kernels, self.layers, self.attention_layers, rec, self.torch_device)

    @torch.no_grad()
    def _record_teacher(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.labels = y.to(self.torch_device)
        self.runner = self.student_runner(x, y)
        # The teacher's hits and attention maps from the scorer's own arithmetic with
        # identity tables, so that identity tables score a drop and att of exactly 0
        # (the layout and chunking change float rounding in the last bit).
        self.teacher_hits, maps, logp = 0, {}, []
        for lo, hi, logits, energies in self.runner.chunks(self.runner.device_tables(
                {n: identity_table() for n in self.layers})):
            self.teacher_hits += int((logits.argmax(1) == self.labels[lo:hi]).sum().item())
            logp.append(torch.log_softmax(logits.float(), 1))
            for n, e in energies.items():
                maps.setdefault(n, []).append(unit(e))
        self.teacher_maps = {n: torch.cat(m) for n, m in maps.items()}
        self.teacher_logp = torch.cat(logp)

    @cached_property
    def analytic(self) -> dict[str, TapParams]:
        """Each approximated layer's TAP of least histogram-weighted squared code error at the rule's clip
        (quant/analytic.py); with the mse rule, the joint least-error clip and table."""
        return {n: self.solvers[n].params_at(self.stats[n].tmax) for n in self.layers}

    @property
    def action_dim(self) -> int:
        """4 numbers per layer (b1, b2, n1, n2), and a 5th, the clip, when the search moves it."""
        return 5 if self.config.tmax_rule == "search" else 4

    def decode(self, layer: str, action) -> TapParams:
        """An agent's numbers in [-1, 1] for `layer` -> its TAP, around the anchor when there is one.

        With the search rule the 5th number moves the clip first (quant/clip.decode_clip); the
        analytic anchor of the other four is then the least-error TAP at that clip."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if len(a) != self.action_dim:
            raise ValueError(f"a TAP action has {self.action_dim} numbers here, got {len(a)}")
        tmax = self.stats[layer].tmax
        if self.action_dim == 5:
            tmax, a = decode_clip(a[4], tmax), a[:4]
        if self.config.anchor == "analytic":
            anchor = encode_action(self.solvers[layer].params_at(tmax))
            a = np.clip(anchor + CORRECTION * np.clip(a, -1.0, 1.0), -1.0, 1.0)
        return decode_action(a, tmax, self.levels[layer])

    @property
    def acc_teacher(self) -> float:
        return 100.0 * self.teacher_hits / len(self.labels)

    def clear_memo(self) -> None:
        """Forget every score: so that a benchmark times each method from a cold scorer."""
        self._memo.clear()

    def score(self, tables: dict[str, np.ndarray]) -> Score:
        """Scores tables {layer: 256 uint8 codes} on the search split (memoised)."""
        key = tuple((n, np.asarray(tables[n], dtype=np.uint8).tobytes()) for n in self.layers if n in tables)
        hit = self._memo.get(key)
        if hit is None:
            hit = self.score_uncached(tables)
            if len(self._memo) < MEMO_LIMIT:
                self._memo[key] = hit
        return hit

    def score_params(self, params: dict) -> dict:
        """One configuration {layer: TapParams} -> its tables, score and info: what the env's last step,
        the learner-free searches and the held-out selection all report (`config` holds the tables)."""
        tables = {n: build_table(p) for n, p in params.items()}
        info = self.score(tables).as_dict()
        info["config"] = {n: {**p.as_dict(), "table": tables[n]} for n, p in params.items()}
        return info

    @torch.no_grad()
    def score_uncached(self, tables: dict[str, np.ndarray]) -> Score:
        """Runs the student with `tables` and scores it, whatever the memo holds."""
        chunks = self.runner.chunks(self.runner.device_tables(tables))
        return score_student(chunks, self.labels, self.teacher_hits, self.teacher_maps, self.attention_layers,
                             self.config.attention_weight, self.teacher_logp, self.config.kl_weight)
