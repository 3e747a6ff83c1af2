"""Tables and pictures that compare many searches (a sweep, the search-quality benchmark).

Rows are flat dicts: the swept options (algo, levels, seed, ...) and the
trial's numbers (test_drop, search_reward, ...). Seeds are averaged; every
other swept option makes a group.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from common.files import atomic_write

NUMBERS = ("search_reward", "search_drop", "test_drop", "finetuned_drop", "seconds")


def group_rows(rows: list[dict], by: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in by), []).append(r)
    return groups


def swept_keys(rows: list[dict]) -> tuple[str, ...]:
    """The options that vary between rows, seed excluded (numbers and file names are not options)."""
    skip = set(NUMBERS) | {"seed", "trial", "result_file", "test_teacher", "test_student", "finetuned_student",
                           "search_seconds", "node"}
    keys = sorted({k for r in rows for k in r} - skip)
    return tuple(k for k in keys if len({json.dumps(r.get(k)) for r in rows}) > 1)


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per group of swept options: trial count, then mean and sd of each number present."""
    by = swept_keys(rows)
    out = []
    for key, members in sorted(group_rows(rows, by).items(), key=lambda kv: json.dumps(kv[0])):
        row = dict(zip(by, key), trials=len(members))
        for name in NUMBERS:
            vals = [m[name] for m in members if m.get(name) is not None]
            if vals:
                row[f"{name}_mean"] = float(np.mean(vals))
                row[f"{name}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        out.append(row)
    return out


def write_csv(rows: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: Path):
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    atomic_write(path, write)


def plot_groups(summary: list[dict], path: Path, value: str = "test_drop", ylabel: str = "test drop (pt)") -> None:
    """Bars of a number's mean (sd as error bars) per group; one panel per value of `levels` when swept."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panel_key = "levels" if any("levels" in s for s in summary) else None
    panels = group_rows(summary, (panel_key,) if panel_key else ())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (pkey, members) in zip(axes[0], sorted(panels.items(), key=lambda kv: str(kv[0]))):
        members = [m for m in members if f"{value}_mean" in m]
        labels = [" ".join(f"{v}" for k, v in m.items()
                           if k not in (panel_key, "trials") and not k.endswith(("_mean", "_sd"))) for m in members]
        ax.bar(range(len(members)), [m[f"{value}_mean"] for m in members],
               yerr=[m[f"{value}_sd"] for m in members], color="#8fa8c8", capsize=3)
        ax.set_xticks(range(len(members)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"K = {pkey[0]}" if panel_key else "", fontsize=10)
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(curves: dict, path: Path, ylabel: str, columns: int | None = None) -> None:
    """curves {panel: {label: [per-seed arrays of a best-so-far number by episode]}}: mean over seeds,
    `columns` panels a row (default: all in one row)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = columns or len(curves)
    rows = -(-len(curves) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    for ax, (panel, by_label) in zip(axes.flat, curves.items()):
        for label, runs in sorted(by_label.items()):
            n = min(len(r) for r in runs)
            mean = np.mean([np.asarray(r[:n]) for r in runs], axis=0)
            if n == 1:  # one configuration (analytic): a level line to compare the curves with
                ax.axhline(mean[0], ls="--", color="black", lw=1, label=label)
            else:
                ax.plot(np.arange(1, n + 1), mean, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("episode (scorer calls)")
        ax.set_ylabel(ylabel)
        ax.set_title(str(panel), fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def search_curves(rows: list[dict]) -> dict:
    """Best-so-far search reward by episode, from each row's result file, grouped for plot_curves."""
    by = swept_keys(rows)
    panel_key = "levels" if "levels" in by else None
    curves: dict = {}
    for r in rows:
        hist = json.loads(Path(r["result_file"]).read_text())["reward_history"]
        panel = f"K = {r['levels']}" if panel_key else "search"
        label = " ".join(str(r[k]) for k in by if k != panel_key) or "search"
        curves.setdefault(panel, {}).setdefault(label, []).append(np.maximum.accumulate(hist))
    return curves


def write_sweep_outputs(rows: list[dict], folder: Path) -> list[Path]:
    """results.csv / results.json (every trial), summary.csv (mean and sd per group) and two PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r.get("trial", ""))
    paths = [folder / "results.csv", folder / "results.json", folder / "summary.csv",
             folder / "test_drop.png", folder / "search_curves.png"]
    write_csv(rows, paths[0])
    atomic_write(paths[1], lambda tmp: tmp.write_text(json.dumps(rows, indent=1)))
    if not rows:
        return paths[:2]
    summary = summary_rows(rows)
    write_csv(summary, paths[2])
    plot_groups(summary, paths[3])
    plot_curves(search_curves(rows), paths[4], "best search reward so far")
    return paths
