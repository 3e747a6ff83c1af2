"""Sweeps of searches on Ray Tune: a grid (or a random search) over the search's options.

    python -m agents.sweep sweeps/algos_k.yaml                   # local Ray
    python -m agents.sweep sweeps/algos_k.yaml --address auto    # a running Ray cluster
    python -m agents.sweep sweeps/algos_k.yaml --resume          # continue an interrupted sweep

A sweep file names the options of `python -m agents.search` (as field names:
`levels`, `attention_weight`, ...) and, optionally, the fine-tuning's:

    name: algos_k            # the sweep's folder: <out-dir>/sweeps/<name>/
    grid:                    # every combination (tune.grid_search)
      algo: [ppo, random, tpe]
      levels: [8, 16]
      seed: [0, 1]
    sample:                  # optional: drawn per trial (choice, uniform, loguniform, randint)
      attention_weight: {uniform: [10, 100]}
    num_samples: 1           # draws of `sample` per grid point
    options:                 # the same for every trial
      episodes: 300
    finetune:                # optional: fine-tune each search's student, then evaluate it too
      epochs: 3              # train_baselines.py student flags, as field names

One trial = exactly `python -m agents.search` with the trial's flags, then
the test-set eval of its result (and the fine-tuning when asked). Every
trial's flags are checked by the commands' own parsers before any trial
starts. Writes results.csv, results.json and comparison PNGs into the
sweep's folder; each trial's result file is under
<out-dir>/tri_ppo_int_codes/<name>/.

Ray is an optional extra: pip install -e ".[sweep]".
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import time
from pathlib import Path

import yaml

from common import progress
from common.files import missing_file
from common.wandb_run import WANDB_MODES
from common.cli import Parser, add_common_args, run_main
from common.errors import UserError

INSTALL = 'agents.sweep needs Ray Tune: pip install -e ".[sweep]"'
SAMPLERS = ("choice", "uniform", "loguniform", "randint")
TOP_KEYS = {"name", "grid", "sample", "num_samples", "options", "finetune"}
# Flags a trial sets itself: where its result goes, and no progress bar inside a worker.
RESERVED = {"result_file", "no_progress", "resume", "wandb", "wandb_project", "out_dir", "data", "cache_dir",
            "device"}


def as_flags(name: str, value) -> list[str]:
    """One option as command-line flags: `levels: 8` -> ['--levels', '8']; booleans as switches."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else []
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return [flag, str(value)]


def _strict(parser: argparse.ArgumentParser, where: str) -> argparse.ArgumentParser:
    """The parser, raising one UserError line instead of printing usage and exiting."""
    def error(message: str):
        raise UserError(f"{where}: {message}")
    parser.error = error
    for action in parser._actions:  # the subcommands' parsers too
        for sub in getattr(action, "choices", None) or {}:
            if isinstance(action.choices, dict):
                action.choices[sub].error = error
    return parser


