"""What an interrupted search resumes from: the one place that knows the layout.

Next to the result file `<name>.json` sits `<name>.ckpt/`, written every
CHECKPOINT_EVERY episodes and removed when the search completes:

    tracker.json        episodes done, best so far, reward history, elapsed
                        seconds, and the options the search must resume with
    model.zip           the SB3 learner (absent for learner-free algos)
    replay_buffer.pkl   an off-policy learner's replay buffer
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.checkpoint import atomic_write
from models.errors import UserError

CHECKPOINT_EVERY = 100  # episodes


class SearchCheckpoint:
    def __init__(self, result_path: Path):
        self.dir = result_path.with_name(result_path.stem + ".ckpt")
        self._state = self.dir / "tracker.json"
        self._model = self.dir / "model.zip"
        self._buffer = self.dir / "replay_buffer.pkl"

    def exists(self) -> bool:
        return self._state.is_file()

    def save(self, state: dict, learner=None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if learner is not None:
            learner.save(self._model)
            if getattr(learner, "replay_buffer", None) is not None:
                learner.save_replay_buffer(self._buffer)
        atomic_write(self._state, lambda tmp: tmp.write_text(json.dumps(state)))

    def load_state(self, options: dict) -> dict:
        """The saved state; refuses one saved by a search with other `options`."""
        if not self.exists():
            raise UserError(f"no search checkpoint at {self.dir}; run without --resume")
        try:
            state = json.loads(self._state.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"search checkpoint {self._state} is corrupted; delete {self.dir} and run without "
                            f"--resume") from None
        if state.get("options") != options:
            raise UserError(f"cannot resume {self.dir}: it was started with other options ({state.get('options')})")
        return state

    def load_learner(self, cls, env):
        """The saved SB3 learner attached to `env`, or None when there is none."""
        if not self._model.is_file():
            return None
        learner = cls.load(self._model, env=env, device="cpu")
        if self._buffer.is_file():
            learner.load_replay_buffer(self._buffer)
        return learner

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
