"""agents.sweep: a real 2-trial sweep on local Ray, and the sweep file's checks before any trial starts."""

import json

import pytest

from common.cli import run_main
from common.errors import UserError
from tests.conftest import wandb_log

ray = pytest.importorskip("ray", reason="Ray is the optional [sweep] extra (CI installs it)")


def write(tmp_path, text: str):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def common(out, tar, cache):
    return ["--out-dir", str(out), "--data", str(tar), "--cache-dir", str(cache), "--no-progress"]


TWO_TRIALS = """
name: two
grid:
  algo: [random, analytic]
options:
  episodes: 6
  search_size: 60
  calib_batches: 2
  levels: 8
"""


def test_two_trial_sweep_on_local_ray_logged_to_wandb_offline(tiny_teacher, tiny_tar, cache_dir, tmp_path,
                                                                monkeypatch):
    from agents import search, sweep
    from agents.evaluate import evaluate_result

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    rows = sweep.sweep(sweep.build_parser().parse_args([str(write(tmp_path, TWO_TRIALS)), "--wandb", "offline",
                                                         *common(tiny_teacher, tiny_tar, cache_dir)]))
    assert sorted(r["algo"] for r in rows) == ["analytic", "random"]
    # one W&B run per trial, with the trial's numbers, grouped by the sweep's name
    runs = list((tmp_path / "wb").rglob("offline-run-*"))
    assert len(runs) == 2
    for run in runs:
        log = wandb_log(run, b"test_drop")
        assert b"test_drop" in log and b"two" in log
    folder = tiny_teacher / "sweeps" / "two"
    table = json.loads((folder / "results.json").read_text())
    assert len(table) == 2 and (folder / "results.csv").read_text().count("\n") == 3
    for name in ("test_drop.png", "search_curves.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    # A trial is exactly agents.search with its flags: the same seed gives the same search.
    rnd = next(r for r in rows if r["algo"] == "random")
    assert rnd["result_file"] == str(tiny_teacher / "tri_ppo_int_codes" / "two" / "algo=random.json")
    assert run_main(search.main, ["--algo", "random", "--episodes", "6", "--search-size", "60", "--calib-batches",
                                  "2", "--levels", "8", "--result-file", "alone.json",
                                  *common(tiny_teacher, tiny_tar, cache_dir)]) == 0
    alone = json.loads((tiny_teacher / "tri_ppo_int_codes" / "alone.json").read_text())
    trial = json.loads(open(rnd["result_file"]).read())
    assert alone["reward_history"] == trial["reward_history"] and alone["best"]["config"] == trial["best"]["config"]
    ev = evaluate_result(tiny_teacher / "tri_ppo_int_codes" / "alone.json", data=tiny_tar, cache_dir=cache_dir,
                         verbose=False)
    assert ev["drop"] == pytest.approx(rnd["test_drop"])
    # Ran once already: a second start is refused, --resume finds every trial done.
    with pytest.raises(UserError, match="--resume"):
        sweep.sweep(sweep.build_parser().parse_args([str(tmp_path / "s.yaml"),
                                                     *common(tiny_teacher, tiny_tar, cache_dir)]))


def test_in_a_log_the_sweep_prints_a_line_at_each_interval(monkeypatch, capsys):
    from agents import sweep
    from common import progress

    monkeypatch.setattr(progress, "PROGRESS_INTERVAL", 0.0)
    bar = sweep._progress_callback(3, show=True)  # pytest's stderr is not a terminal: lines, no bar
    bar.on_trial_start(0, [], type("Trial", (), {"trial_id": "a"})())
    bar.on_step(0, [])
    bar.on_trial_complete(1, [], type("Trial", (), {"trial_id": "a"})())
    bar.on_step(1, [])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[Sweep] trials")]
    assert lines[0].startswith("[Sweep] trials 0/3 done | 1 running | ") and lines[1].endswith(" left")
    assert len(lines) == 2


@pytest.mark.parametrize("text,message", [
    ("grid: {algo: [ppo]}\nbogus: 1\n", "unknown key"),
    ("grid: {algoo: [ppo]}\n", "unrecognized arguments: --algoo"),
    ("grid: {levels: [2]}\n", "levels K must be in 4..256"),
    ("grid: {algo: [bandit]}\n", "invalid choice: 'bandit'"),
    ("grid: {episodes: [0]}\n", "expected a positive integer"),
    ("grid: {model: [vgg16]}\n", "no teacher for vgg16"),
    ("grid: {algo: ppo}\n", "must be a non-empty list"),
    ("grid: {seed: [0]}\nfinetune: {epochs: -1}\n", "finetune"),
    ("sample: {attention_weight: {normal: [0, 1]}}\n", "sample.attention_weight must be"),
    ("options: {result_file: x.json}\ngrid: {seed: [0]}\n", "sets itself"),
    ("[1, 2]\n", "must be a mapping"),
])
def test_bad_sweep_files_fail_before_any_trial(text, message, tiny_teacher, tiny_tar, cache_dir, tmp_path):
    from agents import sweep

    with pytest.raises(UserError, match=message):
        sweep.sweep(sweep.build_parser().parse_args([str(write(tmp_path, text)),
                                                     *common(tiny_teacher, tiny_tar, cache_dir)]))
    assert not (tiny_teacher / "sweeps" / "s").exists()


def test_without_ray_the_sweep_says_how_to_install_it(tiny_teacher, tiny_tar, cache_dir, tmp_path, monkeypatch):
    import sys

    from agents import sweep

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r'pip install -e "\.\[sweep\]"'):
        sweep.sweep(sweep.build_parser().parse_args([str(write(tmp_path, TWO_TRIALS)),
                                                     *common(tiny_teacher, tiny_tar, cache_dir)]))

