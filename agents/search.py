"""The TAP search: an SB3 learner (or random search) on the registered env.

    python -m agents.search --model lenet5 --episodes 1000 --result-file lenet5_ppo_result.json

Writes <out-dir>/tri_ppo_int_codes/<result-file> (docs/tap.md section 7),
TensorBoard logs under <out-dir>/tb/, and, every 100 episodes, a checkpoint
that `--resume` continues from (agents/resume.py).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the TapQuant-* ids)
from agents.algos import ALGOS, algo_class, hyperparams
from agents.baselines import BASELINES
from agents.result import build_result, result_path, write_result
from agents.resume import CHECKPOINT_EVERY, SearchCheckpoint
from agents.selection import Selection, confirm
from agents.tracker import SearchTracker, TrackerCallback
from agents.wandb_run import WANDB_MODES, start_wandb
from envs import ENV_IDS
from envs.config import ProblemConfig
from envs.problem import TapProblem
from models.cli import (add_common_args, add_config_args, config_from_args, non_negative_int, option,
                        positive_int, run_main)
from models.errors import UserError


@dataclass(frozen=True)
class SearchConfig:
    """One search run: the problem it scores and how it searches it."""

    problem: ProblemConfig = field(default_factory=ProblemConfig)
    algo: str = option("ppo", "learner: ppo, a2c, sac, td3, ddpg (SB3), trpo (sb3-contrib); or a baseline: "
                       "random search, analytic (least squared code error), greedy (coordinate search from "
                       "analytic), tpe (Optuna's TPE sampler)", choices=ALGOS)
    episodes: int = option(1000, "configurations to try; one episode = one TAP per layer", type=positive_int)
    seed: int = option(0, "seed of the learner (or of the random search)", type=int)
    hyperparams: str | None = option(None, "RL Zoo-style YAML overriding the learner's defaults (agents/algos.py)")
    n_envs: int = option(1, "parallel envs (subprocesses when > 1)", type=positive_int)
    select_size: int | None = option(
        None, "with the analytic anchor: training images (never scored by the search, never the test set) on which "
              "the search's best few configurations must beat the anchor to be chosen (agents/selection.py); "
              "None: up to 20,000; 0: keep the search split's best, the guide's choice", type=non_negative_int)
    result_file: str | None = option(None, "result file name under <out-dir>/tri_ppo_int_codes/; "
                                           "None means <model>_<algo>_result.json")
    wandb: str = option("disabled", "Weights & Biases: offline needs no account or network", choices=WANDB_MODES)
    wandb_project: str | None = option(None, "W&B project; None means $WANDB_PROJECT, else tapquant")
    no_progress: bool = option(False, "no progress bar", action="store_true")

    @property
    def result_path(self) -> Path:
        name = self.result_file or f"{self.problem.model}_{self.algo}_result.json"
        return result_path(self.problem.out_dir, name)

    def search_options(self) -> dict:
        """How it searches (not the problem, nor how it is shown or logged): recorded in the result."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("wandb", "wandb_project",
                                                                                      "no_progress", "problem")}

    def resume_options(self) -> dict:
        """What a resumed search must share with the interrupted one."""
        return {**self.search_options(), "problem": self.problem.as_dict()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, ProblemConfig)
    add_config_args(p, SearchConfig)
    p.add_argument("--resume", action="store_true", help="continue an interrupted search from its checkpoint")
    add_common_args(p)
    return p


def make_logger(tb_dir: Path):
    from stable_baselines3.common.logger import configure
    return configure(str(tb_dir), ["tensorboard"])


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


def make_vec_env(cfg: SearchConfig, problem: TapProblem):
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    env_id = ENV_IDS[cfg.problem.model]
    if cfg.n_envs == 1:
        env = DummyVecEnv([lambda: Monitor(gym.make(env_id, problem=problem))])
    else:  # each subprocess builds its own problem (teacher cache) from the same config
        kw = asdict(cfg.problem)
        env = SubprocVecEnv([lambda: Monitor(gym.make(env_id, **kw)) for _ in range(cfg.n_envs)])
    env.seed(cfg.seed)
    return env


def log_best(run_, problem: TapProblem, best: dict) -> None:
    """The best configuration as a W&B table, each layer's code histogram, and the best scores in the summary."""
    import wandb

    cols = ["layer", "tmax", "b1", "b2", "n1", "n2", "n3", "K", "exact"]
    table = wandb.Table(columns=cols, data=[[n] + [c[k] for k in cols[1:]] for n, c in best["config"].items()])
    hists = {f"codes/{n}": wandb.Histogram(np_histogram=(problem.stats[n].counts.astype(float),
                                                         np.arange(257, dtype=float)))
             for n in problem.layers}
    run_.log({"best_config": table, **hists})
    run_.summary.update({f"best_{k}": best[k] for k in ("reward", "drop", "att", "kl", "acc_student")})


