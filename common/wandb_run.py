"""Weights & Biases runs: off by default, offline (no account, no network) or online when asked.

Runs go under $WANDB_DIR when the user set it, else under the output
directory; the project is --wandb-project, else $WANDB_PROJECT, else
"tapquant".
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from common.errors import UserError

WANDB_MODES = ("disabled", "offline", "online")


def start_wandb(mode: str, name: str, config: dict, out_dir, project: str | None = None,
                sync_tensorboard: bool = False):
    """A started W&B run, or None when `mode` is "disabled"; one clear error when W&B cannot start."""
    if mode == "disabled":
        return None
    import wandb

    where = Path(os.environ.get("WANDB_DIR") or out_dir)
    where.mkdir(parents=True, exist_ok=True)
    try:
        return wandb.init(project=project or os.environ.get("WANDB_PROJECT", "tapquant"), name=name, mode=mode,
                          dir=str(where), config=config, sync_tensorboard=sync_tensorboard,
                          # read here, not left to W&B: its settings keep the environment of the
                          # process's first run, so a group set later (wandb_group) would be lost
                          group=os.environ.get("WANDB_RUN_GROUP"), reinit="finish_previous")
    except Exception as e:  # no login, no network, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"W&B could not start in {mode} mode ({first}); use --wandb offline "
                        f"(no account or network needed) or --wandb disabled") from None


@contextmanager
def wandb_group(mode: str, name: str):
    """Every W&B run started inside (teachers, search, eval) joins the group `name`, unless the user set
    WANDB_RUN_GROUP; wandb.init reads the variable, so nested commands need no extra argument."""
    if mode == "disabled" or "WANDB_RUN_GROUP" in os.environ:
        yield
        return
    os.environ["WANDB_RUN_GROUP"] = name
    try:
        yield
    finally:
        del os.environ["WANDB_RUN_GROUP"]
