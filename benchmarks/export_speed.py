"""The ONNX export: exactness against the integer reference, speed side by side, file sizes.

    python benchmarks/export_speed.py [--out-dir outputs/teachers/seed0] [--data PATH] [--rounds 3]
    python benchmarks/export_speed.py --model alexnet --out-dir outputs/alexnet --no-speed

For the INT8 teacher, the analytic students (default tmax rule) at K = 16,
8 and 4, and a K = 16 student whose every clip is 255 (the codes where u8 x
s8 kernels without VNNI saturate): export time, the share of the 10,000
test images on which onnxruntime's logits (and top-1) equal the integer
reference's (quant/integer.py), and onnxruntime's accuracy against
agents.evaluate's (the PyTorch fake-quant path). The files and the
reference logits stay in <out-dir>/export_bench/, so
benchmarks/onnx_exact_check.py can compare them again on another CPU (or
under an emulated one) with numpy and onnxruntime alone. Then, interleaved over `--rounds` rounds (medians): throughput at
batch 256 and latency at batch 1 of onnxruntime (K = 16 student), the
PyTorch fake-quant student (what agents.evaluate runs), the integer
reference and the float model; and the file sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from agents import search
from agents.evaluate import evaluate_result
from agents.export import export
from envs.config import ProblemConfig
from envs.problem import calibration_stats
from quant.analytic import analytic_params
from quant.tap import build_table
from models import MODEL_NAMES
from models.checkpoint import checkpoint_path, load_float_model
from models.data import load_cifar10
from models.metrics import accuracy, predict
from quant.integer import export_int8, integer_logits, integer_predict
from quant.onnx_export import build_onnx
from quant.qat import load_teacher


def timed(fn, repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="outputs")
    p.add_argument("--data", default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="lenet5", choices=MODEL_NAMES, help="the teacher's model (in --out-dir)")
    p.add_argument("--no-speed", action="store_true", help="exactness only: no throughput and latency rounds")
    args = p.parse_args()
    data = load_cifar10(args.data)
    x, y = data.test_x, data.test_y
    teacher_path = checkpoint_path(args.out_dir, args.model, "qat")
    teacher = load_teacher(teacher_path, args.model)
    reference = export_int8(teacher)
    agree = (integer_predict(x, reference) == predict(teacher, x, "cpu")).float().mean()
    print(f"integer reference = fake-quant teacher: top-1 on {100 * float(agree):.2f} % of {len(x)} test images",
          flush=True)
    onnx_dir = Path(args.out_dir) / "export_bench"
    onnx_dir.mkdir(exist_ok=True)

    files = {}
    t0 = time.perf_counter()
    files["teacher"] = export(output=str(onnx_dir / "teacher.onnx"), teacher=str(teacher_path), model=args.model)[0]
    print(f"export teacher: {time.perf_counter() - t0:.2f} s", flush=True)
    results = {}
    for levels in (16, 8, 4):
        cfg = search.SearchConfig(problem=ProblemConfig(model=args.model, levels=levels, out_dir=args.out_dir,
                                                        data=args.data),
                                  algo="analytic", result_file=f"export_bench_k{levels}.json", no_progress=True)
        with contextlib.redirect_stdout(io.StringIO()):
            search.run(cfg)
        results[levels] = cfg.result_path
        t0 = time.perf_counter()
        files[levels] = export(str(cfg.result_path), output=str(onnx_dir / f"student_k{levels}.onnx"))[0]
        print(f"export K={levels} student: {time.perf_counter() - t0:.2f} s", flush=True)
    stats = calibration_stats(teacher, data, ProblemConfig().calib_batches, torch.device("cpu"))
    clip255 = {n: build_table(analytic_params(stats[n].counts, 255, 16)).tolist() for n in teacher.quant_layers}
    files["K=16, tmax 255"] = onnx_dir / "student_k16_tmax255.onnx"
    files["K=16, tmax 255"].write_bytes(build_onnx(reference, clip255).SerializeToString())

    np.save(onnx_dir / "pixels.npy", x.numpy())
    for name, path in files.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = np.concatenate([session.run(None, {"pixels": x[i:i + 1000].numpy()})[0]
                                 for i in range(0, len(x), 1000)])
        tables = None
        if name == "teacher":
            torch_acc = accuracy(teacher, x, y, "cpu")
        elif name in results:
            res = evaluate_result(results[name], data=args.data, verbose=False)
            tables = {n: c["table"] for n, c in json.loads(results[name].read_text())["best"]["config"].items()}
            torch_acc = res["student"]
        else:
            tables, torch_acc = clip255, float("nan")
        ref = torch.cat([integer_logits(x[i:i + 1000], reference, tables) for i in range(0, len(x), 1000)]).numpy()
        last = reference[1][-1]  # the graph's logits: float32(int32 acc) * float32(scale / positions pooled)
        scale = last.acc_scale.numpy() / max(last.gap_size, 1)
        ref = np.rint(ref / scale).astype(np.float32) * scale.astype(np.float32)
        np.save(Path(path).with_suffix(".reference.npy"), ref)
        same = (logits == ref).all(1)
        acc = 100 * float((logits.argmax(1) == y.numpy()).mean())
        # The tmax-255 file is not a search result: agents.evaluate has nothing to compare it with.
        versus = ("" if np.isnan(torch_acc) else
                  f" vs agents.evaluate {torch_acc:.2f} % ({acc - torch_acc:+.2f} pt)")
        print(f"{'K=' + str(name) if isinstance(name, int) else name}: onnxruntime = integer reference: logits on "
              f"{100 * float(same.mean()):.2f} %, top-1 on {100 * float((logits.argmax(1) == ref.argmax(1)).mean()):.2f}"
              f" % of {len(x)} test images (max |diff| {np.abs(logits - ref).max():.2g}) | accuracy onnxruntime "
              f"{acc:.2f} %{versus}", flush=True)

    if args.no_speed:
        return 0
    res16 = results[16]
    tables16 = {n: torch.tensor(c["table"]).float()
                for n, c in json.loads(res16.read_text())["best"]["config"].items()}
    session = ort.InferenceSession(str(files[16]), providers=["CPUExecutionProvider"])
    float_model = load_float_model(checkpoint_path(args.out_dir, args.model, "float"), args.model).eval()
    batch, one = x[:256], x[:1]
    paths = {
        "onnxruntime (integer ONNX, K=16)": lambda b: session.run(None, {"pixels": b.numpy()}),
        "PyTorch fake-quant student (agents.evaluate)": lambda b: predict(teacher, b, "cpu", tables=tables16),
        "PyTorch integer reference (quant/integer.py)": lambda b: integer_logits(b, reference),
        "PyTorch float model": lambda b: predict(float_model, b, "cpu"),
    }
    through, latency = {k: [] for k in paths}, {k: [] for k in paths}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, fn in paths.items():
                fn(batch)  # warm-up
                through[name].append(256 / timed(lambda: fn(batch), 10))
                latency[name].append(1000 * timed(lambda: fn(one), 200))
    print("\n| path | images/s, batch 256 | latency, batch 1 (ms) |\n|---|---|---|")
    for name in paths:
        print(f"| {name} | {statistics.median(through[name]):.0f} | {statistics.median(latency[name]):.3f} |")
    float_ckpt = checkpoint_path(args.out_dir, args.model, "float")
    print(f"\nfile sizes: ONNX student {files[16].stat().st_size / 1024:.1f} kB | INT8 teacher checkpoint "
          f"{teacher_path.stat().st_size / 1024:.1f} kB | float checkpoint {float_ckpt.stat().st_size / 1024:.1f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
