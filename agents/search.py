"""The TAP search: an SB3 learner (or random search) on the registered env.

    python -m agents.search --model lenet5 --episodes 1000 --result-file lenet5_ppo_result.json

Writes outputs/tri_ppo_int_codes/<result-file> (TAP.md section 7), TensorBoard
logs under outputs/tb/, and, every 100 episodes, a checkpoint that
`--resume` continues from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the TapQuant-* ids)
from agents.algos import ALGOS, algo_class, hyperparams
from agents.result import FORMAT, result_path, write_result
from agents.tracker import SearchTracker, TrackerCallback
from envs import ENV_IDS
from envs.problem import TapProblem
from models import MODEL_NAMES, quant_layer_names
from models.cli import add_common_args, non_negative_float, positive_int, run_main
from models.errors import UserError

CHECKPOINT_EVERY = 100  # episodes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lenet5", choices=MODEL_NAMES)
    p.add_argument("--episodes", type=positive_int, default=1000, help="configurations to try (default 1000)")
    p.add_argument("--result-file", default=None,
                   help="result file name under <out-dir>/tri_ppo_int_codes/ (default <model>_<algo>_result.json)")
    p.add_argument("--algo", default="ppo", choices=ALGOS, help="learner (default ppo); random = uniform baseline")
    p.add_argument("--hyperparams", default=None, help="RL Zoo-style YAML overriding the learner's defaults")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attention-weight", type=non_negative_float, default=50.0, help="w_att (default 50)")
    p.add_argument("--levels", type=positive_int, default=16, help="TAP budget K, 4..256 (default 16 = 4 bits)")
    p.add_argument("--layers", default=None,
                   help="comma-separated layers to approximate (default: all quantized layers), e.g. conv1,conv2")
    p.add_argument("--search-size", type=positive_int, default=5000, help="search-split images (default 5000)")
    p.add_argument("--calib-batches", type=positive_int, default=10,
                   help="training batches (128 images) for histograms and tmax (default 10)")
    p.add_argument("--teacher", default=None, help="INT8 teacher (default <out-dir>/<model>_qat_preconvert.pth)")
    p.add_argument("--n-envs", type=positive_int, default=1, help="parallel envs (subprocesses when > 1)")
    p.add_argument("--wandb", default="disabled", choices=["disabled", "offline", "online"],
                   help="Weights & Biases mode (default disabled; offline needs no account or network)")
    p.add_argument("--wandb-project", default="tapquant")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def parse_layers(text: str | None, model: str) -> list[str] | None:
    if not text:
        return None
    layers = [s.strip() for s in text.split(",") if s.strip()]
    valid = quant_layer_names(model)
    bad = [n for n in layers if n not in valid]
    if bad or not layers:
        raise UserError(f"--layers {text!r}: {bad or 'empty'} not quantized layers of {model}; "
                        f"choose from {','.join(valid)}")
    return layers


def env_kwargs(args, layers) -> dict:
    return dict(model=args.model, teacher=args.teacher, out_dir=args.out_dir, levels=args.levels,
                attention_weight=args.attention_weight, layers=layers, search_size=args.search_size,
                calib_batches=args.calib_batches, device=args.device, data=args.data, cache_dir=args.cache_dir)


def resume_key(args) -> dict:
    """The flags a resumed search must share with the interrupted one."""
    return {k: v for k, v in vars(args).items() if k not in ("resume", "no_progress", "wandb")}


def make_logger(tb_dir: Path):
    from stable_baselines3.common.logger import configure
    return configure(str(tb_dir), ["tensorboard"])


def start_wandb(args, run_name: str, config: dict, out_dir: Path):
    if args.wandb == "disabled":
        return None
    import wandb
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return wandb.init(project=args.wandb_project, name=run_name, mode=args.wandb, dir=str(out_dir),
                          config=config, sync_tensorboard=True, reinit="finish_previous")
    except Exception as e:  # no login, no network, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"W&B could not start in {args.wandb} mode ({first}); use --wandb offline "
                        f"(no account or network needed) or --wandb disabled") from None


def build_result(args, problem: TapProblem, tracker: SearchTracker, layers: list, complete: bool,
                 seconds: float) -> dict:
    return {
        "format": FORMAT, "version": 1, "complete": complete,
        "model": args.model,
        "teacher": {"path": str(Path(problem.teacher).resolve()), "sha256": problem.teacher_sha256},
        "levels": problem.levels, "attention_weight": problem.attention_weight,
        "layers": layers, "attention_layers": problem.attention_layers,
        "record_points": {n: problem.qnet.stages[problem.qnet.stage_index(n)].record_point for n in layers},
        "search_split": {"source": "validation split of the training set (models/data.py, fixed seed)",
                         "size": problem.search_size, "data_hash": problem.data_hash},
        "calib_batches": problem.calib_batches,
        "tmax": {n: problem.stats[n].tmax for n in layers},
        "p90": {n: problem.stats[n].p90 for n in layers},
        "algo": args.algo, "seed": args.seed,
        "episodes": tracker.episodes, "episodes_requested": args.episodes,
        "seconds": round(seconds, 2),
        "best": tracker.best,
        "reward_history": tracker.rewards,
    }


def run_random(env, tracker: SearchTracker, seed: int) -> None:
    """Uniform random actions: the baseline every RL search must beat."""
    env.action_space.seed(seed)
    env.reset()
    step = 0
    while not tracker.finished:
        actions = np.stack([env.action_space.sample() for _ in range(env.num_envs)])
        _, _, dones, infos = env.step(actions)
        step += env.num_envs
        tracker.update(infos, dones, step)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    layers = parse_layers(args.layers, args.model)
    env_id = ENV_IDS[args.model]
    out_dir = Path(args.out_dir)
    result_file = result_path(out_dir, args.result_file or f"{args.model}_{args.algo}_result.json")
    ckpt_dir = result_file.with_name(result_file.stem + ".ckpt")
    run_name = result_file.stem
    params = hyperparams(args.algo, args.model, env_id, args.hyperparams)

    # Build the problem once here: clear errors (missing teacher, bad data) before any subprocess starts.
    problem = TapProblem(**env_kwargs(args, layers))
    layers = problem.layers
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    set_random_seed(args.seed)
    if args.n_envs == 1:
        env = DummyVecEnv([lambda: Monitor(gym.make(env_id, problem=problem))])
    else:  # each subprocess builds its own problem (teacher cache) from the same flags
        kw = env_kwargs(args, layers)
        env = SubprocVecEnv([lambda: Monitor(gym.make(env_id, **kw)) for _ in range(args.n_envs)])
    env.seed(args.seed)

    state = None
    if args.resume:
        state_file = ckpt_dir / "tracker.json"
        if not state_file.is_file():
            raise UserError(f"no search checkpoint at {ckpt_dir}; run without --resume")
        state = json.loads(state_file.read_text())
        if state.get("args") != resume_key(args):
            raise UserError(f"cannot resume {ckpt_dir}: it was started with other flags ({state.get('args')})")
        print(f"[Search] resuming after episode {state['tracker']['episodes']}", flush=True)

    config = {**vars(args), "layers": layers, "hyperparams": {k: str(v) for k, v in params.items()}}
    run = start_wandb(args, run_name, config, out_dir)
    logger = make_logger(out_dir / "tb" / run_name)
    tracker = SearchTracker(args.episodes, logger, show_progress=not args.no_progress,
                            checkpoint_every=CHECKPOINT_EVERY,
                            **({"done": state["tracker"]["episodes"], "best": state["tracker"]["best"],
                                "rewards": state["tracker"]["rewards"]} if state else {}))
    t0 = time.perf_counter() - (state["seconds"] if state else 0.0)
    model = None

    def checkpoint(complete: bool = False) -> None:
        if tracker.best is None:
            return
        write_result(result_file, build_result(args, problem, tracker, layers, complete, time.perf_counter() - t0))
        if complete:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            return
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if model is not None:
            model.save(ckpt_dir / "model.zip")
            if hasattr(model, "replay_buffer") and model.replay_buffer is not None:
                model.save_replay_buffer(ckpt_dir / "replay_buffer.pkl")
        tmp = ckpt_dir / "tracker.json.tmp"
        tmp.write_text(json.dumps({"args": resume_key(args), "tracker": tracker.state(), "seconds": time.perf_counter() - t0}))
        tmp.replace(ckpt_dir / "tracker.json")

    tracker.on_checkpoint = checkpoint
    try:
        if args.algo == "random":
            run_random(env, tracker, args.seed + tracker.episodes)
        else:
            cls = algo_class(args.algo)
            if state and (ckpt_dir / "model.zip").is_file():
                model = cls.load(ckpt_dir / "model.zip", env=env, device="cpu")
                if (ckpt_dir / "replay_buffer.pkl").is_file():
                    model.load_replay_buffer(ckpt_dir / "replay_buffer.pkl")
            else:
                try:
                    model = cls("MlpPolicy", env, seed=args.seed, device="cpu", verbose=0, **params)
                except TypeError as e:
                    raise UserError(f"bad hyperparameter for {args.algo}: {e}") from None
            model.set_logger(logger)
            n_steps = len(layers) * (args.episodes - tracker.episodes + 8 * args.n_envs)
            model.learn(total_timesteps=n_steps, callback=TrackerCallback(tracker), reset_num_timesteps=state is None)
    except KeyboardInterrupt:
        checkpoint()
        tracker.close()
        raise
    finally:
        env.close()
    tracker.close()
    checkpoint(complete=True)
    logger.close()
    if run is not None:
        run.summary.update({"best_reward": tracker.best["reward"], "best_drop": tracker.best["drop"]})
        run.finish()
    b = tracker.best
    print(f"[Search] wrote {result_file}", flush=True)
    print(f"[Search] {args.algo} | Episodes {tracker.episodes} | {time.perf_counter() - t0:.1f}s | "
          f"search split: Teacher {b['acc_teacher']:.2f}% | Student {b['acc_student']:.2f}% | "
          f"Drop {b['drop']:.2f}% | Att {b['att']:.4f} | Reward {b['reward']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
