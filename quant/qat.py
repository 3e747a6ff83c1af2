"""The INT8 model: quantization-aware training and the student hooks.

`QuantNet` wraps a float `StagedNet` chain (BatchNorm folded into its layers)
and simulates INT8 inference in float (fake quantization, quant/fake_quant.py):

    input  -> int8 codes (fixed scale)
    layer  -> int8 per-channel weights, int32 bias, [+ s_r * q_r: a residual
              source's codes], ReLU,
              uint8 codes q = clamp(round(y / s), 0, 255)   <- record point
              [optional lookup table T: q -> T[q]]          <- the TAP student
              max-pool on codes, next layer reads s * q
    classifier -> float logits (fc3 is never approximated)

Activation scales `s = max / 255` come from an observer while `observing` is
on, and are frozen after. Two observers (PyTorch has both):

  * "ema": an EMA of the batch max (MovingAverageMinMaxObserver);
  * "max": the largest activation seen in any batch (MinMaxObserver). Its
    coarser codes keep the rare large activations in range, which the search's
    tmax = p90 + 10 rule then saturates less (benchmarks/README.md, "The QAT observer").
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from models import build_model
from models.checkpoint import load_checkpoint, resume_command
from models.batching import input_abs_max
from common.errors import UserError
from models.net import Stage, StagedNet, folded_weights, residual_sources, shortcut
from models.pooling import max_pool2x2
from quant.fake_quant import (A_QMAX, W_QMAX, activation_codes, fake_quant_bias, fake_quant_weight,
                              input_codes, weight_codes, weight_scale)
from quant.lookup import apply_table_ste

EMA = 0.01  # averaging constant of the "ema" observer
OBSERVERS = ("ema", "max")
DEFAULT_OBSERVER = "max"  # measured against "ema": benchmarks/README.md, "The QAT observer"


class QuantNet(nn.Module):
    def __init__(self, float_model: StagedNet, observer: str = DEFAULT_OBSERVER):
        super().__init__()
        if observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {OBSERVERS}, got {observer!r}")
        self.observer = observer
        self.model_name = float_model.model_name
        self.width = float_model.width
        self.batchnorm = float_model.batchnorm  # the float model's, recorded; folded away below
        self.stages: list[Stage] = list(float_model.stages)
        self.sources = residual_sources(self.stages)
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for st in self.stages:
            w, b = folded_weights(float_model, st.name)  # BatchNorm folded into its layer
            self.weights[st.name] = nn.Parameter(w)
            self.biases[st.name] = nn.Parameter(b)
        # The observed post-ReLU max per quantized layer (see OBSERVERS); scale = act_max / 255.
        self.register_buffer("act_max", torch.zeros(len(self.quant_layers)))
        self.observing = True
        self.input_scale = input_abs_max() / W_QMAX
        self._frozen: dict | None = None

    # ---- frozen inference ------------------------------------------------------------
    @torch.no_grad()
    def freeze(self) -> "QuantNet":
        """Quantises the weights and biases once, for inference-only use (the search).

        Without it every forward pass re-derives the int8 weights; in the
        search's hot path that is ~100 small ops per episode. Training or
        loading weights drops the frozen copy.
        """
        self._frozen = None  # so that quantised_weights reads the live weights
        self._frozen = {i: self.quantised_weights(i) for i in range(len(self.stages))}
        return self

    def train(self, mode: bool = True) -> "QuantNet":
        if mode:
            self._frozen = None
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._frozen = None
        return super().load_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):  # .to(device), .double(), ...: re-freeze there
        was_frozen, self._frozen = self._frozen is not None, None
        super()._apply(fn, *args, **kwargs)
        return self.freeze() if was_frozen else self

    # ---- structure ---------------------------------------------------------------
    @property
    def quant_layers(self) -> list[str]:
        return [st.name for st in self.stages if not st.classifier]

    def stage_index(self, name: str) -> int:
        return [st.name for st in self.stages].index(name)

    def act_scale(self, i: int) -> torch.Tensor:
        return self.act_max[i] / A_QMAX

    def in_scale(self, i: int) -> torch.Tensor | float:
        """Scale of the codes that stage i reads."""
        return self.input_scale if i == 0 else self.act_scale(i - 1)

    # ---- one stage ---------------------------------------------------------------
    def quantised_weights(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage i's dequantised int8 weight and int32-grid bias (STE-differentiable)."""
        if self._frozen is not None:
            return self._frozen[i]
        st = self.stages[i]
        w, w_scale = fake_quant_weight(self.weights[st.name])
        return w, fake_quant_bias(self.biases[st.name], w_scale * self.in_scale(i))

    @torch.no_grad()
    def int8_weights(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What an integer kernel takes for stage i: int8 weight codes, their per-channel
        scale, and the bias (float, on the int32 grid) that quantised_weights adds."""
        st = self.stages[i]
        w = self.weights[st.name]
        s_w = weight_scale(w)
        return weight_codes(w, s_w).to(torch.int8), s_w, fake_quant_bias(self.biases[st.name], s_w * self.in_scale(i))

    def linear_part(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """int8 weights x codes + int32 bias, in float (dequantised values)."""
        st = self.stages[i]
        w, b = self.quantised_weights(i)
        if st.gap:
            h = h.mean((2, 3))
        if st.flatten:
            h = h.flatten(1)
        if st.kind == "conv":
            return F.conv2d(h, w, b, stride=st.stride, padding=st.padding)
        return F.linear(h, w, b)

    def codes(self, i: int, h: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 codes (float tensor) of stage i's post-ReLU output for input `h`.

        ReLU is the clamp at code 0 (same values and gradients as relu first).
        A residual stage adds `skip`, its source's codes, at the source's scale:
        the join is one requantisation of two terms (quant/integer.py).
        """
        y = self.linear_part(i, h)
        if self.stages[i].residual is not None:
            y = y + shortcut(skip, y.shape) * self.act_scale(self.stage_index(self.stages[i].residual))
        if self.training and self.observing:
            with torch.no_grad():
                m = y.detach().amax().clamp_min(0)
                cur = self.act_max[i]
                seen = torch.maximum(cur, m) if self.observer == "max" else (1 - EMA) * cur + EMA * m
                self.act_max[i] = torch.where(cur > 0, seen, m)
        if self.act_max[i] <= 0:
            raise RuntimeError(f"activation scale of {self.stages[i].name} is not calibrated; "
                               "run a training-mode forward pass first")
        return activation_codes(y, self.act_scale(i))

    def handed_on(self, i: int, q: torch.Tensor) -> torch.Tensor:
        """Stage i's codes as the next stage (and a residual join) reads them: max-pooled where it pools."""
        return max_pool2x2(q) if self.stages[i].pool else q

    def next_input(self, i: int, q: torch.Tensor) -> torch.Tensor:
        """What stage i+1 reads: s * (max-pooled) codes."""
        return self.handed_on(i, q) * self.act_scale(i)

    # ---- whole chain -------------------------------------------------------------
    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return input_codes(x, self.input_scale) * self.input_scale

    def forward(self, x: torch.Tensor, tables: dict | None = None, record: dict | None = None) -> torch.Tensor:
        return self.forward_from(0, self.quantize_input(x), tables, record)

    def forward_from(self, start: int, h: torch.Tensor, tables: dict | None = None,
                     record: dict | None = None) -> torch.Tensor:
        """Runs stages start.. on `h` (what stage `start` reads) and returns logits.

        `tables` maps layer name -> 256-entry table applied to its codes;
        a residual source must lie at or after `start`;
        `record` collects each quantized layer's (possibly tabled) codes.
        The search's scorer (envs/problem.py) runs the same chain on codes
        (quant/kernels.py).
        """
        kept = {}  # residual sources' codes (what their successor reads) until their join
        for i in range(start, len(self.stages)):
            st = self.stages[i]
            if st.classifier:
                return self.linear_part(i, h)
            q = self.codes(i, h, kept.get(st.residual))
            if tables and st.name in tables:
                q = self.apply_layer_table(st.name, q, tables[st.name])
            if record is not None:
                record[st.name] = q
            q = self.handed_on(i, q)  # pooled once, for the next stage and a later join
            h = q * self.act_scale(i)
            if st.name in self.sources:
                kept[st.name] = q
        raise AssertionError("unreachable: the last stage is the classifier")

    def apply_layer_table(self, name: str, q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Layer `name`'s codes through its table (a student that learns its clips overrides this)."""
        return apply_table_ste(q, table)

    @torch.no_grad()
    def calibrate(self, batches) -> None:
        """Initialises the activation observers from float-model batches."""
        was = self.training
        self.train()
        for x, _ in batches:
            self(x)
        self.train(was)


def load_teacher(path, model: str, stage: str = "qat") -> QuantNet:
    """The INT8 model of a checkpoint, frozen for inference; clear errors if missing or wrong.

    `stage` "qat" is the teacher; "student" a fine-tuned student (train_baselines.py student).
    """
    ckpt = load_checkpoint(path, model=model, stage=stage)
    meta = ckpt["meta"]
    if not meta.get("complete", False):
        raise UserError(f"{path} is unfinished ({stage} epoch {meta['epochs_done']} of {meta['epochs']}); "
                        f"finish it with: {resume_command(path, meta)}")
    # BatchNorm is folded into the QAT weights, so the float model's placement does not matter here.
    qnet = QuantNet(build_model(model, "none", meta.get("width", 1.0)))
    # A student's learned clips are in its tables (meta["tables"]), not in the INT8 model.
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("clip_scale.")}
    try:
        qnet.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} does not fit the {model} INT8 model: {str(e).splitlines()[0]}") from None
    qnet.batchnorm = meta.get("batchnorm", qnet.batchnorm)
    qnet.meta = meta  # what the checkpoint says of itself (a student's result and teacher, ...)
    qnet.observing = False
    return qnet.eval().freeze()
