"""The TAP search: an SB3 learner (or random search) on the registered env.

    python -m agents.search --model lenet5 --episodes 1000 --result-file lenet5_ppo_result.json

Writes <out-dir>/tri_ppo_int_codes/<result-file> (docs/tap.md section 7),
TensorBoard logs under <out-dir>/tb/, and, every --checkpoint-every episodes, a checkpoint
that `--resume` continues from (agents/resume.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the TapQuant-* ids)
from agents.algos import ALGOS, algo_help, hyperparams
from quant.result import build_result, read_result, result_path, write_result
from agents.resume import SearchCheckpoint, set_rng_state
from agents.selection import Selection, confirm
from agents.tracker import SearchTracker, TrackerCallback
from common.wandb_run import WANDB_MODES, start_wandb
from envs import ENV_IDS
from envs.config import ProblemConfig
from envs.problem import TapProblem
from models.checkpoint import refuse_if_made_otherwise
from common.cli import (COMMON_FLAGS, Parser, add_common_args, add_config_args, config_from_args, non_negative_int,
                        option, positive_int, run_main)
from common.errors import UserError


@dataclass(frozen=True)
class SearchConfig:
    """One search run: the problem it scores and how it searches it."""

    problem: ProblemConfig = field(default_factory=ProblemConfig)
    algo: str = option("ppo", f"the search algorithm (agents/algos.py): {algo_help()}", choices=list(ALGOS))
    episodes: int = option(1000, "configurations to try; one episode = one TAP per layer", type=positive_int)
    seed: int = option(0, "seed of the learner (or of the random search)", type=int)
    hyperparams: str | None = option(None, "RL Zoo-style YAML overriding the learner's defaults (agents/algos.py)")
    n_envs: int = option(1, "parallel envs (subprocesses when > 1)", type=positive_int)
    select_size: int | None = option(
        None, "with the analytic anchor: training images (never scored by the search, never the test set) on which "
              "the search's best few configurations must beat the anchor to be chosen (agents/selection.py); "
              "None: up to 20,000, fewer if their teacher codes would fill half the free memory; 0: keep the "
              "search split's best, the guide's choice", type=non_negative_int)
    result_file: str | None = option(None, "result file name under <out-dir>/tri_ppo_int_codes/; None means "
                                           "<model>_<algo>_result.json with the options that differ from the "
                                           "defaults in the name (e.g. lenet5_ppo_K8_seed1_result.json)")
    wandb: str = option("disabled", "Weights & Biases: offline needs no account or network", choices=WANDB_MODES)
    wandb_project: str | None = option(None, "W&B project; None means $WANDB_PROJECT, else tapquant")
    no_progress: bool = option(False, "no progress bar", action="store_true")
    checkpoint_every: int = option(100, "episodes between checkpoints that --resume continues from",
                                   type=positive_int)

    @property
    def result_path(self) -> Path:
        return result_path(self.problem.out_dir, self.result_file or self.default_result_name())

    def default_result_name(self) -> str:
        """The guide's <model>_<algo>_result.json on the default options. Options that differ are named in it
        (lenet5_ppo_K8_seed1_result.json), any others by a short hash, so that searches with other options
        never meet in one file."""
        base = SearchConfig(ProblemConfig(model=self.problem.model), algo=self.algo)
        theirs = {**base.problem.as_dict(), **base.search_options()}
        differ = {k: v for k, v in {**self.problem.as_dict(), **self.search_options()}.items()
                  if k not in NOT_IN_NAME and v != theirs[k]}
        if isinstance(differ.get("levels"), str):  # per layer: K8-4-16-8, in the layers' order
            differ["levels"] = "-".join(str(k) for k in self.problem.layer_levels.values())
        parts = [form.format(differ.pop(k)) for k, form in IN_NAME.items() if k in differ]
        if differ:
            parts.append(hashlib.sha256(json.dumps(differ, sort_keys=True).encode()).hexdigest()[:8])
        return "_".join([self.problem.model, self.algo, *parts, "result"]) + ".json"

    def search_options(self) -> dict:
        """How it searches (not the problem, nor how it is shown or logged): recorded in the result."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in SHOWN_ONLY}

    def resume_options(self) -> dict:
        """What a resumed search must share with the interrupted one."""
        return {**self.search_options(), "problem": self.problem.as_dict()}


# Options that change how a search is shown, logged or saved, never its result.
SHOWN_ONLY = ("wandb", "wandb_project", "no_progress", "checkpoint_every", "problem")
# A default result name spells these options out when they differ from their defaults, and hashes the
# rest but these: the name holds the model and algo already, and where the teacher and data come from
# (not what they are) is the out-dir's business.
IN_NAME = {"levels": "K{}", "tmax_rule": "{}", "seed": "seed{}", "episodes": "{}ep"}
NOT_IN_NAME = ("model", "algo", "result_file", "teacher", "out_dir", "data", "cache_dir", "device")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    add_config_args(p, ProblemConfig)
    add_config_args(p, SearchConfig)
    p.add_argument("--resume", action="store_true", help="continue an interrupted search from its checkpoint")
    add_common_args(p)
    return p


