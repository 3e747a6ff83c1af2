"""The search's result file (docs/tap.md section 7): its schema, written atomically and read strictly."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from models import MODEL_NAMES
from common.files import atomic_write, file_sha256, missing_file
from common.errors import UserError
from quant.tap import TapParams, build_table

FORMAT = "tapquant-result"
RESULT_DIR = "tri_ppo_int_codes"  # the guide's folder name; it holds the results of every --algo


def result_path(out_dir: str | os.PathLike, result_file: str) -> Path:
    """A relative result file (a name, or sub/name) is under <out_dir>/tri_ppo_int_codes/; an absolute one stays."""
    p = Path(result_file)
    return p if p.is_absolute() else Path(out_dir) / RESULT_DIR / p


def build_result(problem, *, search: dict, options: dict, best: dict | None, rewards: list, complete: bool,
                 seconds: float, top: list = (), improvements: list = (), selection: dict | None = None) -> dict:
    """The result file's content for a search on `problem` (envs/problem.TapProblem) with `search`, its
    options (agents.search.SearchConfig.search_options) and `options`, the learner's hyperparameters."""
    cfg, layers = problem.config, problem.layers
    return {
        "format": FORMAT, "version": 1, "complete": complete,
        "model": cfg.model, "width": problem.qnet.width,
        "teacher": {"path": str(Path(problem.teacher_path).resolve()), "sha256": problem.teacher_sha256},
        "levels": problem.levels if isinstance(cfg.levels, str) else cfg.levels, "attention_weight": cfg.attention_weight,
        "layers": layers, "attention_layers": problem.attention_layers,
        "record_points": {n: problem.qnet.stages[problem.qnet.stage_index(n)].record_point for n in layers},
        "search_split": {"source": "validation split of the training set (models/data.py, fixed seed), then "
                                   "training images after the calibration batches",
                         "size": cfg.search_size, "training_images": problem.search_train_images,
                         "data_hash": problem.data_hash},
        "calib_batches": cfg.calib_batches,
        "anchor": cfg.anchor,
        "tmax_rule": cfg.tmax_rule,
        "problem": cfg.as_dict(),  # the whole ProblemConfig
        "search": search,  # the whole search configuration: algo, episodes, seed, select_size, ...
        "backend": problem.kernels.name,
        "tmax": {n: problem.stats[n].tmax for n in layers},  # the rule's clip (search: where its moves start)
        "p90": {n: problem.stats[n].p90 for n in layers},
        "algo": search["algo"], "seed": search["seed"], "options": options,
        "episodes": len(rewards), "episodes_requested": search["episodes"],
        "seconds": round(seconds, 2),
        "best": best,
        "selection": selection,  # how `best` was confirmed on held-out images (agents/selection.py), or None
        "reward_history": rewards,
        "top": list(top),  # the best distinct configurations (parameters only), best first
        "improvements": list(improvements),  # each new best: episode, reward, drop, parameters
    }


def write_result(path: str | os.PathLike, result: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))


# agents.search's default result names: <model>_<algo>[_K<k>][_<clip rule>][_seed<n>][_<n>ep]_result.json
_DEFAULT_NAME = re.compile(r"(?P<model>[a-z0-9]+)_(?P<algo>[a-z0-9]+)(?:_K(?P<levels>\d+))?"
                           r"(?:_(?P<rule>guide|mse|search|p\d+(?:\.\d*)?))?(?:_seed(?P<seed>-?\d+))?"
                           r"(?:_(?P<episodes>\d+)ep)?_result\.json")


def make_result_hint(name: str) -> str:
    """How to make a missing result file: the search whose default name it is (flags read off the name), or,
    for any other name, no command (a suggested one would write other options under that name)."""
    m = _DEFAULT_NAME.fullmatch(name)
    if not m or m["model"] not in MODEL_NAMES:
        return (f"make it with: python -m agents.search --result-file {name} and the options it should hold "
                "(python -m agents.search --help)")
    flags = [f"--model {m['model']}", f"--algo {m['algo']}"]
    for key, flag in (("levels", "--levels"), ("rule", "--tmax-rule"), ("seed", "--seed"), ("episodes", "--episodes")):
        if m[key] is not None:
            flags.append(f"{flag} {m[key]}")
    return "make it with: python -m agents.search " + " ".join(flags)


