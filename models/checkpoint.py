"""Checkpoints: atomic writes, metadata, `weights_only=True` loads, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from common.errors import UserError
from common.files import atomic_write, missing_file

FORMAT = "tapquant-checkpoint"
STAGE_FILES = {"float": "{model}_float_unfused.pth", "qat": "{model}_qat_preconvert.pth",
               "student": "{model}_student_{result}.pth"}
STAGE_COMMANDS = {"float": "python train_baselines.py float --model {model}",
                  "qat": "python train_baselines.py qat --model {model}",
                  "student": "python train_baselines.py student --config-path <result .json>"}


def checkpoint_path(out_dir: str | os.PathLike, model: str, stage: str, result: str | None = None) -> Path:
    """The guide's file names: outputs/lenet5_float_unfused.pth, outputs/lenet5_qat_preconvert.pth;
    a fine-tuned student is outputs/lenet5_student_<result name>.pth."""
    return Path(out_dir) / STAGE_FILES[stage].format(model=model, result=result)


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(path, model: str, stage: str, state_dict: dict, meta: dict, train_state: dict | None = None):
    atomic_save({"format": FORMAT, "model": model, "stage": stage, "state_dict": state_dict,
                 "meta": meta, "train_state": train_state}, path)


def load_checkpoint(path: str | os.PathLike, model: str | None = None, stage: str | None = None) -> dict:
    """Loads and validates a checkpoint; `model`/`stage` (if given) must match."""
    path = Path(path)
    make = STAGE_COMMANDS.get(stage or "", "").format(model=model or "<model>")
    if not path.is_file():
        raise UserError(missing_file("checkpoint", path, f"make it with: {make}" if make else "check the path"))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, unsafe pickle, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read checkpoint {path} ({first}); it is corrupted or not a TapQuant "
                        f"checkpoint; delete it and re-create it" + (f" with: {make}" if make else "")) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a TapQuant checkpoint (no '{FORMAT}' header)")
    if model is not None and ckpt["model"] != model:
        raise UserError(f"checkpoint {path} holds a {ckpt['model']} model, but --model is {model}; "
                        f"pass the {model} checkpoint or --model {ckpt['model']}")
    if stage is not None and ckpt["stage"] != stage:
        raise UserError(f"checkpoint {path} is a {ckpt['stage']} checkpoint, expected {stage}"
                        + (f"; make one with: {make}" if make else ""))
    return ckpt


# The recorded options a resumed run must be given again (train_baselines' StageConfig.options), as flags.
_RESUME_FLAGS = {"epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size", "seed": "--seed",
                 "weight_decay": "--weight-decay", "label_smoothing": "--label-smoothing", "crop_pad": "--crop-pad",
                 "width": "--width", "batchnorm": "--batchnorm", "precision": "--precision",
                 "distill_epochs": "--distill-epochs", "observer": "--observer", "kd_temperature": "--kd-temperature",
                 "kd_weight": "--kd-weight", "attention_weight": "--attention-weight", "clip_lr": "--clip-lr",
                 "holdout": "--holdout"}


def resume_command(path: str | os.PathLike, meta: dict) -> str:
    """The command that finishes an interrupted stage: its recorded options as flags, so that --resume's
    check that the options are the same passes (a file-valued option is named, not guessed)."""
    stage, model = meta.get("stage"), meta.get("model")
    flags = [f"--model {model}"] if stage != "student" else [f"--config-path {meta['result']['path']}"]
    for key, flag in _RESUME_FLAGS.items():
        if key in meta:
            flags.append(f"{'--qat-epochs' if (stage, key) == ('qat', 'epochs') else flag} {meta[key]}")
    if stage == "qat" and meta.get("float_checkpoint"):
        flags.append(f"--float-checkpoint {meta['float_checkpoint']}")
    flags.append(f"--out-dir {Path(path).parent}")
    files = [k for k in ("distill_from", "soft_labels") if k in meta]
    also = f" (and the same --{files[0].replace('_', '-')} file)" if files else ""
    return f"python train_baselines.py {stage} {' '.join(flags)} --resume{also}"


def load_float_model(path: str | os.PathLike, model: str):
    """The complete float model of a checkpoint, built with the BatchNorm it was trained with."""
    from models import MODELS, build_model

    ckpt = load_checkpoint(path, model=model, stage="float")
    meta = ckpt["meta"]
    if not meta.get("complete", False):
        raise UserError(f"float checkpoint {path} is unfinished (epoch {meta['epochs_done']} of {meta['epochs']}); "
                        f"finish it with: {resume_command(path, meta)}")
    batchnorm = meta.get("batchnorm", MODELS[model].legacy_batchnorm)
    net = build_model(model, batchnorm, meta.get("width", 1.0))
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError:
        raise UserError(f"float checkpoint {path} does not fit a {model} with batchnorm={batchnorm} (its weights "
                        f"belong to another BatchNorm placement or model); retrain it with: python "
                        f"train_baselines.py float --model {model}") from None
    return net


# Options that checkpoints made before they existed did not record, and the value those were made with.
UNRECORDED_DEFAULTS = {"width": 1.0, "precision": "fp32"}


def recorded_option(meta: dict, key: str):
    """What a checkpoint's metadata says of option `key` (UNRECORDED_DEFAULTS for older checkpoints)."""
    return meta.get(key, UNRECORDED_DEFAULTS.get(key))


def refuse_if_made_otherwise(path, recorded: dict, wanted: dict, what: str, fix: str | None = None) -> None:
    """An output is reused only if it was made with the options asked for now: else one error line, ending with
    `fix` when there is a shorter one than another --out-dir."""
    diff = [f"{k}={recorded_option(recorded, k)!r} (asked: {v!r})" for k, v in wanted.items()
            if recorded_option(recorded, k) != v]
    if diff:
        raise UserError(f"{path} was made with {', '.join(diff)}; "
                        + (fix or f"pass another --out-dir for this run, or delete it to {what}"))


def stage_state(path, model: str, stage: str, options: dict | None = None) -> str:
    """A training stage's output: 'missing', 'partial' or 'complete'. One made with other `options`
    (train_baselines.StageConfig.options) than asked is refused rather than reused or resumed."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    meta = load_checkpoint(path, model=model, stage=stage)["meta"]
    if options is not None:
        refuse_if_made_otherwise(path, meta, options, f"redo the {stage} stage")
    return "complete" if meta.get("complete") else "partial"
