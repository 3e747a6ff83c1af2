"""Fault battery: SIGKILL at seeded random moments, then --resume, compared with an uninterrupted run.

Each case starts the real command in a subprocess, waits for its first
checkpoint, kills it with SIGKILL after a delay drawn from a seeded schedule,
resumes it (in this process), and asserts the result equals the uninterrupted
run's in everything but wall times. A damaged checkpoint must be refused with
one line, never used.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents import search
from quant.result import read_result
from models.checkpoint import load_checkpoint
from common.cli import run_main
from tests.conftest import ROOT, train_args

SCHEDULE = random.Random(21)  # the seeded kill schedule


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def kill_after_first_checkpoint(proc: subprocess.Popen, ckpt: Path, max_delay: float, timeout: float = 120.0):
    """SIGKILLs `proc` a seeded random delay after `ckpt` first appears; fails if it finished first."""
    t0 = time.monotonic()
    while not ckpt.exists():
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()}"
        assert time.monotonic() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(SCHEDULE.uniform(0.0, max_delay))
    assert proc.poll() is None, "the run finished before the kill: make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def without_times(res: dict) -> dict:
    """A result without its wall time and its own file name."""
    return {k: v for k, v in res.items() if k != "seconds"} | {"search": res["search"] | {"result_file": None}}


def search_args(out, data, cache, algo, name) -> list[str]:
    episodes = 70 if algo == "sac" else 160  # SAC learns from episode 50 (learning_starts), 4 updates a step
    return ["--algo", algo, "--episodes", str(episodes), "--checkpoint-every", "10", "--result-file", name,
            "--out-dir", str(out), "--data", str(data), "--cache-dir", str(cache), "--search-size", "60",
            "--calib-batches", "2", "--select-size", "60", "--no-progress"]


@pytest.mark.parametrize("algo", ["ppo", "sac", "random", "tpe", "greedy"])
def test_search_killed_then_resumed_writes_the_uninterrupted_result(algo, tiny_teacher, tiny_tar, cache_dir):
    full_args = search_args(tiny_teacher, tiny_tar, cache_dir, algo, f"full_{algo}.json")
    assert run_main(search.main, full_args) == 0
    full = read_result(tiny_teacher / "tri_ppo_int_codes" / f"full_{algo}.json")

    args = search_args(tiny_teacher, tiny_tar, cache_dir, algo, f"killed_{algo}.json")
    ckpt = tiny_teacher / "tri_ppo_int_codes" / f"killed_{algo}.ckpt"
    kill_after_first_checkpoint(start(["-m", "agents.search", *args]), ckpt, max_delay=0.5)
    assert not read_result(tiny_teacher / "tri_ppo_int_codes" / f"killed_{algo}.json")["complete"]
    assert run_main(search.main, args + ["--resume"]) == 0
    resumed = read_result(tiny_teacher / "tri_ppo_int_codes" / f"killed_{algo}.json")
    assert resumed["complete"] and not ckpt.exists()
    assert resumed["reward_history"] == full["reward_history"]  # the first difference, if any, is the clearest
    assert without_times(resumed) == without_times(full)


def test_a_damaged_search_checkpoint_is_refused_in_one_line(tiny_teacher, tiny_tar, cache_dir):
    args = search_args(tiny_teacher, tiny_tar, cache_dir, "random", "damaged.json")
    ckpt = tiny_teacher / "tri_ppo_int_codes" / "damaged.ckpt"
    kill_after_first_checkpoint(start(["-m", "agents.search", *args]), ckpt, max_delay=0.0)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # truncated on disk
    r = subprocess.run([sys.executable, "-m", "agents.search", *args, "--resume"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: search checkpoint {ckpt} is damaged or not a TapQuant search "
                                             f"checkpoint; delete {ckpt} and run without --resume"]


@pytest.mark.parametrize("stage", ["float", "qat", "student"])
def test_training_killed_then_resumed_is_bit_identical(stage, tiny_teacher, tiny_tar, cache_dir, tmp_path):
    from models.checkpoint import checkpoint_path
    from train_baselines import train

    kw = {"float_checkpoint": str(checkpoint_path(tiny_teacher, "lenet5", "float"))} if stage == "qat" else {}
    if stage == "student":  # the student fine-tunes the tables of a search result
        assert run_main(search.main, search_args(tiny_teacher, tiny_tar, cache_dir, "analytic", "for_student.json")) == 0
        kw = {"config_path": str(tiny_teacher / "tri_ppo_int_codes" / "for_student.json")}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    epochs_flag = "--qat-epochs" if stage == "qat" else "--epochs"
    out = tmp_path / "killed"
    cmd = ["train_baselines.py", stage, epochs_flag, "6", "--batch-size", "64", "--out-dir", str(out), "--data",
           str(tiny_tar), "--cache-dir", str(cache_dir), "--device", "cpu", "--no-progress", *flags]
    name = checkpoint_path(out, "lenet5", stage, "for_student").name
    kill_after_first_checkpoint(start(cmd), out / name, max_delay=0.3)
    assert not load_checkpoint(out / name)["meta"]["complete"]
    train(train_args(stage, out, tiny_tar, cache_dir, epochs=6, resume=True, **kw))
    full = train(train_args(stage, tmp_path / "full", tiny_tar, cache_dir, epochs=6, **kw))
    a, b = load_checkpoint(tmp_path / "full" / name), load_checkpoint(out / name)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert b["meta"]["test_acc"] == full["test_acc"]


SWEEP = """
name: {name}
grid:
  algo: [random, tpe]
