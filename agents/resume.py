"""What an interrupted search resumes from: the one place that knows the checkpoint's layout.

Next to the result file `<name>.json` sits `<name>.ckpt`, one file written
atomically (so `kill -9` leaves either the previous checkpoint or the new one)
and removed when the search completes. It is saved only at a *boundary*: a
moment where every env is at the start of an episode and an SB3 learner is
between two rollouts, so no half-collected rollout or half-played episode
needs saving. It holds, under a sha256 that catches a truncated or damaged
file:

    options       what the resumed search must share with the interrupted one
    tracker       episodes done, best so far, every reward, top, improvements
    seconds       search time so far
    rng           the python, numpy and torch random states
    learner       the SB3 learner's zip (policy, optimiser, step counters, last
                  observation), and an off-policy learner's replay buffer
    algo          what a learner-free algorithm needs: random's action-space
                  generator, tpe's Optuna study (greedy replays its rewards)

The score memo is not saved: it is a cache of deterministic scores, so it
changes speed, never a result. A resumed search therefore writes the result
an uninterrupted one would (wall times aside); tests/test_faults.py kills
searches with SIGKILL to check it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from common.files import atomic_write
from common.errors import UserError

CHECKPOINT_EVERY = 100  # episodes; saved at the first boundary after each multiple
FORMAT = "tapquant-search-checkpoint/2"
HOLDS = ["options", "tracker", "seconds", "rng", "learner", "action_space", "replay_buffer", "algo"]


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def space_state(space) -> dict:
    """A Gymnasium space's own generator (SB3 samples random actions from it; `random` does too)."""
    return space.np_random.bit_generator.state


def set_space_state(space, state: dict) -> None:
    space.np_random.bit_generator.state = state


class SearchCheckpoint:
    def __init__(self, result_path: Path):
        self.path = result_path.with_name(result_path.stem + ".ckpt")

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, state: dict, learner=None, algo=None) -> None:
        """Writes `state` (options, tracker, seconds) with the RNG states, the learner and `algo`."""
        state = {**state, "rng": rng_state(), "algo": algo, "learner": None, "replay_buffer": None}
        if learner is not None:
            state["learner"] = _to_bytes(learner.save)
            state["action_space"] = space_state(learner.action_space)
            if getattr(learner, "replay_buffer", None) is not None:
                state["replay_buffer"] = _to_bytes(learner.save_replay_buffer)
        payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        doc = {"format": FORMAT, "holds": HOLDS, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}
        atomic_write(self.path, lambda tmp: tmp.write_bytes(pickle.dumps(doc, protocol=pickle.HIGHEST_PROTOCOL)))

    def load(self, options: dict) -> dict:
        """The saved state; refuses a damaged file or one saved by a search with other `options`."""
        fix = f"delete {self.path} and run without --resume"
        if not self.exists():
            raise UserError(f"no search checkpoint at {self.path}; run without --resume")
        if self.path.is_dir():
            raise UserError(f"{self.path} is a checkpoint of an older TapQuant that cannot resume exactly; {fix}")
        try:
            doc = pickle.loads(self.path.read_bytes())
            ok = doc.get("format") == FORMAT and hashlib.sha256(doc["payload"]).hexdigest() == doc["sha256"]
        except Exception:  # truncated or foreign bytes: unpickling can fail in many ways
            ok = False
        if not ok:
            raise UserError(f"search checkpoint {self.path} is damaged or not a TapQuant search checkpoint; {fix}")
        state = pickle.loads(doc["payload"])
        if state.get("options") != options:
            raise UserError(f"cannot resume {self.path}: it was started with other options ({state.get('options')}); "
                            f"rerun with those, or {fix}")
        return state

    @staticmethod
    def load_learner(state: dict, cls, env):
        """The saved SB3 learner attached to `env`, or None when the state holds none."""
        if state.get("learner") is None:
            return None
        learner = cls.load(io.BytesIO(state["learner"]), env=env, device="cpu")
        set_space_state(learner.action_space, state["action_space"])
        if state.get("replay_buffer") is not None:
            learner.load_replay_buffer(io.BytesIO(state["replay_buffer"]))
        return learner

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _to_bytes(save) -> bytes:
    buf = io.BytesIO()
    save(buf)
    return buf.getvalue()
