"""The quantization lower bound of LeNet-5: test drop against K, per clip rule, before and after fine-tuning.

    python -m agents.sweep sweeps/lower_bound.yaml
    python benchmarks/studies/lower_bound.py outputs/sweeps/lower_bound/results.json [more.json ...] [--png docs/img/lower_bound.png]

Reads the sweep's rows (one per teacher, K and rule), averages over the
teachers, prints a Markdown table (mean ± sd) and draws drop against K. A
later file's row replaces an earlier one of the same teacher, K and rule
(a rerun of some trials, e.g. fine-tuning with another recipe); a row's
`finetune_lr`, when present, is named in the legend.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agents.compare import group_rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="the sweep's results.json, then any reruns")
    p.add_argument("--png", default="docs/img/lower_bound.png")
    args = p.parse_args()
    merged = {}
    for path in args.results:
        for r in json.loads(Path(path).read_text()):
            merged[(r.get("teacher"), r["levels"], r["tmax_rule"])] = r
    rows = list(merged.values())
    groups = group_rows(rows, ("tmax_rule", "levels"))
    rules = sorted({r for r, _ in groups})
    levels = sorted({k for _, k in groups})

    def stat(rule, k, key):
        vals = [r[key] for r in groups.get((rule, k), []) if r.get(key) is not None]
        return (np.mean(vals), np.std(vals, ddof=1) if len(vals) > 1 else 0.0, len(vals)) if vals else None

    print("| K | " + " | ".join(f"{r} | {r} + fine-tuning" for r in rules) + " |")
    print("|---|" + "---|---|" * len(rules))
    for k in levels:
        cells = []
        for rule in rules:
            for key in ("test_drop", "finetuned_drop"):
                s = stat(rule, k, key)
                cells.append(f"{s[0]:.2f} ± {s[1]:.2f}" if s else "")
        print(f"| {k} | " + " | ".join(cells) + " |")
    teachers = len({r.get("teacher") for r in rows})

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for rule, color in zip(rules, ("#c0392b", "#2c6fbb", "#27ae60", "#8e44ad")):
        lrs = sorted({r["finetune_lr"] for r in rows if r["tmax_rule"] == rule and "finetune_lr" in r})
        tuned = f"{rule} + 3 epochs fine-tuning" + (f" (lr {', '.join(map(str, lrs))})" if lrs else "")
        for key, style, label in (("test_drop", "-", rule), ("finetuned_drop", "--", tuned)):
            pts = [(k, stat(rule, k, key)) for k in levels if stat(rule, k, key)]
            if pts:
                ks, s = zip(*pts)
                ax.errorbar(ks, [v[0] for v in s], yerr=[v[1] for v in s], ls=style, marker="o", ms=4,
                            color=color, capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(k) for k in levels])
    ax.set_xlabel("TAP budget K (levels per layer, code 0 included)")
    ax.set_ylabel("test drop (pt)")
    ax.set_title(f"LeNet-5 INT8 -> K levels: mean ± sd over {teachers} teachers", fontsize=10)
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=90)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