def run(cfg: SearchConfig, resume: bool = False) -> dict:
    """Runs the search; writes and returns its result (agents/result.py)."""
    from stable_baselines3.common.utils import set_random_seed

    params = hyperparams(cfg.algo, cfg.problem.model, ENV_IDS[cfg.problem.model], cfg.hyperparams)
    ckpt = SearchCheckpoint(cfg.result_path)
    state = ckpt.load_state(cfg.resume_options()) if resume else None
    # Build the problem once here: clear errors (missing teacher, bad data) before any subprocess starts.
    problem = TapProblem(cfg.problem)
    # The held-out check of the final choice: built now, so a bad --select-size fails before the search.
    confirming = cfg.problem.anchor != "none" and cfg.select_size != 0 and cfg.algo != "analytic"
    selection_images = Selection(problem, cfg.select_size) if confirming else None
    set_random_seed(cfg.seed)
    env = None if cfg.algo in BASELINES else make_vec_env(cfg, problem)  # baselines call the scorer directly
    if state:
        print(f"[Search] resuming after episode {state['tracker']['episodes']}", flush=True)

    options = {k: str(v) for k, v in params.items()}
    run_ = start_wandb(cfg.wandb, cfg.result_path.stem, {**cfg.resume_options(), "hyperparams": options},
                       cfg.problem.out_dir, cfg.wandb_project, sync_tensorboard=True)
    # One TensorBoard directory per invocation, so a rerun never mixes its curves into an earlier run's.
    logger = make_logger(Path(cfg.problem.out_dir) / "tb" / cfg.result_path.stem / time.strftime("run-%Y%m%d-%H%M%S"))
    t = state["tracker"] if state else {}
    tracker = SearchTracker(cfg.episodes, logger, show_progress=not cfg.no_progress, done=t.get("episodes", 0),
                            best=t.get("best"), rewards=t.get("rewards"), checkpoint_every=CHECKPOINT_EVERY,
                            top=t.get("top"), improvements=t.get("improvements"))
    t0 = time.perf_counter() - (state["seconds"] if state else 0.0)
    learner = None

    def result(complete: bool, best: dict | None = None, selection: dict | None = None) -> dict:
        return build_result(problem, search=cfg.search_options(), options=options,
                            best=best or tracker.best, selection=selection, rewards=tracker.rewards,
                            top=tracker.top, improvements=tracker.improvements, complete=complete,
                            seconds=time.perf_counter() - t0)

    def checkpoint() -> None:
        if tracker.best is None:
            return
        write_result(cfg.result_path, result(complete=False))
        ckpt.save({"options": cfg.resume_options(), "tracker": tracker.state(),
                   "seconds": time.perf_counter() - t0}, learner)

    tracker.on_checkpoint = checkpoint
    try:
        if cfg.algo == "random":
            run_random(env, tracker, cfg.seed + tracker.episodes)
        elif cfg.algo in BASELINES:
            BASELINES[cfg.algo](problem, tracker, cfg.seed)
        else:
            cls = algo_class(cfg.algo)
            learner = ckpt.load_learner(cls, env) if state else None
            if learner is None:
                try:
                    learner = cls("MlpPolicy", env, seed=cfg.seed, device="cpu", verbose=0, **params)
                except TypeError as e:
                    raise UserError(f"bad hyperparameter for {cfg.algo}: {e}") from None
            learner.set_logger(logger)
            n_steps = len(problem.layers) * (cfg.episodes - tracker.episodes + 8 * cfg.n_envs)
            learner.learn(total_timesteps=n_steps, callback=TrackerCallback(tracker), reset_num_timesteps=not state)
    except KeyboardInterrupt:
        checkpoint()
        tracker.close()
        raise
    finally:
        if env is not None:
            env.close()
    tracker.close()
    best, selection = tracker.best, None
    if selection_images is not None:
        best, selection = confirm(problem, tracker.top, selection_images)
        tables = f"the analytic tables (tmax rule {cfg.problem.tmax_rule})"
        if selection["chosen"] == "anchor":
            print(f"[Search] kept {tables}: none of the search's best {len(selection['candidates'])} beat them on "
                  f"{selection['images']} held-out training images (the search split's best had drop "
                  f"{selection['search_best']['drop']:.2f})", flush=True)
        else:
            gain = selection["candidates"][int(selection["chosen"].split()[-1]) - 1]["gain_pt"]
            print(f"[Search] chose the search's {selection['chosen']}: it beat {tables} by {gain:+.2f} pt on "
                  f"{selection['images']} held-out training images", flush=True)
    res = result(complete=True, best=best, selection=selection)
    write_result(cfg.result_path, res)
    ckpt.remove()
    logger.close()
    if run_ is not None:
        log_best(run_, problem, best)
        run_.finish()
    b = best
    print(f"[Search] wrote {cfg.result_path}", flush=True)
    print(f"[Search] {cfg.algo} | {res['seconds']:.1f}s | the result on the search split "
          f"({cfg.problem.search_size} validation images): Att {b['att']:.4f} | Reward {b['reward']:.4f}", flush=True)
    # The guide's last line (its drop is on the search split; agents.evaluate gives the test set's).
    print(f"[{cfg.algo.upper()}] Episode {tracker.episodes} | Teacher {b['acc_teacher']:.2f}% | "
          f"Student {b['acc_student']:.2f}% | Drop {b['drop']:.2f}%", flush=True)
    return res


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(SearchConfig, args, problem=config_from_args(ProblemConfig, args))
    run(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
