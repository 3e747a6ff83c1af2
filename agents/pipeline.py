"""The guide's whole workflow in one command: float -> QAT -> search -> eval.

    python -m agents.pipeline                 # LeNet-5, the guide's defaults
    python -m agents.pipeline --episodes 2000 --levels 8

Each stage is skipped when its output is already complete and resumed when
it was interrupted, so rerunning the command after Ctrl-C loses nothing.
The search flags are agents.search's; --seed seeds the teachers too.
"""

from __future__ import annotations

import argparse
import time

import train_baselines
from agents import search
from agents.evaluate import evaluate_result
from agents.export import export
from agents.report import report
from agents.result import read_result
from agents.resume import SearchCheckpoint
from agents.wandb_run import start_wandb, wandb_group
from envs.config import ProblemConfig
from models.checkpoint import checkpoint_path, load_checkpoint
from models.cli import (COMMON_FLAGS, add_common_args, add_config_args, config_from_args, non_negative_int,
                        positive_int, run_main)
from models.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def _refuse_if_made_otherwise(path, recorded: dict, wanted: dict, what: str) -> None:
    """An output is reused only if it was made with the options asked for now: else one error line."""
    diff = [f"{k}={recorded.get(k)!r} (asked: {v!r})" for k, v in wanted.items() if recorded.get(k) != v]
    if diff:
        raise UserError(f"{path} was made with {', '.join(diff)}; pass another --out-dir for this run, or "
                        f"delete it to {what}")


def _stage_state(path, model: str, stage: str, args=None) -> str:
    """'missing', 'partial' or 'complete'; a complete one made with other options than `args` is refused."""
    if not path.is_file():
        return "missing"
    meta = load_checkpoint(path, model=model, stage=stage)["meta"]
    if args is not None:
        _refuse_if_made_otherwise(path, meta, train_baselines.stage_options(args), f"redo the {stage} stage")
    return "complete" if meta.get("complete") else "partial"


def _search_done(cfg) -> bool:
    path = cfg.result_path
    if not path.is_file():
        return False
    try:
        res = read_result(path)
    except UserError:  # a damaged result is searched again
        return False
    if res.get("complete", False) and "search" not in res:
        raise UserError(f"{path} was made by an older TapQuant that did not record its options; pass another "
                        f"--out-dir for this run, or delete it to search again")
    if res.get("complete", False):
        _refuse_if_made_otherwise(path, made_with(res.get("search", {}), res.get("problem", {})),
                                  made_with(cfg.search_options(), cfg.problem.as_dict()), "search again")
    return res.get("complete", False)


def made_with(search_options: dict, problem: dict) -> dict:
    """What makes a search's result what it is: not where its files are, nor how it is shown."""
    return {**search_options, **{k: v for k, v in problem.items() if k not in COMMON_FLAGS}}


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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(search.SearchConfig, args, problem=config_from_args(ProblemConfig, args))
    common = dict(model=args.model, seed=args.seed, data=args.data, cache_dir=args.cache_dir, out_dir=args.out_dir,
                  device=args.device, no_progress=args.no_progress, wandb=args.wandb, wandb_project=args.wandb_project)

    with wandb_group(args.wandb, f"pipeline-{args.model}-K{args.levels}-{time.strftime('%Y%m%d-%H%M%S')}"):
        run_stages(args, cfg, common)
    return 0


def run_stages(args, cfg, common: dict) -> None:
    for stage, epochs in (("float", args.epochs), ("qat", args.qat_epochs)):
        path = checkpoint_path(args.out_dir, args.model, stage)
        stage_args = train_baselines.stage_args(stage, epochs=epochs, **common)
        state = _stage_state(path, args.model, stage, stage_args)
        if state == "complete":
            print(f"[Pipeline] {stage}: {path} is complete, skipping (delete it to retrain)", flush=True)
            continue
        stage_args.resume = state == "partial"
        train_baselines.train(stage_args)

    if _search_done(cfg):
        print(f"[Pipeline] search: {cfg.result_path} is complete, skipping (delete it to search again)", flush=True)
    else:
        search.run(cfg, resume=SearchCheckpoint(cfg.result_path).exists())
    where = dict(model=args.model, data=args.data, cache_dir=args.cache_dir, device=args.device)
    test = evaluate_result(cfg.result_path, **where)
    log_eval(args, cfg, test, where)
    if args.finetune_epochs:
        student = checkpoint_path(args.out_dir, args.model, "student", cfg.result_path.stem)
        state = _stage_state(student, args.model, "student")
        if state == "complete":
            print(f"[Pipeline] student: {student} is complete, skipping (delete it to fine-tune again)", flush=True)
        else:
            train_baselines.train(train_baselines.stage_args(
                "student", config_path=str(cfg.result_path), epochs=args.finetune_epochs,
                resume=state == "partial", **common))
        evaluate_result(cfg.result_path, student=str(student), **where)
    if args.export:
        student = str(student) if args.finetune_epochs else None
        for path in export(str(cfg.result_path), student=student, model=args.model):
            print(f"[Export] wrote {path}", flush=True)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
