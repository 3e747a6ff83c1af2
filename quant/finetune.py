"""TAP-aware fine-tuning: the student learns to live with its lookup tables.

A search leaves the teacher's weights untouched and only drops tables in at
the record points. `TapStudent` starts from the INT8 teacher's weights and
trains them with the tables fixed in the forward pass (a straight-through
gradient through each table, quant/lookup.py), the weights still
fake-quantized to int8 and the activation scales frozen (the tables are
defined on the teacher's codes). Its loss:

    cross-entropy(student, labels)
    + kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))    (Hinton et al., 2015)
    + attention_weight * mean over attention layers of the attention distance (docs/tap.md section 5)

With `clip_lr` > 0 the student also learns each layer's clip: tmax =
rnd(alpha), alpha = clip_scale * the searched tmax, and the table follows
the clip (quant/tap.with_clip: breakpoints scaled, level counts kept); the
gradient to alpha is LSQ's and PACT's (quant/lookup.py), scaled by LSQ's
1 / sqrt(features * (K - 1)), and alpha has its own learning rate and no
weight decay. Its final tables (`tables`, `clip_params`) then differ from
the result's and travel with the checkpoint.

A TapStudent is a QuantNet: its state_dict (without `clip_scale`) loads into
the plain INT8 model, and `quant/integer.py` runs it with its tables in
integers only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models import ATTENTION_LAYERS, build_model
from models.training import distillation_loss
from quant.attention import attention_map, map_distance
from quant.lookup import apply_table_learned_clip
from quant.qat import QuantNet
from quant.tap import TapParams, build_table, rnd, with_clip

# The loss weights, chosen on validation (benchmarks/README.md, "Fine-tuning the student"):
# attention transfer is there to use, but every weight of it tried lowered the student's
# accuracy, so it is off by default.
KD_TEMPERATURE, KD_WEIGHT, ATTENTION_WEIGHT = 4.0, 3.0, 0.0
CLIP_LR = 0.0  # learned clips: benchmarks/README.md, "Fine-tuning with a learned clip"


class TapStudent(QuantNet):
    def __init__(self, teacher: QuantNet, tables: dict[str, torch.Tensor], kd_temperature: float = KD_TEMPERATURE,
                 kd_weight: float = KD_WEIGHT, attention_weight: float = ATTENTION_WEIGHT,
                 label_smoothing: float = 0.0, params: dict[str, TapParams] | None = None, clip_lr: float = 0.0):
        super().__init__(build_model(teacher.model_name, "none", teacher.width), observer=teacher.observer)
        self.load_state_dict(teacher.state_dict())
        self.batchnorm = teacher.batchnorm
        self.observing = False  # the tables are defined on the teacher's codes: its scales stay
        for name, table in tables.items():  # buffers move with .to(); not saved (the result holds them)
            self.register_buffer(f"table_{name}", torch.as_tensor(table).float(), persistent=False)
        self.table_layers = list(tables)
        # The teacher is not a submodule: frozen, never trained, never saved with the student.
        object.__setattr__(self, "teacher", teacher.eval())
        self.attention_layers = list(ATTENTION_LAYERS[teacher.model_name])
        self.kd_temperature, self.kd_weight = kd_temperature, kd_weight
        self.attention_weight, self.label_smoothing = attention_weight, label_smoothing
        self.clip_lr = clip_lr
        if clip_lr:
            if params is None or set(params) != set(tables):
                raise ValueError("learning the clips needs every tabled layer's TAP parameters")
            self.searched = dict(params)
            # One scale per layer, 1.0 = the searched clip: a common unit for every layer's step.
            self.clip_scale = torch.nn.ParameterDict({n: torch.nn.Parameter(torch.ones(())) for n in tables})
            self._built: dict = {}  # (layer, tmax) -> table tensor

    def clip_params(self) -> dict[str, TapParams] | None:
        """Each layer's TAP at the current learned clip (None when the clips are not learned)."""
        if not self.clip_lr:
            return None
        return {n: with_clip(p, rnd(self.clip_scale[n].item() * p.tmax)) for n, p in self.searched.items()}

    @property
    def tables(self) -> dict[str, torch.Tensor]:
        if not self.clip_lr:
            return {n: getattr(self, f"table_{n}") for n in self.table_layers}
        out = {}
        for n, p in self.clip_params().items():
            if (n, p.tmax) not in self._built:
                buf = getattr(self, f"table_{n}")
                self._built[n, p.tmax] = torch.as_tensor(build_table(p)).to(buf.device, buf.dtype)
            out[n] = self._built[n, p.tmax]
        return out

    def apply_layer_table(self, name: str, q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        if not (self.clip_lr and q.requires_grad):
            return super().apply_layer_table(name, q, table)
        alpha = self.clip_scale[name] * self.searched[name].tmax
        lsq = (q[0].numel() * (self.searched[name].K - 1)) ** -0.5
        return apply_table_learned_clip(q, alpha, table, lsq)

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The weights at `lr` with weight decay; learned clips at clip_lr without."""
        clips = list(self.clip_scale.parameters()) if self.clip_lr else []
        ids = {id(c) for c in clips}
        groups = [{"params": [p for p in self.parameters() if id(p) not in ids], "lr": lr,
                   "weight_decay": weight_decay}]
        return groups + ([{"params": clips, "lr": self.clip_lr, "weight_decay": 0.0}] if clips else [])

    def forward(self, x: torch.Tensor, tables: dict | None = None, record: dict | None = None) -> torch.Tensor:
        """Logits of the student: the INT8 model with its tables (or `tables`) applied."""
        return super().forward(x, self.tables if tables is None else tables, record)

    def to(self, *args, **kwargs):
        self.teacher.to(*args, **kwargs)
        if self.clip_lr:
            self._built.clear()
        return super().to(*args, **kwargs)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        rec: dict = {}
        logits = self(x, record=rec)
        with torch.no_grad():
            t_rec: dict = {}
            t_logits = self.teacher(x, record=t_rec)
        kd = distillation_loss(logits, t_logits, self.kd_temperature)
        att = (torch.stack([map_distance(attention_map(rec[n]), attention_map(t_rec[n]))
                            for n in self.attention_layers]).mean()
               if self.attention_weight else logits.new_zeros(()))
        ce = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return {"ce": ce, "kd": kd, "att": att,
                "loss": ce + self.kd_weight * kd + self.attention_weight * att}

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_terms(x, y)["loss"]