class SweepSpec:
    """A sweep file, read and checked: every trial's flags parse and every model has its teacher."""

    def __init__(self, path: str | os.PathLike, common: dict):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(missing_file("sweep file", self.path, "see sweeps/ for examples"))
        try:
            doc = yaml.safe_load(self.path.read_text())
        except yaml.YAMLError as e:
            raise UserError(f"sweep file {self.path} is not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(doc, dict):
            raise UserError(f"sweep file {self.path} must be a mapping with 'name' and 'grid' or 'sample'")
        unknown = set(doc) - TOP_KEYS
        if unknown:
            raise UserError(f"sweep file {self.path}: unknown key(s) {sorted(unknown)}; "
                            f"allowed: {sorted(TOP_KEYS)}")
        self.name = str(doc.get("name") or self.path.stem)
        self.grid = self._mapping(doc, "grid")
        self.sample = self._mapping(doc, "sample")
        self.options = self._mapping(doc, "options")
        self.finetune = self._mapping(doc, "finetune")
        self.num_samples = doc.get("num_samples", 1)
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise UserError(f"sweep file {self.path}: num_samples must be a positive integer")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise UserError(f"sweep file {self.path}: grid.{key} must be a non-empty list")
        for key, spec in self.sample.items():
            if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in SAMPLERS
                    and isinstance(next(iter(spec.values())), list)):
                raise UserError(f"sweep file {self.path}: sample.{key} must be one of "
                                f"{{{'|'.join(SAMPLERS)}: [...]}}")
        # Ray runs a trial in its own working directory: teachers named relative to this one are made absolute.
        if "teacher" in self.options:
            self.options["teacher"] = str(Path(self.options["teacher"]).resolve())
        if isinstance(self.grid.get("teacher"), list):
            self.grid["teacher"] = [str(Path(t).resolve()) for t in self.grid["teacher"]]
        self.common = common
        self.check()

    def _mapping(self, doc: dict, key: str) -> dict:
        value = doc.get(key) or {}
        if not isinstance(value, dict):
            raise UserError(f"sweep file {self.path}: '{key}' must be a mapping of option names to values")
        reserved = RESERVED & set(value)
        if reserved:
            raise UserError(f"sweep file {self.path}: {key} sets {sorted(reserved)}, which the sweep sets itself")
        return value

    def points(self):
        """Every grid point; each sampled option at each of its listed values, or at both bounds of its range."""
        keys = list(self.grid) + list(self.sample)
        values = list(self.grid.values()) + [next(iter(s.values())) for s in self.sample.values()]
        for combo in itertools.product(*values):
            yield dict(zip(keys, combo))

    def check(self) -> None:
        seen = set()
        if not self.grid and not self.sample:
            raise UserError(f"sweep file {self.path}: give a 'grid' or a 'sample' to sweep over")
        if self.finetune:
            parse_finetune(self.finetune, "result.json", self.common, f"sweep file {self.path} (finetune)")
        for point in self.points():
            cfg = parse_search({**self.options, **point}, self.common, f"sweep file {self.path}")
            model = cfg.problem.model
            if (model, cfg.problem.teacher) not in seen:
                seen.add((model, cfg.problem.teacher))
                if not cfg.problem.teacher_path.is_file():
                    raise UserError(f"sweep file {self.path}: no teacher for {model} at {cfg.problem.teacher_path}; "
                                    f"train it first: python -m agents.pipeline --model {model} --episodes 1")

    def param_space(self) -> dict:
        from ray import tune

        space = {k: tune.grid_search(v) for k, v in self.grid.items()}
        for k, spec in self.sample.items():
            kind, args = next(iter(spec.items()))
            space[k] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
        return space

    @property
    def n_trials(self) -> int:
        n = 1
        for v in self.grid.values():
            n *= len(v)
        return n * self.num_samples


def parse_search(trial: dict, common: dict, where: str):
    """The SearchConfig that `python -m agents.search` builds from this trial's options (UserError if bad)."""
    from agents import search
    from envs.config import ProblemConfig
    from common.cli import config_from_args

    argv = [a for k, v in {**common, **trial}.items() if v is not None for a in as_flags(k, v)]
    args = _strict(search.build_parser(), where).parse_args(argv)
    return config_from_args(search.SearchConfig, args, problem=config_from_args(ProblemConfig, args))


def parse_finetune(finetune: dict, config_path, common: dict, where: str, resume: bool = False):
    """The flags `python train_baselines.py student` parses for this trial's fine-tuning (UserError if bad)."""
    import train_baselines

    argv = ["student", "--config-path", str(config_path), "--no-progress"] + (["--resume"] if resume else [])
    argv += [a for k, v in {**common, **finetune}.items() if v is not None for a in as_flags(k, v)]
    return train_baselines.config_of(_strict(train_baselines.build_parser(), where).parse_args(argv))


def trial_result_file(common: dict, sweep_name: str, params: dict) -> str:
    """Where a trial's result goes, as an absolute path (Ray runs a trial in its own working directory)."""
    from quant.result import RESULT_DIR

    return str(Path(common["out_dir"]).resolve() / RESULT_DIR / sweep_name / f"{trial_key(params)}.json")


def trial_key(params: dict) -> str:
    """A file-name-safe name of one trial from its swept values: 'algo=ppo_levels=8_seed=0'."""
    text = "_".join(f"{k}={v}" for k, v in sorted(params.items()))
    return "".join(c if c.isalnum() or c in "=._-" else "-" for c in text)


