"""The guide's comparison of LeNet-5, AlexNet and VGG16, measured on trained teachers.

    python benchmarks/networks.py --net lenet5=outputs --net alexnet=outputs/alexnet \
        --net vgg16=outputs/vgg16 [--json benchmarks/networks.json] [--png-dir docs/img]
    python benchmarks/networks.py --update --net alexnet=outputs/alexnet   # add or remeasure one net

Each `--net MODEL=DIR` names a folder holding that model's float and QAT
checkpoints (train_baselines.py float / qat, any --width). Per network, on
the 10,000 test images (the test set only measures; nothing is chosen on
it):

  * what it is: width, parameters, quantized layers (conv / fc), the float
    and QAT test accuracy and training time (from the checkpoints), the
    integer-only ONNX file's size;
  * the analytic tables (quant/analytic.py) at K = 16, 8, 4 with the
    guide's clip (p90 + 10) and the mse clip: test drop, and the time to
    solve every layer's mse clip and table at K = 16;
  * depth: the mse tables at K = 4 on the first n quantized layers,
    n = 1 .. all (the others exact);
  * FC against conv: the K = 4 tables on the conv layers only, the fc
    layers only, all; and each layer alone (its sensitivity).

Writes one record per network to --json (with the CPU and the commit) and
draws test drop against K and against depth into --png-dir.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from agents.selection import Correctness  # noqa: E402
from envs.config import ProblemConfig  # noqa: E402
from envs.problem import TapProblem  # noqa: E402
from models.checkpoint import checkpoint_path, load_checkpoint  # noqa: E402
from models.data import load_cifar10  # noqa: E402
from quant.integer import export_int8  # noqa: E402
from quant.onnx_export import build_onnx  # noqa: E402

LEVELS = (16, 8, 4)
STUDY_LEVELS = 4  # depth and FC-against-conv: where the tables cost most, so differences show
GUIDE = {"lenet5": {"float": "75-80", "layers": 4}, "alexnet": {"float": "89", "layers": 7},
         "vgg16": {"float": "93", "layers": 13}}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f" ({torch.backends.cpu.get_cpu_capability()})"
    return platform.processor() or "unknown"


def commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def measure(model: str, folder: Path, data, data_arg, cache_dir) -> dict:
    float_meta = load_checkpoint(checkpoint_path(folder, model, "float"), model, "float")["meta"]
    qat_meta = load_checkpoint(checkpoint_path(folder, model, "qat"), model, "qat")["meta"]
    common = dict(model=model, out_dir=str(folder), data=data_arg, cache_dir=cache_dir, search_size=256)
    problems = {(k, rule): TapProblem(ProblemConfig(levels=k, tmax_rule=rule, **common))
                for k in LEVELS for rule in ("guide", "mse")}
    first = problems[(16, "mse")]
    qnet, layers = first.qnet, first.layers
    test = Correctness(first, data.test_x, data.test_y)
    teacher = test.correct(None)

    def drop(params: dict) -> float:
        return round(100.0 * float(teacher.mean() - test.correct(params).mean()), 2)

    t0 = time.perf_counter()
    TapProblem(ProblemConfig(levels=16, tmax_rule="mse", **common)).analytic  # noqa: B018  (solved on first use)
    analytic_seconds = time.perf_counter() - t0
    drops = {f"{rule}_K{k}": drop(p.analytic) for (k, rule), p in problems.items()}
    study = problems[(STUDY_LEVELS, "mse")].analytic
    kinds = {n: qnet.stages[qnet.stage_index(n)].kind for n in layers}
    groups = {"conv": [n for n in layers if kinds[n] == "conv"], "fc": [n for n in layers if kinds[n] == "fc"]}
    onnx_bytes = len(build_onnx(export_int8(qnet.cpu())).SerializeToString())
    return {
        "model": model, "width": float_meta.get("width", 1.0), "epochs": float_meta["epochs"],
        "qat_epochs": qat_meta["epochs"], "precision": float_meta.get("precision", "fp32"),
        "parameters": sum(w.numel() + qnet.biases[n].numel() for n, w in qnet.weights.items()),
        "quantized_layers": len(layers), "conv_layers": len(groups["conv"]), "fc_layers": len(groups["fc"]),
        "float_test_acc": round(float_meta["test_acc"], 2), "qat_test_acc": round(qat_meta["test_acc"], 2),
        "float_minutes": round(sum(h["seconds"] for h in float_meta["history"]) / 60, 1),
        "qat_minutes": round(sum(h["seconds"] for h in qat_meta["history"]) / 60, 1),
        "test_drop": drops,
        "analytic_mse_K16_seconds": round(analytic_seconds, 2),
        f"depth_K{STUDY_LEVELS}": [drop({n: study[n] for n in layers[:i]}) for i in range(1, len(layers) + 1)],
        f"groups_K{STUDY_LEVELS}": {g: drop({n: study[n] for n in names}) for g, names in
                                    {**groups, "all": layers}.items() if names},
        f"alone_K{STUDY_LEVELS}": {n: drop({n: study[n]}) for n in layers},
        "layers": layers, "onnx_kB": round(onnx_bytes / 1024, 1), "guide": GUIDE.get(model, {}),
        "cpu": cpu_name(), "commit": commit(),
    }


def pictures(records: list[dict], folder: Path) -> list[Path]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in records:
        label = f"{r['model']} (width {r['width']:g})"
        ax1.plot(LEVELS, [r["test_drop"][f"mse_K{k}"] for k in LEVELS], "o-", label=label)
        depth = r[f"depth_K{STUDY_LEVELS}"]
        ax2.plot(range(1, len(depth) + 1), depth, "o-", label=label)
    ax1.set(xscale="log", xticks=LEVELS, xticklabels=[str(k) for k in LEVELS], xlabel="levels K per layer",
            ylabel="test drop (pt)", title="analytic tables, mse clip")
    ax2.set(xlabel="tables on the first n quantized layers", ylabel="test drop (pt)",
            title=f"depth, K = {STUDY_LEVELS}")
    ax1.minorticks_off()
    for ax, where in ((ax1, "upper right"), (ax2, "lower right")):
        ax.grid(alpha=0.3)
        ax.legend(loc=where, fontsize=8)
    fig.tight_layout()
    path = folder / "networks.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def table(records: list[dict]) -> str:
    rows = ["| | " + " | ".join(f"{r['model']} (width {r['width']:g})" for r in records) + " |",
            "|---|" + "---|" * len(records)]

    def row(name, fn):
        rows.append(f"| {name} | " + " | ".join(str(fn(r)) for r in records) + " |")

    row("quantized layers (conv / fc)", lambda r: f"{r['quantized_layers']} ({r['conv_layers']} / {r['fc_layers']})")
    row("parameters", lambda r: f"{r['parameters']:,}")
    row("float test acc (guide)", lambda r: f"{r['float_test_acc']:.2f} % ({r['guide'].get('float', '-')} %)")
    row("QAT test acc", lambda r: f"{r['qat_test_acc']:.2f} %")
    for rule in ("mse", "guide"):
        row(f"test drop K = 16 / 8 / 4, {rule} clip",
            lambda r, rule=rule: " / ".join(f"{r['test_drop'][f'{rule}_K{k}']:.2f}" for k in LEVELS))
    row("float / QAT training (min)", lambda r: f"{r['float_minutes']} ({r['epochs']} ep, {r['precision']}) / "
                                               f"{r['qat_minutes']} ({r['qat_epochs']} ep)")
    row("mse tables, K = 16 (s)", lambda r: r["analytic_mse_K16_seconds"])
    row("ONNX (kB)", lambda r: r["onnx_kB"])
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", action="append", required=True, help="MODEL=DIR with its float and QAT checkpoints")
    p.add_argument("--data", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--json", default="benchmarks/networks.json")
    p.add_argument("--png-dir", default="docs/img")
    p.add_argument("--update", action="store_true",
                   help="keep --json's records of other nets (model and width), replace those measured again")
    args = p.parse_args()
    data = load_cifar10(args.data, args.cache_dir)
    records = []
    kept = json.loads(Path(args.json).read_text()) if args.update and Path(args.json).is_file() else []
    for spec in args.net:
        model, folder = spec.split("=", 1)
        t0 = time.perf_counter()
        records.append(measure(model, Path(folder), data, args.data, args.cache_dir))
        print(f"[networks] {model}: measured in {time.perf_counter() - t0:.0f} s", flush=True)
        print(json.dumps(records[-1]), flush=True)
    fresh = {(r["model"], r["width"]) for r in records}
    order = list(GUIDE)  # LeNet-5, AlexNet, VGG16: the guide's table order, then by width
    records = sorted([r for r in kept if (r["model"], r["width"]) not in fresh] + records,
                     key=lambda r: (order.index(r["model"]) if r["model"] in order else len(order), r["width"]))
    Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    for path in pictures(records, Path(args.png_dir)):
        print(f"[networks] wrote {path}")
    print(table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
