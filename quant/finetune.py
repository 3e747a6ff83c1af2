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

A TapStudent is a QuantNet: its state_dict loads into the plain INT8 model,
and `quant/integer.py` runs it with its tables in integers only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models import ATTENTION_LAYERS, build_model
from models.training import distillation_loss
from quant.attention import attention_map, map_distance
from quant.qat import QuantNet

# The loss weights, chosen on validation (benchmarks/README.md, "Fine-tuning the student"):
# attention transfer is there to use, but every weight of it tried lowered the student's
# accuracy, so it is off by default.
KD_TEMPERATURE, KD_WEIGHT, ATTENTION_WEIGHT = 4.0, 3.0, 0.0


class TapStudent(QuantNet):
    def __init__(self, teacher: QuantNet, tables: dict[str, torch.Tensor], kd_temperature: float = KD_TEMPERATURE,
                 kd_weight: float = KD_WEIGHT, attention_weight: float = ATTENTION_WEIGHT,
                 label_smoothing: float = 0.0):
        super().__init__(build_model(teacher.model_name, "none"), observer=teacher.observer)
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

    @property
    def tables(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, f"table_{n}") for n in self.table_layers}

    def forward(self, x: torch.Tensor, tables: dict | None = None, record: dict | None = None) -> torch.Tensor:
        """Logits of the student: the INT8 model with its tables (or `tables`) applied."""
        return super().forward(x, self.tables if tables is None else tables, record)

    def to(self, *args, **kwargs):
        self.teacher.to(*args, **kwargs)
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