def run_trial(config: dict) -> None:
    """Ray Tune function trainable: one search (+ fine-tuning) and its test eval; reports the numbers once.

    Idempotent, so Ray may restart it after a killed worker or driver: a complete search is reused, an
    interrupted one resumes exactly from its checkpoint, and so does the fine-tuning.
    """
    import ray
    from ray import tune

    from agents import search
    from agents.evaluate import evaluate_result
    from agents.resume import SearchCheckpoint
    import train_baselines
    from models.checkpoint import checkpoint_path, stage_state

    spec, params = config["_spec"], {k: v for k, v in config.items() if k != "_spec"}
    key = trial_key(params)
    cfg = parse_search({**spec["options"], **params, "result_file": trial_result_file(spec["common"], spec["name"], params),
                        "no_progress": True, "wandb": "disabled"}, spec["common"], "trial")
    if not cfg.problem.teacher_path.is_file():  # a node that does not see the shared --out-dir
        raise UserError(f"node {ray.util.get_node_ip_address()}: no teacher at {cfg.problem.teacher_path}; every node "
                        f"must see --out-dir, --data and the cache at the same path (README: Scale out)")
    path = cfg.result_path
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = search.completed(cfg) or search.run(cfg, resume=SearchCheckpoint(path).exists())
    where = {k: spec["common"].get(k) for k in ("data", "cache_dir", "device")}
    ev = evaluate_result(path, verbose=False, **where)
    best = res["best"]
    out = {"trial": key, "result_file": str(path), "search_reward": best["reward"], "search_drop": best["drop"],
           "test_teacher": ev["teacher"], "test_student": ev["student"], "test_drop": ev["drop"],
           "search_seconds": res["seconds"], "node": ray.get_runtime_context().get_node_id()}
    if spec["finetune"]:
        student = checkpoint_path(spec["common"]["out_dir"], cfg.problem.model, "student", path.stem)
        state = stage_state(student, cfg.problem.model, "student")
        if state != "complete":
            train_baselines.train(parse_finetune(spec["finetune"], path, spec["common"], "trial",
                                                 resume=state == "partial"))
        ev2 = evaluate_result(path, verbose=False, student=str(student), **where)
        out.update(finetuned_student=ev2["student"], finetuned_drop=ev2["drop"])
    out["seconds"] = time.perf_counter() - t0
    tune.report(out)


def _progress_callback(total: int, show: bool):
    """A Ray Tune callback showing trials done / running / left and an ETA: tqdm's bar on a terminal, a plain line
    every PROGRESS_INTERVAL seconds in a log (common/progress.py)."""
    from ray import tune
    from tqdm import tqdm

    class Progress(tune.Callback):
        def __init__(self):
            self.bar = tqdm(total=total, desc="[Sweep] trials", unit="trial", disable=None if show else True)
            self.log_lines = show and self.bar.disable
            self.running, self.done = set(), 0  # a disabled tqdm bar counts nothing
            self.lines = progress.LogLines()

        def _show(self):
            left = total - self.done - len(self.running)
            self.bar.set_postfix(running=len(self.running), left=max(left, 0))

        def on_step(self, iteration, trials, **info):
            if not self.log_lines or not self.lines.due():
                return
            eta = f" | {self.lines.left(self.done, total)} left" if self.done else ""
            print(f"[Sweep] trials {self.done}/{total} done | {len(self.running)} running | "
                  f"{progress.duration(self.lines.now - self.lines.start)} so far{eta}", flush=True)

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self._show()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.running.discard(trial.trial_id)
            self.done += 1
            self.bar.update(1)
            self._show()

        on_trial_error = on_trial_complete

        def on_experiment_end(self, trials, **info):
            self.bar.close()

    return Progress()