options:
  episodes: 150
  checkpoint_every: 10
  search_size: 60
  calib_batches: 2
  select_size: 60
"""


def sweep_rows(folder: Path) -> list[dict]:
    """A sweep's results without times, the node that ran each trial, and file names."""
    import json

    drop = {"seconds", "search_seconds", "node", "result_file"}
    rows = json.loads((folder / "results.json").read_text())
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows), key=lambda r: r["trial"])


def sweep_argv(tmp_path, name, teacher, tar, cache, *extra) -> list[str]:
    f = tmp_path / f"{name}.yaml"
    f.write_text(SWEEP.format(name=name))
    return [str(f), "--out-dir", str(teacher), "--data", str(tar), "--cache-dir", str(cache), "--no-progress", *extra]


@pytest.fixture(scope="module")
def cluster_sweep(tiny_teacher, tiny_tar, cache_dir, tmp_path_factory) -> Path:
    """The sweep on a two-node Ray cluster on this machine (a head and a second node, 2 CPUs each: one trial
    per node); the uninterrupted run the killed sweep is compared with."""
    pytest.importorskip("ray", reason="Ray is the optional [sweep] extra (CI installs it)")
    from ray.cluster_utils import Cluster

    from agents import sweep

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        argv = sweep_argv(tmp_path_factory.mktemp("cluster"), "cluster", tiny_teacher, tiny_tar, cache_dir,
                          "--address", cluster.address)
        sweep.sweep(sweep.build_parser().parse_args(argv))
    finally:
        cluster.shutdown()
    return tiny_teacher / "sweeps" / "cluster"


def test_sweep_on_a_two_node_ray_cluster_runs_trials_on_both(cluster_sweep):
    import json

    assert len({r["node"] for r in json.loads((cluster_sweep / "results.json").read_text())}) == 2


def complete_results(folder: Path) -> dict[str, float]:
    """The complete trial results in `folder`, by name, with their modification times."""
    import json

    out = {}
    for p in folder.glob("*.json") if folder.is_dir() else []:
        try:
            if json.loads(p.read_text()).get("complete"):
                out[p.name] = p.stat().st_mtime_ns
        except ValueError:
            pass
    return out


def ray_trial_pids() -> list[int]:
    """Processes running a trial (Ray titles them ray::ImplicitFunc...)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the sweep ended before {what}: {proc.stderr.read()}"
        assert time.monotonic() - t0 < 300, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's worker through /proc")
def test_sweep_survives_a_killed_worker_and_a_killed_driver(cluster_sweep, tiny_teacher, tiny_tar, cache_dir,
                                                             tmp_path):
    """A local sweep: the first trial's worker is killed mid-search (Ray retries the trial; it resumes), then
    the driver once one trial is complete and the other has a checkpoint (--resume reruns neither from
    scratch). The results equal the uninterrupted two-node sweep's."""
    from agents import sweep

    argv = sweep_argv(tmp_path, "killed", tiny_teacher, tiny_tar, cache_dir)
    trials = tiny_teacher / "tri_ppo_int_codes" / "killed"
    proc = start(["-m", "agents.sweep", *argv])
    wait_for(proc, lambda: list(trials.glob("*.ckpt")) and ray_trial_pids(), "a trial's first checkpoint")
    for pid in ray_trial_pids():
        os.kill(pid, signal.SIGKILL)
    wait_for(proc, lambda: complete_results(trials) and list(trials.glob("*.ckpt")), "one trial done, one started")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = complete_results(trials)
    sweep.sweep(sweep.build_parser().parse_args([*argv, "--resume"]))
    assert sweep_rows(tiny_teacher / "sweeps" / "killed") == sweep_rows(cluster_sweep)
    after = complete_results(trials)
    assert all(after[name] == mtime for name, mtime in done_before.items())  # not searched again
