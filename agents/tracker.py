"""Best-so-far tracking, progress bar and per-episode logging, outside the env.

`SearchTracker` reads the `info` of finished episodes, whichever learner
produced them (an SB3 algorithm through `TrackerCallback`, or the random
baseline directly), so every algorithm is judged the same way.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from common import progress


TOP_N = 20  # distinct configurations kept, best first: what the search-quality benchmark re-scores


def _params_only(config: dict) -> dict:
    """A config's per-layer parameters without the 256-entry tables (they rebuild from the parameters)."""
    return {n: {k: v for k, v in c.items() if k != "table"} for n, c in config.items()}


class SearchTracker:
    """The search's memory: best so far, every reward, the TOP_N best distinct configurations and each
    improvement of the best (episode, reward, parameters)."""

    def __init__(self, episodes: int, logger=None, show_progress: bool = True, done: int = 0,
                 best: dict | None = None, rewards: list | None = None, checkpoint_every: int = 100,
                 top: list | None = None, improvements: list | None = None):
        self.episodes_target = episodes
        # Set by the search: saves a checkpoint. Due every `checkpoint_every` finished episodes, it runs at
        # the runner's next boundary (`at_boundary`), where the runner's whole state can be saved.
        self.on_checkpoint = None
        self.checkpoint_every = checkpoint_every
        self.checkpoint_due = False
        # Set by a learner-free runner whose state must be saved (a callable returning it).
        self.algo_state = None
        self.episodes = done
        self.best = best  # the best episode's summary (reward terms + config)
        self.rewards = list(rewards or [])
        self.top = list(top or [])
        self.improvements = list(improvements or [])
        self.logger = logger  # an SB3 Logger (TensorBoard, and W&B through sync_tensorboard)
        # A bar on a terminal; in a log (stderr not a terminal), a line every PROGRESS_INTERVAL seconds instead.
        self.bar = tqdm(total=episodes, initial=done, desc="[Search]", unit="ep", disable=None if show_progress else True)
        self.log_lines = show_progress and self.bar.disable
        self._lines = progress.LogLines(done)

    def on_episode(self, info: dict, step: int) -> None:
        self.episodes += 1
        self.rewards.append(float(info["reward"]))
        if self.best is None or info["reward"] > self.best["reward"]:
            self.best = {k: info[k] for k in ("reward", "acc_teacher", "acc_student", "drop", "att",
                                              "att_per_layer", "kl")}
            self.best["episode"] = self.episodes
            self.best["config"] = {n: {k: (np.asarray(v).tolist() if k == "table" else v) for k, v in c.items()}
                                   for n, c in info["config"].items()}
            self.improvements.append({"episode": self.episodes, "reward": self.best["reward"],
                                      "drop": self.best["drop"], "params": _params_only(info["config"])})
        self._keep_top(info)
        if self.logger is not None:
            for key in ("reward", "drop", "att", "kl", "acc_student"):
                self.logger.record(f"episode/{key}", float(info[key]))
            self.logger.record("episode/best_reward", float(self.best["reward"]))
            self.logger.record("episode/best_drop", float(self.best["drop"]))
            self.logger.record("episode/count", self.episodes)
            self.logger.dump(step)
        self.bar.set_postfix(best_reward=f"{self.best['reward']:.3f}", best_drop=f"{self.best['drop']:.2f}")
        self.bar.update(1)
        if self.log_lines and not self.finished and self._lines.due():
            n, target = self.episodes, self.episodes_target
            print(f"[Search] episode {n}/{target} | {self._lines.rate(n):.1f} ep/s | {self._lines.left(n, target)} "
                  f"left | best reward {self.best['reward']:.3f} | best drop {self.best['drop']:.2f}", flush=True)
        if self.episodes % self.checkpoint_every == 0:
            self.checkpoint_due = True

    def at_boundary(self) -> None:
        """Called by the runner where every env is at an episode's start; saves a checkpoint if one is due."""
        if self.checkpoint_due and self.on_checkpoint is not None:
            self.on_checkpoint()
        self.checkpoint_due = False

    def _keep_top(self, info: dict) -> None:
        entry = {"reward": float(info["reward"]), "drop": float(info["drop"]), "att": float(info["att"]),
                 "kl": float(info["kl"]), "episode": self.episodes, "params": _params_only(info["config"])}
        if any(t["params"] == entry["params"] for t in self.top):
            return  # the memo scores a configuration the same every time
        if len(self.top) < TOP_N or entry["reward"] > self.top[-1]["reward"]:
            self.top = sorted(self.top + [entry], key=lambda t: -t["reward"])[:TOP_N]

    def update(self, infos, dones, step: int) -> None:
        for info, done in zip(infos, dones):
            if done and "config" in info:
                self.on_episode(info, step)

    @property
    def finished(self) -> bool:
        return self.episodes >= self.episodes_target

    def state(self) -> dict:
        return {"episodes": self.episodes, "best": self.best, "rewards": self.rewards, "top": self.top,
                "improvements": self.improvements}

    def close(self) -> None:
        self.bar.close()


class TrackerCallback(BaseCallback):
    """Feeds finished episodes to the tracker and stops learning at the episode budget.

    A rollout's start is the learner's boundary (nothing half-collected) when
    the last step ended every env's episode: there the tracker may checkpoint.
    """

    def __init__(self, tracker: SearchTracker):
        super().__init__()
        self.tracker = tracker
        self._episodes_aligned = True

    def _on_rollout_start(self) -> None:
        if self._episodes_aligned:
            self.tracker.at_boundary()

    def _on_step(self) -> bool:
        self.tracker.update(self.locals["infos"], self.locals["dones"], self.num_timesteps)
        self._episodes_aligned = bool(np.all(self.locals["dones"]))
        return not self.tracker.finished
