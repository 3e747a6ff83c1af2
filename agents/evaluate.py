"""The guide's eval_ppo_int8 step: teacher INT8 vs student TAP on the test set.

    python -m agents.evaluate --config-path outputs/tri_ppo_int_codes/lenet5_ppo_result.json

    python -m agents.evaluate --config-path <result>.json --student outputs/lenet5_student_<result>.pth

Refuses a malformed result file, one of another model, one made from a
teacher checkpoint whose sha256 differs from the teacher found now, and a
fine-tuned student made for another result or teacher.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from agents.result import read_result, result_path
from quant.qat import QuantNet, load_teacher
from models import MODEL_NAMES
from models.checkpoint import file_sha256
from models.cli import add_common_args, resolve_device, run_main
from models.data import load_cifar10
from models.errors import UserError
from models.metrics import accuracy


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-path", required=True,
                   help="result file written by agents.search; a bare name is also looked for under "
                        "<out-dir>/tri_ppo_int_codes/")
    p.add_argument("--model", default=None, choices=MODEL_NAMES, help="refuse a result file of another model")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the path in the result file)")
    p.add_argument("--student", default=None,
                   help="a student fine-tuned for this result (train_baselines.py student); default: the teacher "
                        "with the result's tables")
    add_common_args(p)
    return p


def load_student(path, config_path, res: dict) -> QuantNet:
    """A fine-tuned student, refused unless it was made from this result and its teacher."""
    student = load_teacher(path, res["model"], stage="student")
    meta = student.meta
    if meta["result"]["sha256"] != file_sha256(config_path):
        raise UserError(f"student {path} was fine-tuned for another result ({meta['result']['path']}), not "
                        f"{config_path}; fine-tune one with: python train_baselines.py student --config-path "
                        f"{config_path}")
    if meta["teacher"]["sha256"] != res["teacher"]["sha256"]:
        raise UserError(f"student {path} was made from another teacher than {config_path}'s (sha256 differs)")
    return student


def evaluate_result(config_path, model: str | None = None, teacher: str | None = None, data=None,
                    cache_dir=None, device: str = "auto", verbose: bool = True, student: str | None = None) -> dict:
    """Test-set accuracy of the INT8 teacher and of the student (the teacher with the result's tables,
    or a fine-tuned `student` checkpoint with them); prints the guide's lines when verbose."""
    res = read_result(config_path)
    if model and res["model"] != model:
        raise UserError(f"{config_path} is a {res['model']} result, but --model is {model}")
    teacher_path = Path(teacher or res["teacher"]["path"])
    if not teacher_path.is_file():
        raise UserError(f"teacher checkpoint {teacher_path} (named in {config_path}) not found; "
                        f"pass --teacher with the checkpoint the search used")
    if file_sha256(teacher_path) != res["teacher"]["sha256"]:
        raise UserError(f"teacher {teacher_path} is not the checkpoint the search used (sha256 differs); "
                        f"rerun the search with this teacher, or pass --teacher with the original one")
    dev = resolve_device(device)
    qnet = load_teacher(teacher_path, res["model"]).to(dev)
    student_net = load_student(student, config_path, res).to(dev) if student else qnet
    ds = load_cifar10(data, cache_dir)
    tables = {n: torch.tensor(c["table"], dtype=torch.uint8, device=dev).float()
              for n, c in res["best"]["config"].items()}
    say = print if verbose else (lambda *a, **k: None)
    say(f"[Eval] {res['model']} | K={res['levels']} | tmax rule {res.get('tmax_rule', 'guide')} | algo {res.get('algo')} | "
        f"{res.get('episodes')} episodes | teacher {teacher_path}" + (f" | student {student}" if student else ""))
    for name, c in res["best"]["config"].items():
        note = " (exact: tmax < K)" if c["exact"] else ""
        say(f"[Eval] {name:<6} tmax {c['tmax']:>3} | b1 {c['b1']:>3} | b2 {c['b2']:>3} | "
            f"levels {c['n1']}+{c['n2']}+{c['n3']}{note}")
    acc_t = accuracy(qnet, ds.test_x, ds.test_y, dev)
    acc_s = accuracy(student_net, ds.test_x, ds.test_y, dev, tables=tables)
    say(f"[Eval] Teacher {acc_t:.2f}% | Student {acc_s:.2f}% | Drop {acc_t - acc_s:.2f}%")
    return {"teacher": acc_t, "student": acc_s, "drop": acc_t - acc_s}


def find_result(config_path: str, out_dir: str) -> str:
    """`config_path` as given, or, when that is no file, under <out_dir>/tri_ppo_int_codes/ where the search writes it."""
    under = result_path(out_dir, config_path)
    return str(under) if not Path(config_path).is_file() and under.is_file() else config_path


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    evaluate_result(find_result(args.config_path, args.out_dir), args.model, args.teacher, args.data, args.cache_dir, args.device,
                    student=args.student)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
