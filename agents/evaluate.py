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

import numpy as np
import torch

from quant.result import checked_teacher, levels_label, read_checked, result_path, tables_label
from quant.qat import QuantNet, load_teacher
from models import MODEL_NAMES
from common.files import file_sha256, missing_file
from common.cli import Parser, add_common_args, resolve_device, run_main
from models.data import load_cifar10
from common.errors import UserError
from models.metrics import accuracy


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    p.add_argument("--config-path", default=None,
                   help="result file written by agents.search; a bare name is also looked for under "
                        "<out-dir>/tri_ppo_int_codes/")
    p.add_argument("--model", default=None, choices=MODEL_NAMES, help="refuse a result file of another model")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the path in the result file)")
    p.add_argument("--student", default=None,
                   help="a student fine-tuned for this result (train_baselines.py student); default: the teacher "
                        "with the result's tables")
    p.add_argument("--onnx", default=None,
                   help="instead: evaluate a file written by agents.export with onnxruntime (the student it holds "
                        "against the teacher its metadata names)")
    add_common_args(p)
    return p


def evaluate_onnx(path, data=None, cache_dir=None, device: str = "auto", verbose: bool = True) -> dict:
    """Test-set accuracy of an exported ONNX student (onnxruntime) and of the INT8 teacher it was made from."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError('agents.evaluate --onnx needs onnxruntime: pip install -e ".[export]"') from None
    path = Path(path)
    if not path.is_file():
        raise UserError(missing_file("ONNX file", path, "write it with: python -m agents.export --config-path "
                                                        "<result>.json"))
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        raise UserError(f"{path} is not a model onnxruntime can load ({str(e).splitlines()[0]}); export it again") from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != "tapquant-onnx":
        raise UserError(f"{path} was not written by agents.export (no tapquant metadata); export it again")
    if "result" in meta:
        teacher_path = checked_teacher(read_checked(meta["result"]), meta["result"])
    else:  # the teacher alone: its metadata names it the way a result does
        teacher_path = checked_teacher({"teacher": {"path": meta["teacher"], "sha256": meta["teacher_sha256"]}}, path)
    dev = resolve_device(device)
    ds = load_cifar10(data, cache_dir)
    acc_t = accuracy(load_teacher(teacher_path, meta["model"]).to(dev), ds.test_x, ds.test_y, dev)
    pixels = ds.test_x.numpy()
    pred = np.concatenate([session.run(None, {"pixels": pixels[i:i + 1000]})[0].argmax(1)
                           for i in range(0, len(pixels), 1000)])
    acc_s = 100.0 * float((pred == ds.test_y.numpy()).mean())
    if verbose:
        print(f"[Eval] onnxruntime {ort.__version__} | {path} | {meta['model']} | K={meta.get('levels', '-')} | "
              f"tmax rule {meta.get('tmax_rule', '-')}")
        print(f"[Eval] Teacher {acc_t:.2f}% | Student {acc_s:.2f}% | Drop {acc_t - acc_s + 0.0:.2f}%")
    return {"teacher": acc_t, "student": acc_s, "drop": acc_t - acc_s, "predictions": pred}


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


def layer_configs(res: dict, student: QuantNet | None = None) -> dict:
    """Each layer's TAP (parameters and table) that the student runs with: the result's, or, for a
    student that learned its clips (train_baselines.py student --clip-lr), the ones it learned."""
    clips = student.meta.get("clips") if student is not None else None
    if not clips:
        return res["best"]["config"]
    return {n: {**p, "table": student.meta["tables"][n]} for n, p in clips.items()}


def evaluate_result(config_path, model: str | None = None, teacher: str | None = None, data=None,
                    cache_dir=None, device: str = "auto", verbose: bool = True, student: str | None = None) -> dict:
    """Test-set accuracy of the INT8 teacher and of the student (the teacher with the result's tables,
    or a fine-tuned `student` checkpoint with them); prints the guide's lines when verbose."""
    res = read_checked(config_path, model)
    teacher_path = checked_teacher(res, config_path, teacher)
    dev = resolve_device(device)
    qnet = load_teacher(teacher_path, res["model"]).to(dev)
    student_net = load_student(student, config_path, res).to(dev) if student else qnet
    ds = load_cifar10(data, cache_dir)
    configs = layer_configs(res, student_net if student else None)
    tables = {n: torch.tensor(c["table"], dtype=torch.uint8, device=dev).float() for n, c in configs.items()}
    say = print if verbose else (lambda *a, **k: None)
    say(f"[Eval] {res['model']} | K={levels_label(res['levels'])} | tmax rule {res.get('tmax_rule', 'guide')} | {tables_label(res)} | "
        f"{res.get('episodes')} episodes | teacher {teacher_path}" + (f" | student {student}" if student else ""))
    if configs is not res["best"]["config"]:
        say("[Eval] the student's clips were learned in fine-tuning (its tables follow them):")
    for name, c in configs.items():
        note = " (exact: tmax < K)" if c["exact"] else ""
        say(f"[Eval] {name:<6} tmax {c['tmax']:>3} | b1 {c['b1']:>3} | b2 {c['b2']:>3} | "
            f"levels {c['n1']}+{c['n2']}+{c['n3']}{note}")
    acc_t = accuracy(qnet, ds.test_x, ds.test_y, dev)
    acc_s = accuracy(student_net, ds.test_x, ds.test_y, dev, tables=tables)
    say(f"[Eval] on the {len(ds.test_y):,} test images:")
    say(f"[Eval] Teacher {acc_t:.2f}% | Student {acc_s:.2f}% | Drop {acc_t - acc_s:.2f}%")
    return {"teacher": acc_t, "student": acc_s, "drop": acc_t - acc_s}


def find_result(config_path: str, out_dir: str) -> str:
    """`config_path` as given, or, when that is no file, under <out_dir>/tri_ppo_int_codes/ where the search writes
    it; a bare name that is in neither place is looked for there (so a typo is answered with its closest result)."""
    if Path(config_path).is_file():
        return config_path
    under = result_path(out_dir, config_path)
    bare = Path(config_path).name == config_path
    return str(under) if under.is_file() or (bare and under.parent.is_dir()) else config_path


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.onnx:
        evaluate_onnx(args.onnx, args.data, args.cache_dir, args.device)
        return 0
    if not args.config_path:
        raise UserError("agents.evaluate needs --config-path <result>.json (or --onnx <file>.onnx)")
    evaluate_result(find_result(args.config_path, args.out_dir), args.model, args.teacher, args.data, args.cache_dir, args.device,
                    student=args.student)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
