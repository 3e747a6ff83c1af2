"""The guide's whole workflow in one command: float -> QAT -> search -> eval.

    python -m agents.pipeline                 # LeNet-5, the guide's defaults
    python -m agents.pipeline --episodes 2000 --levels 8

Each stage is skipped when its output is already complete and resumed when
it was interrupted, so rerunning the command after Ctrl-C loses nothing.
"""

from __future__ import annotations

import argparse

from agents import evaluate, search
from agents.algos import ALGOS
from agents.result import read_result, result_path
from models import MODEL_NAMES
from models.checkpoint import checkpoint_path, load_checkpoint
from models.cli import add_common_args, non_negative_float, positive_int, run_main
from models.errors import UserError
import train_baselines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lenet5", choices=MODEL_NAMES)
    p.add_argument("--epochs", type=positive_int, default=30, help="float epochs (default 30)")
    p.add_argument("--qat-epochs", type=positive_int, default=10, help="QAT epochs (default 10)")
    p.add_argument("--episodes", type=positive_int, default=1000, help="search episodes (default 1000)")
    p.add_argument("--algo", default="ppo", choices=ALGOS)
    p.add_argument("--levels", type=positive_int, default=16)
    p.add_argument("--attention-weight", type=non_negative_float, default=50.0)
    p.add_argument("--search-size", type=positive_int, default=5000)
    p.add_argument("--calib-batches", type=positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--result-file", default=None, help="default <model>_<algo>_result.json")
    p.add_argument("--wandb", default="disabled", choices=["disabled", "offline", "online"])
    add_common_args(p)
    return p


def _stage_state(path, model: str, stage: str) -> str:
    """'missing', 'partial' or 'complete'."""
    if not path.is_file():
        return "missing"
    meta = load_checkpoint(path, model=model, stage=stage)["meta"]
    return "complete" if meta.get("complete") else "partial"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    common = ["--data", args.data] if args.data else []
    common += ["--out-dir", args.out_dir, "--device", args.device]
    if args.cache_dir:
        common += ["--cache-dir", args.cache_dir]

    for stage, epochs_flag, epochs in (("float", "--epochs", args.epochs), ("qat", "--qat-epochs", args.qat_epochs)):
        path = checkpoint_path(args.out_dir, args.model, stage)
        state = _stage_state(path, args.model, stage)
        if state == "complete":
            print(f"[Pipeline] {stage}: {path} is complete, skipping (delete it to retrain)", flush=True)
            continue
        argv_stage = [stage, "--model", args.model, epochs_flag, str(epochs), "--seed", str(args.seed), *common]
        train_baselines.main(argv_stage + (["--resume"] if state == "partial" else []))

    result_file = args.result_file or f"{args.model}_{args.algo}_result.json"
    res_path = result_path(args.out_dir, result_file)
    done = False
    if res_path.is_file():
        try:
            done = read_result(res_path).get("complete", False)
        except UserError:
            done = False
    if done:
        print(f"[Pipeline] search: {res_path} is complete, skipping (delete it to search again)", flush=True)
    else:
        resume = (res_path.with_name(res_path.stem + ".ckpt") / "tracker.json").is_file()
        search.main(["--model", args.model, "--episodes", str(args.episodes), "--algo", args.algo,
                     "--levels", str(args.levels), "--attention-weight", str(args.attention_weight),
                     "--seed", str(args.seed), "--search-size", str(args.search_size),
                     "--calib-batches", str(args.calib_batches), "--result-file", result_file, "--wandb", args.wandb, *common]
                    + (["--resume"] if resume else []))
    evaluate.main(["--config-path", str(res_path), "--model", args.model, *common])
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