def make_logger(tb_dir: Path):
    from stable_baselines3.common.logger import configure
    return configure(str(tb_dir), ["tensorboard"])


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
    """Runs the search; writes and returns its result (quant/result.py)."""
    from stable_baselines3.common.utils import set_random_seed

    params = hyperparams(cfg.algo, cfg.problem.model, ENV_IDS[cfg.problem.model], cfg.hyperparams)
    ckpt = SearchCheckpoint(cfg.result_path)
    state = ckpt.load(cfg.resume_options()) if resume else None
    # Build the problem once here: clear errors (missing teacher, bad data) before any subprocess starts.
    problem = TapProblem(cfg.problem)
    # The held-out check of the final choice: built now, so a bad --select-size fails before the search.
    confirming = cfg.problem.anchor != "none" and cfg.select_size != 0 and cfg.algo != "analytic"
    selection_images = Selection(problem, cfg.select_size) if confirming else None
    set_random_seed(cfg.seed)
    spec = ALGOS[cfg.algo]
    env = make_vec_env(cfg, problem) if spec.needs_env else None  # the others call the scorer directly
    if state:
        print(f"[Search] resuming after episode {state['tracker']['episodes']}", flush=True)

    options = {k: str(v) for k, v in params.items()}
    run_ = start_wandb(cfg.wandb, cfg.result_path.stem, {**cfg.resume_options(), "hyperparams": options},
                       cfg.problem.out_dir, cfg.wandb_project, sync_tensorboard=True)
    # One TensorBoard directory per invocation, so a rerun never mixes its curves into an earlier run's.
    logger = make_logger(Path(cfg.problem.out_dir) / "tb" / cfg.result_path.stem / time.strftime("run-%Y%m%d-%H%M%S"))
    t = state["tracker"] if state else {}
    tracker = SearchTracker(cfg.episodes, logger, show_progress=not cfg.no_progress, done=t.get("episodes", 0),
                            best=t.get("best"), rewards=t.get("rewards"), checkpoint_every=cfg.checkpoint_every,
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
        ckpt.save({"options": cfg.resume_options(), "tracker": tracker.state(), "seconds": time.perf_counter() - t0},
                  learner, tracker.algo_state() if tracker.algo_state else None)

    tracker.on_checkpoint = checkpoint
    saved = state["algo"] if state else None
    try:
        if spec.runner:
            if state:
                set_rng_state(state["rng"])
            spec.load()(problem, env, tracker, cfg.seed, saved)
        else:
            cls = spec.load()
            # The whole run's step budget, the same on resume (a learner's schedules depend on it).
            n_steps = len(problem.layers) * (cfg.episodes + 8 * cfg.n_envs)
            if state:
                learner = ckpt.load_learner(state, cls, env)
                env.reset()  # the checkpoint was taken with every env at an episode's start
                set_rng_state(state["rng"])  # after loading, which reseeds
            else:
                try:
                    learner = cls("MlpPolicy", env, seed=cfg.seed, device="cpu", verbose=0, **params)
                except TypeError as e:
                    raise UserError(f"bad hyperparameter for {cfg.algo}: {e}") from None
            learner.set_logger(logger)
            learner.learn(total_timesteps=n_steps - learner.num_timesteps, callback=TrackerCallback(tracker),
                          reset_num_timesteps=not state)
    except KeyboardInterrupt:  # the last checkpoint stands: only a boundary's state resumes exactly
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
            split_drop = selection["search_best"]["drop"]
            why = " (negative: its student beat the teacher on those images, by chance)" if split_drop < 0 else ""
            print(f"[Search] kept {tables}: none of the search's best {len(selection['candidates'])} beat them on "
                  f"{selection['images']} held-out training images (the search split's best had drop "
                  f"{split_drop:.2f}{why})", flush=True)
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
          f"Student {b['acc_student']:.2f}% | Drop {b['drop']:.2f}% | on the search split "
          f"({len(problem.labels):,} images, none of them test images)", flush=True)
    return res


def completed(cfg: SearchConfig) -> dict | None:
    """`cfg`'s result when its file holds a complete search made with `cfg`'s options (reused, not searched
    again); one made with other options is refused in one line. A damaged or partial one: None."""
    path = cfg.result_path
    try:
        res = read_result(path) if path.is_file() else {}
    except UserError:
        return None
    if not res.get("complete", False):
        return None
    if "search" not in res:
        raise UserError(f"{path} was made by an older TapQuant that did not record its options; pass another "
                        f"--out-dir for this run, or delete it to search again")
    fix = (f"drop --result-file: a run with these options writes its own {cfg.default_result_name()}"
           if cfg.result_file and cfg.result_file != cfg.default_result_name() else None)
    refuse_if_made_otherwise(path, made_with(res["search"], res.get("problem", {})),
                             made_with(cfg.search_options(), cfg.problem.as_dict()), "search again", fix)
    return res


def made_with(search_options: dict, problem: dict) -> dict:
    """What makes a search's result what it is: not where its files are (the result's own name included), nor
    how it is shown."""
    return {**{k: v for k, v in search_options.items() if k != "result_file"},
            **{k: v for k, v in problem.items() if k not in COMMON_FLAGS}}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(SearchConfig, args, problem=config_from_args(ProblemConfig, args))
    run(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