def _wandb_callback(mode: str, project: str | None, group: str, where: Path):
    """Ray's own W&B integration: one W&B run per trial, grouped by the sweep's name."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    if mode == "offline":
        os.environ["WANDB_MODE"] = "offline"  # Ray then asks for no API key
    where = Path(os.environ.get("WANDB_DIR") or where)
    where.mkdir(parents=True, exist_ok=True)
    return WandbLoggerCallback(project=project or os.environ.get("WANDB_PROJECT", "tapquant"), group=group,
                               mode=mode, dir=str(where), excludes=["_spec"])


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    p.add_argument("sweep_file", help="a sweep YAML (see sweeps/)")
    p.add_argument("--address", default=None,
                   help="a running Ray cluster (e.g. auto or ray://host:10001); default: start a local Ray")
    p.add_argument("--cpus-per-trial", type=float, default=None,
                   help="CPUs Ray gives each trial, and so its threads (default: the threads one search uses alone, "
                        "so that a trial computes exactly what python -m agents.search does; fewer run more trials "
                        "at once, but PPO's float rounding, and so its search, then differs)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep (Ray Tune's restore)")
    p.add_argument("--wandb", default="disabled", choices=WANDB_MODES,
                   help="one W&B run per trial through Ray's W&B integration, grouped by the sweep's name")
    p.add_argument("--wandb-project", default=None, help="W&B project (default: $WANDB_PROJECT, else tapquant)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def _absolute(common: dict) -> dict:
    """Paths made absolute: Ray runs each trial in its own working directory."""
    from common.cli import default_data_path

    out = dict(common)
    out["out_dir"] = str(Path(common["out_dir"]).resolve())
    data = common["data"] or default_data_path()
    out["data"] = str(Path(data).resolve())
    if common["cache_dir"]:
        out["cache_dir"] = str(Path(common["cache_dir"]).resolve())
    return out


def connect_ray(ray, address: str | None) -> None:
    """ray.init on `address` (None: a local Ray), or one error line naming the address and the fix.

    A host:port is tried with a plain TCP connection first, so an unreachable
    cluster fails in seconds instead of Ray's own retries."""
    fix = ("start one with: ray start --head, and with token authentication set RAY_AUTH_MODE=token and its token "
           "here too (README: Scale out); or leave out --address for a local Ray")
    if address and address != "auto":
        hostport = address.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--address {address}: expected auto, host:port or ray://host:port")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as e:
            raise UserError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); {fix}") from None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--address {address}: cannot connect to Ray ({first}); {fix}") from None


def sweep(args) -> list[dict]:
    """Runs (or resumes) the sweep; writes and returns its results table."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no experiment tables, our bar only
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UserError(INSTALL) from None
    from agents.compare import write_sweep_outputs

    common = _absolute({k: getattr(args, k) for k in ("data", "cache_dir", "out_dir", "device")})
    spec = SweepSpec(args.sweep_file, common)
    root = Path(common["out_dir"]) / "sweeps"
    folder = root / spec.name
    exists = tune.Tuner.can_restore(str(folder)) if folder.exists() else False
    if args.resume and not exists:
        raise UserError(f"--resume: no sweep to continue in {folder}; run without --resume to start it")
    if exists and not args.resume:
        raise UserError(f"sweep {spec.name!r} already ran in {folder}; pass --resume to continue it, "
                        f"or delete the folder to start again")

    connect_ray(ray, args.address)
    callbacks = [_progress_callback(spec.n_trials, not args.no_progress)]
    if args.wandb != "disabled":
        callbacks.append(_wandb_callback(args.wandb, args.wandb_project, spec.name, folder))
    import torch

    trainable = tune.with_resources(run_trial, {"cpu": args.cpus_per_trial or torch.get_num_threads()})
    run_config = tune.RunConfig(name=spec.name, storage_path=str(root), callbacks=callbacks, verbose=0,
                                failure_config=tune.FailureConfig(max_failures=1))
    spec_dict = {"name": spec.name, "options": spec.options, "finetune": spec.finetune, "common": common}
    if args.resume:
        tuner = tune.Tuner.restore(str(folder), trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space={**spec.param_space(), "_spec": spec_dict},
                           tune_config=tune.TuneConfig(num_samples=spec.num_samples), run_config=run_config)
    t0 = time.perf_counter()
    grid = tuner.fit()
    ray.shutdown()
    rows, errors = [], 0
    for r in grid:
        if r.error is not None:
            errors += 1
            continue
        params = {k: v for k, v in r.config.items() if k != "_spec"}
        rows.append({**params, **{k: r.metrics[k] for k in r.metrics if k in METRICS}})
    paths = write_sweep_outputs(rows, folder)
    print(f"[Sweep] {spec.name}: {len(rows)} trials done, {errors} failed, in {time.perf_counter() - t0:.0f}s",
          flush=True)
    for p in paths:
        print(f"[Sweep] wrote {p}", flush=True)
    if errors:
        raise UserError(f"{errors} trial(s) failed; their logs are under {folder}; "
                        f"rerun with --resume to retry them")
    return rows


METRICS = ("trial", "result_file", "search_reward", "search_drop", "test_teacher", "test_student", "test_drop",
           "search_seconds", "finetuned_student", "finetuned_drop", "seconds", "node")


def main(argv=None) -> int:
    sweep(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
