"""The guide's whole workflow in one command: float -> QAT -> search -> eval.

    python -m agents.pipeline                 # LeNet-5, the guide's defaults
    python -m agents.pipeline --episodes 2000 --levels 8

Each stage is skipped when its output is already complete and resumed when
it was interrupted, so rerunning the command after Ctrl-C loses nothing.
The search flags are agents.search's; --seed seeds the teachers too.

Outputs know what made them. A run whose teachers' flags (--epochs,
--qat-epochs, --seed, --width) differ from the defaults goes into its own directory,
<out-dir>/<those flags>/ (e.g. outputs/seed1/), and the result's default
name carries the search options that differ (e.g. lenet5_ppo_K8_result.json):
a rerun with other flags makes its own outputs and never reuses another's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import train_baselines
from agents import search
from agents.evaluate import evaluate_result
from agents.export import export
from agents.report import report
from agents.resume import SearchCheckpoint
from common.wandb_run import start_wandb, wandb_group
from envs.config import ProblemConfig
from common.progress import duration
from models.checkpoint import checkpoint_path, load_checkpoint, stage_state
from models.data import load_cifar10
from quant.kernels import announce_kernels
from common.cli import (COMMON_FLAGS, Parser, add_common_args, add_config_args, config_from_args, non_negative_int,
                        positive_int, resolve_device, run_main)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    epochs = train_baselines.DEFAULT_EPOCHS
    p.add_argument("--epochs", type=positive_int, default=epochs["float"],
                   help=f"float epochs (default: {epochs['float']}; the guide's: 30)")
    p.add_argument("--qat-epochs", type=positive_int, default=epochs["qat"], help=f"QAT epochs (default: {epochs['qat']})")
    p.add_argument("--finetune-epochs", type=non_negative_int, default=0,
                   help="then fine-tune the student with the result's tables for this many epochs and evaluate it "
                        "too (default: 0, the guide's workflow)")
    p.add_argument("--export", action="store_true",
                   help="at the end, write the student as an integer ONNX model next to the result (agents.export)")
    add_config_args(p, ProblemConfig, skip=(*COMMON_FLAGS, "teacher"))  # the teacher is the one trained here
    add_config_args(p, search.SearchConfig)
    add_common_args(p)
    return p


def log_eval(args, cfg, test: dict, where: dict) -> None:
    """With --wandb: the test eval and the report's pictures (agents/report.py) as a run of the pipeline's group."""
    run_ = start_wandb(args.wandb, f"{cfg.result_path.stem}-eval", {"result": str(cfg.result_path)}, args.out_dir,
                       args.wandb_project)
    if run_ is None:
        return
    import wandb

    pictures = report(cfg.result_path, where["data"], where["cache_dir"], where["device"])
    run_.log({p.stem: wandb.Image(str(p)) for p in pictures})
    run_.summary.update({f"test_{k}": v for k, v in test.items()})
    run_.finish()


# The teachers' flags, in the order a run directory names them.
TEACHER_FLAGS = {"epochs": "epochs", "qat_epochs": "qat-epochs", "seed": "seed", "width": "width"}


def run_dir(args) -> str:
    """<out-dir> for the default teachers; <out-dir>/<flag><value>_... for teachers made with other flags."""
    defaults = build_parser().parse_args([])
    parts = [f"{flag}{getattr(args, k)}" for k, flag in TEACHER_FLAGS.items()
             if getattr(args, k) != getattr(defaults, k)]
    return str(Path(args.out_dir, "_".join(parts))) if parts else args.out_dir


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = run_dir(args)
    if out != args.out_dir:
        print(f"[Pipeline] the teachers' flags differ from the defaults: this run's outputs go to {out}/", flush=True)
    args.out_dir = out
    announce_kernels(resolve_device(args.device), args.backend)
    cfg = config_from_args(search.SearchConfig, args, problem=config_from_args(ProblemConfig, args))
    common = dict(model=args.model, seed=args.seed, data=args.data, cache_dir=args.cache_dir, out_dir=args.out_dir,
                  device=args.device, no_progress=args.no_progress, wandb=args.wandb, wandb_project=args.wandb_project)

    with wandb_group(args.wandb, f"pipeline-{args.model}-K{args.levels}-{time.strftime('%Y%m%d-%H%M%S')}"):
        run_stages(args, cfg, common)
    return 0


PLAN_WORDS = {"missing": "to run", "partial": "to resume", "complete": "done"}


def stage_estimate(cfg, path, state: str, n_train: int) -> str:
    """', ~N min' for a teacher stage still to run: from its own epochs' times when it is partial, else from its
    training step timed here (train_baselines.estimated_seconds)."""
    if state == "complete":
        return ""
    if state == "partial":
        history = load_checkpoint(path, cfg.model, cfg.stage)["meta"]["history"]
        seconds = (cfg.epochs - len(history)) * sum(h["seconds"] for h in history) / max(1, len(history))
    else:
        seconds = train_baselines.estimated_seconds(cfg, n_train)
    return f", ~{duration(seconds)}"


def run_stages(args, cfg, common: dict) -> None:
    teachers = []
    for stage, epochs in (("float", args.epochs), ("qat", args.qat_epochs)):
        path = checkpoint_path(args.out_dir, args.model, stage)
        extra = {"width": args.width or 1.0} if stage == "float" else {}
        stage_cfg = train_baselines.stage_config(stage, epochs=epochs, **common, **extra)
        teachers.append((stage_cfg, path, stage_state(path, args.model, stage, stage_cfg.options())))
    searched = all(state == "complete" for *_, state in teachers) and search.completed(cfg)
    n_train = len(load_cifar10(args.data, args.cache_dir, verbose=True).split()[0])
    plan = ([f"{c.stage} {c.epochs} epochs ({PLAN_WORDS[state]}{stage_estimate(c, path, state, n_train)})"
             for c, path, state in teachers]
            + [f"search {cfg.algo} {cfg.episodes} episodes ({'done' if searched else 'to run'})",
               "eval on the test set"]
            + ([f"student {args.finetune_epochs} epochs"] if args.finetune_epochs else [])
            + (["export"] if args.export else []))
    print(f"[Pipeline] {args.model}: " + " -> ".join(plan) + " (estimates from this CPU's speed now; each stage's "
          "lines give its time left)", flush=True)
    for stage_cfg, path, state in teachers:
        if state == "complete":
            print(f"[Pipeline] {stage_cfg.stage}: {path} is complete, skipping (delete it to retrain)", flush=True)
            continue
        stage_cfg.resume = state == "partial"
        train_baselines.train(stage_cfg)

    if searched or search.completed(cfg):  # read once when the plan already found it complete
        print(f"[Pipeline] search: {cfg.result_path} is complete, skipping (delete it to search again)", flush=True)
    else:
        search.run(cfg, resume=SearchCheckpoint(cfg.result_path).exists())
    where = dict(model=args.model, data=args.data, cache_dir=args.cache_dir, device=args.device)
    test = evaluate_result(cfg.result_path, **where)
    log_eval(args, cfg, test, where)
    if args.finetune_epochs:
        student = checkpoint_path(args.out_dir, args.model, "student", cfg.result_path.stem)
        state = stage_state(student, args.model, "student")
        if state == "complete":
            print(f"[Pipeline] student: {student} is complete, skipping (delete it to fine-tune again)", flush=True)
        else:
            train_baselines.train(train_baselines.stage_config(
                "student", config_path=str(cfg.result_path), epochs=args.finetune_epochs,
                resume=state == "partial", **common))
        evaluate_result(cfg.result_path, student=str(student), **where)
    if args.export:
        student = str(student) if args.finetune_epochs else None
        for path in export(str(cfg.result_path), student=student, model=args.model):
            print(f"[Export] wrote {path}", flush=True)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
