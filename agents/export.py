"""Export the integer student (or the INT8 teacher) to ONNX, plus its tables for hand-written kernels.

    python -m agents.export --config-path outputs/tri_ppo_int_codes/lenet5_ppo_result.json
    python -m agents.export --config-path <result>.json --student outputs/lenet5_student_<result>.pth
    python -m agents.export --teacher outputs/lenet5_qat_preconvert.pth        # the INT8 teacher alone

Writes <result>.onnx next to the result (or --output): uint8 pixels
(N, 3, 32, 32) in, float logits out, integer ops only (quant/onnx_export.py,
opset 17, no custom ops), checked by onnx.checker; its metadata names the
result, the teacher's sha256, K, the tmax rule, the tables and the project
version. With a result, also <name>_tables.json and <name>_tables.h beside
it: per layer the activation scale, the zero point (0) and the 256-entry
table, for runtimes that are not ONNX. Run it anywhere with onnxruntime:
examples/classify_folder.py, or check it here with
`python -m agents.evaluate --onnx <file>.onnx`.
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from agents.evaluate import find_result, layer_configs, load_student
from quant.result import checked_teacher, levels_label, read_checked
from models import MODEL_NAMES
from common.files import atomic_write, file_sha256
from models.checkpoint import checkpoint_path
from common.cli import Parser, add_common_args, run_main
from models.data import CLASSES
from common.errors import UserError
from quant.integer import export_int8
from quant.qat import load_teacher

INSTALL = 'agents.export needs onnx and onnxruntime: pip install -e ".[export]"'
FORMAT = "tapquant-onnx"


def project_version() -> str:
    try:
        return version("tapquant")
    except PackageNotFoundError:
        return "unknown"


def c_header(name: str, tables: dict, scales: dict, joins: list | None = None) -> str:
    """The tables as C arrays: `uint8_t <layer>_table[256]`, with each layer's scale and zero point; and each
    residual join's fixed-point multipliers (quant/integer.py's IntLayer with a `residual`)."""
    guard = "".join(c if c.isalnum() else "_" for c in name).upper() + "_TABLES_H"
    lines = [f"/* TAP tables of {name}: code c of a layer becomes <layer>_table[c]; value = scale * code. */",
             f"#ifndef {guard}", f"#define {guard}", "#include <stdint.h>", ""]
    for layer, table in tables.items():
        lines.append(f"static const float {layer}_scale = {scales[layer]:.9g}f;")
        lines.append(f"static const uint8_t {layer}_zero_point = 0;")
        rows = [", ".join(f"{v:3d}" for v in table[i:i + 16]) for i in range(0, 256, 16)]
        lines.append(f"static const uint8_t {layer}_table[256] = {{\n    " + ",\n    ".join(rows) + "\n};")
        lines.append("")
    for layer in joins or []:
        arrays = (("int64_t", "mantissa", layer.mantissa), ("int64_t", "skip_mantissa", layer.skip_mantissa),
                  ("int32_t", "shift", layer.shift))
        lines.append(f"/* {layer.name}: codes = clamp(round((acc * {layer.name}_mantissa[c] + {layer.residual} codes * "
                     f"{layer.name}_skip_mantissa[c]) / 2^{layer.name}_shift[c]), 0, 255) */")
        for ctype, what, values in arrays:
            body = ", ".join(f"{int(v)}{'LL' if ctype == 'int64_t' else ''}" for v in values)
            lines.append(f"static const {ctype} {layer.name}_{what}[{len(values)}] = {{{body}}};")
        lines.append("")
    lines.append(f"#endif /* {guard} */")
    return "\n".join(lines) + "\n"


def export(config_path: str | None = None, output: str | None = None, teacher: str | None = None,
           student: str | None = None, model: str | None = None, out_dir: str = "outputs") -> list[Path]:
    """Writes the ONNX file (and, with a result, its tables as JSON and C); returns the paths written."""
    try:
        import onnx  # noqa: F401
        from quant.onnx_export import OPSET, build_onnx
    except ImportError:
        raise UserError(INSTALL) from None
    meta = {"format": FORMAT, "tapquant_version": project_version(), "opset": OPSET,
            "input": "pixels: uint8 (N, 3, 32, 32), RGB, 0..255", "output": "logits: float (N, classes)",
            "classes": json.dumps(list(CLASSES))}
    tables = None
    if config_path:
        res = read_checked(config_path, model)
        teacher_path = checked_teacher(res, config_path, teacher)
        net = (load_student(student, config_path, res) if student else load_teacher(teacher_path, res["model"]))
        tables = {n: [int(v) for v in c["table"]] for n, c in layer_configs(res, net if student else None).items()}
        meta.update(model=res["model"], width=net.width, result=str(Path(config_path).resolve()), result_sha256=file_sha256(config_path),
                    teacher_sha256=res["teacher"]["sha256"], levels=levels_label(res["levels"]),
                    tmax_rule=res.get("tmax_rule", "guide"), tables=json.dumps(tables))
        if student:
            meta.update(student=str(Path(student).resolve()), student_sha256=file_sha256(student))
        default_out = Path(config_path).with_suffix(".onnx")
    else:
        if student:
            raise UserError("--student needs the --config-path of the result it was fine-tuned for")
        model = model or "lenet5"
        teacher_path = Path(teacher or checkpoint_path(out_dir, model, "qat"))
        if not teacher_path.is_file():
            raise UserError(f"teacher checkpoint {teacher_path} not found; pass --teacher, or --config-path <result>")
        net = load_teacher(teacher_path, model)
        meta.update(model=model, width=net.width, teacher=str(teacher_path.resolve()), teacher_sha256=file_sha256(teacher_path))
        default_out = teacher_path.with_name(f"{model}_int8.onnx")
    out = Path(output) if output else default_out
    if not out.parent.is_dir():
        raise UserError(f"--output {out}: the directory {out.parent} does not exist; create it or choose another")
    try:
        exported = export_int8(net.cpu())
        proto = build_onnx(exported, tables, meta)
    except (ValueError, OverflowError) as e:
        raise UserError(f"cannot export {config_path or teacher_path}: {e}") from None
    atomic_write(out, lambda tmp: tmp.write_bytes(proto.SerializeToString()))
    written = [out]
    if tables:
        scales = {n: float(net.act_scale(net.stage_index(n))) for n in tables}
        doc = {"format": "tapquant-tables", "result": meta["result"], "teacher_sha256": meta["teacher_sha256"],
               "levels": res["levels"], "tmax_rule": meta["tmax_rule"],
               "layers": {n: {"scale": scales[n], "zero_point": 0, "table": t} for n, t in tables.items()}}
        stem = out.with_suffix("")
        written += [stem.with_name(stem.name + "_tables.json"), stem.with_name(stem.name + "_tables.h")]
        atomic_write(written[1], lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))
        atomic_write(written[2], lambda tmp: tmp.write_text(c_header(out.stem, tables, scales,
                                                                  [la for la in exported[1] if la.residual])))
    return written


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    p.add_argument("--config-path", default=None,
                   help="the search result whose tables the student keeps (a bare name is also looked for under "
                        "<out-dir>/tri_ppo_int_codes/); without it, the INT8 teacher alone is exported")
    p.add_argument("--student", default=None, help="a student fine-tuned for that result (train_baselines.py student)")
    p.add_argument("--teacher", default=None, help="the INT8 teacher (default: the result's, or <out-dir>/<model>_qat_preconvert.pth)")
    p.add_argument("--model", default=None, choices=MODEL_NAMES, help="refuse a result of another model")
    p.add_argument("--output", default=None, help="the .onnx file (default: next to the result, or the teacher)")
    add_common_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = find_result(args.config_path, args.out_dir) if args.config_path else None
    for path in export(config, args.output, args.teacher, args.student, args.model, args.out_dir):
        print(f"[Export] wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
