"""The search's loss on the search split (docs/tap.md section 5).

    drop   = 100 * (acc_teacher - acc_student)            percentage points
    att    = mean over attention layers of the batch mean of ||q_student - q_teacher||_2,
             q = a layer's unit-norm attention map (quant/attention.py)
    kl     = batch mean of KL(teacher || student) on the logits, in nats (a smooth fidelity term)
    reward = -(drop + w_att * att + w_kl * kl)              w_kl = 0: the guide's reward
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from quant.attention import map_distance, unit


@dataclass
class Score:
    acc_teacher: float
    acc_student: float
    drop: float
    att: float
    att_per_layer: dict
    kl: float
    reward: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def guide_reward(drop: float, att: float, attention_weight: float, kl: float = 0.0, kl_weight: float = 0.0) -> float:
    return -(drop + attention_weight * att + kl_weight * kl)


def score_student(chunks, labels: torch.Tensor, teacher_hits: int, teacher_maps: dict[str, torch.Tensor],
                  attention_layers: list[str], attention_weight: float, teacher_logp: torch.Tensor | None = None,
                  kl_weight: float = 0.0) -> Score:
    """Scores the student from its chunks `(lo, hi, logits, energies)` (envs/student.py).

    An attention layer with no energy in a chunk lies upstream of every table,
    where the student equals the teacher: its distance is 0. No chunks at all
    (no tables) is the teacher itself.
    """
    n = len(labels)
    correct, att_sum, kl_sum, ran = 0, dict.fromkeys(attention_layers, 0.0), 0.0, False
    for lo, hi, logits, energies in chunks:
        ran = True
        correct += (logits.argmax(1) == labels[lo:hi]).sum().item()
        if teacher_logp is not None:
            t = teacher_logp[lo:hi]
            kl_sum += (t.exp() * (t - torch.log_softmax(logits.float(), 1))).sum().item()
        for name, e in energies.items():
            att_sum[name] += map_distance(unit(e), teacher_maps[name][lo:hi]).item() * (hi - lo)
    if not ran:
        correct = teacher_hits
    acc_teacher, acc = 100.0 * teacher_hits / n, 100.0 * correct / n
    att = {name: v / n for name, v in att_sum.items()}
    mean_att = float(np.mean(list(att.values()))) if att else 0.0
    drop, kl = acc_teacher - acc, max(kl_sum / n, 0.0)
    return Score(acc_teacher, acc, drop, mean_att, att, kl, guide_reward(drop, mean_att, attention_weight, kl, kl_weight))
