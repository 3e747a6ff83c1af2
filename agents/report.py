"""Pictures of what a search did: the guide's "view the histograms" step as one command.

    python -m agents.report --config-path outputs/tri_ppo_int_codes/lenet5_ppo_result.json

Writes next to the result file:

  * <result>_layers.png: per approximated layer, its INT8 code histogram on
    the calibration batches (log scale) with p90, tmax, the breakpoints b1
    and b2 and the table's levels drawn over it, and the table T(c) against
    c; the title is the test-set eval line;
  * <result>_search.png: the search reward of every episode and the best so
    far.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from agents.evaluate import evaluate_result
from quant.result import levels_label, read_result, tables_label
from envs.problem import calibration_stats
from common.cli import Parser, add_common_args, resolve_device, run_main
from models.data import load_cifar10
from quant.qat import load_teacher


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    p.add_argument("--config-path", required=True, help="result file written by agents.search")
    add_common_args(p)
    return p


def plot_layers(res: dict, stats: dict, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    layers = list(res["best"]["config"])
    fig, axes = plt.subplots(len(layers), 2, figsize=(11, 2.6 * len(layers)), squeeze=False,
                             gridspec_kw={"width_ratios": [2, 1]})
    for (hist_ax, table_ax), name in zip(axes, layers):
        cfg, st = res["best"]["config"][name], stats[name]
        table = np.asarray(cfg["table"])
        # The region the table acts on, with a margin past tmax; the rest of the tail is one number.
        top = min(255, cfg["tmax"] + max(8, cfg["tmax"] // 5))
        codes = np.arange(top + 1)
        hist_ax.bar(codes, np.maximum(st.counts[: top + 1], 0.5), width=1.0, color="#8fa8c8", log=True,
                    label=f"{int(st.counts[top + 1:].sum())} activations above level {top} not shown")
        for x, style, label in ((st.p90, ":", f"90 % of non-zero activations are below {st.p90}"),
                                (cfg["tmax"], "-", f"clip {cfg['tmax']} (higher levels saturate)"),
                                (cfg["b1"], "--", f"segment breaks {cfg['b1']}, {cfg['b2']}"), (cfg["b2"], "--", None)):
            hist_ax.axvline(x, color="#c0392b" if style == "--" else "black", ls=style, lw=1, label=label)
        levels = np.unique(table[: cfg["tmax"] + 1])
        spent = ("every level up to the clip" if cfg["exact"]
                 else f"0, then {cfg['n1']}, {cfg['n2']}, {cfg['n3']} per segment")
        hist_ax.plot(levels, np.full(len(levels), 0.7), "v", color="#c0392b", ms=4,
                     label=f"the {len(levels)} levels kept: {spent}")
        hist_ax.set_title(f"{name}: how often each INT8 activation level occurs", fontsize=9)
        hist_ax.set_xlabel("activation level (INT8 code, 0-255)", fontsize=8)
        hist_ax.set_ylabel("activations (log scale)", fontsize=8)
        hist_ax.set_xlim(-1, top + 1)
        hist_ax.set_ylim(0.3, max(st.counts.max(), 1) * 60)  # a little headroom on the log scale for the legend
        hist_ax.legend(fontsize=7, ncol=2, loc="upper right", framealpha=0.85)
        table_ax.step(codes, table[: top + 1], where="mid", color="#c0392b", label="the table")
        table_ax.plot(codes, codes, color="gray", lw=0.8, ls="--", label="unchanged")
        table_ax.set_title(f"{name}: lookup table", fontsize=9)
        table_ax.set_xlabel("activation level in", fontsize=8)
        table_ax.set_ylabel("level out", fontsize=8)
        table_ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    points = ", ".join(f"{n} = {res['record_points'].get(n, n)}" for n in layers)
    fig.text(0.5, 0.005, f"activations recorded after ReLU (the guide's record points: {points}); counted on the "
                         f"calibration images (training set)", ha="center", fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_search(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rewards = np.asarray(res["reward_history"], dtype=float)
    episodes = np.arange(1, len(rewards) + 1)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(episodes, rewards, ".", ms=2, color="#8fa8c8", label="episode reward")
    ax.plot(episodes, np.maximum.accumulate(rewards), color="#c0392b", label="best so far")
    sel = res.get("selection")
    if sel:
        top = sel["search_best"]["reward"]
        ax.plot(int(np.argmax(rewards)) + 1, top, "*", ms=12, color="#c0392b", zorder=3,
                label=f"the search split's best: {top:.2f}")
        kept = sel["chosen"] == "anchor"
        if kept:  # then `best` is the analytic tables, scored on the same search split
            ax.axhline(res["best"]["reward"], color="black", ls="--", lw=1,
                       label=f"the analytic tables: {res['best']['reward']:.2f}")
        gain = max(c["gain_pt"] for c in sel["candidates"]) if sel["candidates"] else float("nan")
        verdict = (f"held-out check ({sel['images']:,} images): the best {len(sel['candidates'])} gained at most "
                   f"{gain:+.2f} pt\nkept: " + ("the analytic tables" if kept else f"the search's {sel['chosen']}"))
        ax.text(0.99, 0.03, verdict, transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#999"})
    # A few wild early episodes would squash the rest: the bottom follows the bulk of the rewards.
    ax.set_ylim(bottom=min(np.percentile(rewards, 2), res["best"]["reward"]) - 1.0)
    ax.set_xlabel("episode")
    ax.set_ylabel("search reward -(drop + w_att * att)")
    ax.set_title(f"{res['model']} | {res['algo']} search | K={levels_label(res['levels'])} | seed {res['seed']}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(config_path, data=None, cache_dir=None, device: str = "auto") -> list[Path]:
    """Writes the two pictures next to the result file; returns their paths."""
    path = Path(config_path)
    res = read_result(path)
    ev = evaluate_result(path, data=data, cache_dir=cache_dir, device=device, verbose=False)
    dev = resolve_device(device)
    qnet = load_teacher(res["teacher"]["path"], res["model"]).to(dev)
    stats = calibration_stats(qnet, load_cifar10(data, cache_dir), res.get("calib_batches", 10), dev)
    title = (f"{res['model']} K={levels_label(res['levels'])}, {tables_label(res)}, tmax rule {res.get('tmax_rule', 'guide')}\n"
             f"test: Teacher {ev['teacher']:.2f}% | Student {ev['student']:.2f}% | Drop {ev['drop']:.2f}%")
    out = [path.with_name(f"{path.stem}_layers.png"), path.with_name(f"{path.stem}_search.png")]
    plot_layers(res, stats, title, out[0])
    plot_search(res, out[1])
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for p in report(args.config_path, args.data, args.cache_dir, args.device):
        print(f"[Report] wrote {p}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