def read_result(path: str | os.PathLike) -> dict:
    """Loads a result file and checks everything evaluate relies on; UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(missing_file("result file", path, make_result_hint(path.name)))
    try:
        res = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"result file {path} is not valid JSON ({e}); rerun the search to re-create it") from None

    def bad(what: str):
        return UserError(f"result file {path} is malformed: {what}; rerun the search to re-create it")

    if not isinstance(res, dict) or res.get("format") != FORMAT:
        raise bad(f"no '{FORMAT}' header")
    for key in ("model", "teacher", "levels", "best", "layers"):
        if key not in res:
            raise bad(f"missing '{key}'")
    if res["model"] not in MODEL_NAMES:
        raise bad(f"unknown model {res['model']!r}")
    teacher = res["teacher"]
    if not isinstance(teacher, dict) or not isinstance(teacher.get("path"), str) or not isinstance(teacher.get("sha256"), str):
        raise bad("'teacher' must hold 'path' and 'sha256'")
    best = res["best"]
    if not isinstance(best, dict) or not isinstance(best.get("config"), dict):
        raise bad("'best' must hold 'config'")
    for name, cfg in best["config"].items():
        try:
            params = TapParams(**{k: cfg[k] for k in TapParams.__dataclass_fields__})
            table = [int(v) for v in cfg["table"]]
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"layer {name!r}: {e}")
        if len(table) != 256 or any(not 0 <= v <= 255 for v in table):
            raise bad(f"layer {name!r}: the table must hold 256 codes in 0..255")
        try:
            rebuilt = build_table(params).tolist()
        except ValueError as e:
            raise bad(f"layer {name!r}: {e}")
        if rebuilt != table:
            raise bad(f"layer {name!r}: the table does not match its parameters")
    return res


def checked_teacher(res: dict, config_path, teacher: str | os.PathLike | None = None) -> Path:
    """The teacher a result was searched on: `teacher`, else the path it names; refused unless its sha256 matches."""
    path = Path(teacher or res["teacher"]["path"])
    if not path.is_file():
        raise UserError(f"teacher checkpoint {path} (named in {config_path}) not found; "
                        f"pass --teacher with the checkpoint the search used")
    if file_sha256(path) != res["teacher"]["sha256"]:
        raise UserError(f"teacher {path} is not the checkpoint the search of {config_path} used (sha256 differs); "
                        f"rerun the search with this teacher, or pass --teacher with the original one")
    return path


def read_checked(config_path: str | os.PathLike, model: str | None = None) -> dict:
    """read_result, refusing a result of another model than `model` (when given)."""
    res = read_result(config_path)
    if model and res["model"] != model:
        raise UserError(f"{config_path} is a {res['model']} result, but --model is {model}")
    return res


def finetune_source(config_path: str | os.PathLike, model: str | None = None) -> dict:
    """What fine-tuning a student for a result needs, checked: the model, the teacher (path, sha256) that
    must still be the one searched, the tables, and the result's own path and sha256."""
    res = read_checked(config_path, model)
    checked_teacher(res, config_path)
    return {"model": res["model"], "teacher": res["teacher"],
            "tables": {n: c["table"] for n, c in res["best"]["config"].items()},
            "params": {n: {k: v for k, v in c.items() if k != "table"} for n, c in res["best"]["config"].items()},
            "result": {"path": str(Path(config_path).resolve()), "sha256": file_sha256(config_path)}}


def levels_label(levels) -> str:
    """A result's K: one number, or per layer (agents.allocate) as conv1=8,conv2=16,..."""
    return ",".join(f"{n}={k}" for n, k in levels.items()) if isinstance(levels, dict) else str(levels)


def tables_label(res: dict) -> str:
    """What a result's tables are, in words: a search's choice, or the analytic tables it kept."""
    algo = res.get("algo")
    if algo == "analytic":
        return "the analytic tables"
    if (res.get("selection") or {}).get("chosen") == "anchor":
        return f"the analytic tables, kept by the {algo} search"
    return f"the {algo} search's tables"
