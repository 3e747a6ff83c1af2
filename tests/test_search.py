import json
import subprocess
import sys

import pytest

from agents import evaluate, search
from quant.result import read_result
from agents.resume import SearchCheckpoint
from common.cli import run_main
from common.errors import UserError
from tests.conftest import ROOT


def common(out, data, cache):
    return ["--out-dir", str(out), "--data", str(data), "--cache-dir", str(cache), "--search-size", "60",
            "--calib-batches", "2", "--no-progress"]


@pytest.mark.parametrize("algo,episodes", [("ppo", 100), ("sac", 75)])
def test_real_learner_writes_a_valid_result_and_evaluate_reads_it(algo, episodes, tiny_teacher, tiny_tar,
                                                                  cache_dir, capsys):
    rc = run_main(search.main, ["--algo", algo, "--episodes", str(episodes), "--result-file", f"{algo}.json",
                                *common(tiny_teacher, tiny_tar, cache_dir)])
    assert rc == 0
    path = tiny_teacher / "tri_ppo_int_codes" / f"{algo}.json"
    res = read_result(path)
    assert res["complete"] and res["episodes"] == episodes and res["algo"] == algo
    assert len(res["reward_history"]) == episodes
    assert res["top"][0]["reward"] == pytest.approx(max(res["reward_history"]))
    rewards = [t["reward"] for t in res["top"]]
    assert rewards == sorted(rewards, reverse=True) and len(res["top"]) == 20
    assert [i["episode"] for i in res["improvements"]] == sorted(i["episode"] for i in res["improvements"])
    assert set(res["best"]["config"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert res["teacher"]["sha256"] and res["levels"] == 16 and res["attention_weight"] == 50.0
    assert not (tiny_teacher / "tri_ppo_int_codes" / f"{algo}.ckpt").exists()
    assert any((tiny_teacher / "tb" / algo).rglob("events.out.tfevents.*"))
    out = capsys.readouterr().out.strip().splitlines()
    b = res["best"]  # the guide's last line, then what was kept, in words
    assert out[-1] == (f"[{algo.upper()}] Episode {episodes} | Teacher {b['acc_teacher']:.2f}% | "
                       f"Student {b['acc_student']:.2f}% | Drop {b['drop']:.2f}% | on the search split "
                       f"({res['search_split']['size']:,} images, none of them test images)")
    assert any(line.startswith(("[Search] kept the analytic tables", "[Search] chose the search's")) for line in out)
    # the bare name the search took is found under <out-dir>/tri_ppo_int_codes/
    assert run_main(evaluate.main, ["--config-path", path.name, "--out-dir", str(tiny_teacher), "--data",
                                    str(tiny_tar), "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("[Eval] Teacher ") and "| Student " in out[-1] and "| Drop " in out[-1]
    assert any("conv1" in l and "tmax" in l for l in out)


def test_random_baseline_conv_only_and_levels(tiny_teacher, tiny_tar, cache_dir):
    assert run_main(search.main, ["--algo", "random", "--episodes", "30", "--layers", "conv1,conv2", "--levels", "4",
                                  "--result-file", "rnd.json", *common(tiny_teacher, tiny_tar, cache_dir)]) == 0
    res = read_result(tiny_teacher / "tri_ppo_int_codes" / "rnd.json")
    assert res["layers"] == ["conv1", "conv2"] and res["levels"] == 4 and res["episodes"] == 30
    assert all(c["n1"] + c["n2"] + c["n3"] == 3 for c in res["best"]["config"].values())


def test_search_resumes_after_interruption(tiny_teacher, tiny_tar, cache_dir, monkeypatch):
    calls = {"n": 0}
    real = search.SearchTracker.on_episode

    def interrupt_at_150(self, info, step):
        real(self, info, step)
        calls["n"] += 1
        if self.episodes == 150:
            raise KeyboardInterrupt

    monkeypatch.setattr(search.SearchTracker, "on_episode", interrupt_at_150)
    args = ["--algo", "ppo", "--episodes", "200", "--result-file", "res.json", *common(tiny_teacher, tiny_tar, cache_dir)]
    assert run_main(search.main, args) == 130
    # the last boundary after episode 100: a rollout's start (PPO collects 16 episodes a rollout)
    state = SearchCheckpoint(tiny_teacher / "tri_ppo_int_codes" / "res.json").load(search.SearchConfig(
        problem=search.ProblemConfig(out_dir=str(tiny_teacher), data=str(tiny_tar), cache_dir=str(cache_dir),
                                     search_size=60, calib_batches=2),
        algo="ppo", episodes=200, result_file="res.json").resume_options())
    assert state["tracker"]["episodes"] == 112 and state["learner"]
    assert not read_result(tiny_teacher / "tri_ppo_int_codes" / "res.json")["complete"]
    monkeypatch.setattr(search.SearchTracker, "on_episode", real)
    assert run_main(search.main, args + ["--resume"]) == 0
    res = read_result(tiny_teacher / "tri_ppo_int_codes" / "res.json")
    assert res["complete"] and res["episodes"] == 200 and len(res["reward_history"]) == 200


@pytest.mark.parametrize("wandb_dir", [False, True])
def test_wandb_offline_writes_its_run_directory(wandb_dir, tiny_teacher, tiny_tar, cache_dir, tmp_path, monkeypatch):
    """Under <out-dir>/wandb, or under the user's $WANDB_DIR when set."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    if wandb_dir:
        monkeypatch.setenv("WANDB_DIR", str(tmp_path / "user_wandb"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "lenet5_qat_preconvert.pth").symlink_to(tiny_teacher / "lenet5_qat_preconvert.pth")
    assert run_main(search.main, ["--algo", "random", "--episodes", "20", "--wandb", "offline",
                                  *common(out, tiny_tar, cache_dir)]) == 0
    root = (tmp_path / "user_wandb") if wandb_dir else out
    runs = list((root / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].rglob("*.wandb"))


def test_search_bad_inputs(tiny_teacher, tiny_tar, cache_dir, tmp_path):
    with pytest.raises(UserError, match="python train_baselines.py"):
        search.main(["--episodes", "5", *common(tmp_path, tiny_tar, cache_dir)])
    with pytest.raises(UserError, match="not distinct quantized layers of lenet5"):
        search.main(["--layers", "fc3", *common(tiny_teacher, tiny_tar, cache_dir)])
    with pytest.raises(UserError, match="levels"):
        search.main(["--levels", "3", *common(tiny_teacher, tiny_tar, cache_dir)])
    bad_yaml = tmp_path / "hp.yml"
    bad_yaml.write_text("lenet5: {n_stepz: 3}\n")
    with pytest.raises(UserError, match="bad hyperparameter"):
        search.main(["--hyperparams", str(bad_yaml), "--episodes", "5", *common(tiny_teacher, tiny_tar, cache_dir)])
    r = subprocess.run([sys.executable, "-m", "agents.search", "--episodes", "0"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "positive integer" in r.stderr


def test_evaluate_refuses_bad_result_files(tiny_teacher, tiny_tar, cache_dir, tmp_path, capsys):
    run_main(search.main, ["--algo", "random", "--episodes", "10", "--result-file", "ok.json",
                           *common(tiny_teacher, tiny_tar, cache_dir)])
    good = json.loads((tiny_teacher / "tri_ppo_int_codes" / "ok.json").read_text())

    def ev(doc, *extra):  # in-process through run_main, what `python -m agents.evaluate` runs
        p = tmp_path / "r.json"
        p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        capsys.readouterr()
        code = run_main(evaluate.main, ["--config-path", str(p), "--data", str(tiny_tar), "--cache-dir",
                                        str(cache_dir), *extra])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        return err

    assert "not valid JSON" in ev("{oops")
    assert "malformed" in ev({k: v for k, v in good.items() if k != "best"})
    tampered = json.loads(json.dumps(good))
    next(iter(tampered["best"]["config"].values()))["table"][5] = 200
    assert "does not match its parameters" in ev(tampered)
    assert "is a lenet5 result, but --model is vgg16" in ev(good, "--model", "vgg16")
    wrong_sha = json.loads(json.dumps(good))
    wrong_sha["teacher"]["sha256"] = "0" * 64
    assert "sha256 differs" in ev(wrong_sha)
    other = json.loads(json.dumps(good))
    other["model"] = "alexnet"
    assert "alexnet" in ev(other)


def test_in_a_log_the_search_prints_a_line_at_each_interval_instead_of_a_bar(capsys, monkeypatch):
    from agents import tracker as tracker_module
    from common import progress

    clock = iter(range(1000))  # one second per call: the interval below passes every 10 episodes
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL", 10.0)
    tracker = tracker_module.SearchTracker(25, None, show_progress=True)  # pytest's stderr is not a terminal
    assert tracker.bar.disable
    info = {"reward": -1.0, "acc_teacher": 70.0, "acc_student": 69.0, "drop": 1.0, "att": 0.0,
            "att_per_layer": {}, "kl": 0.0, "config": {"conv1": {"tmax": 9, "table": list(range(256))}}}
    for step in range(25):
        tracker.on_episode(info, step)
    tracker.close()
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("[Search] episode")]
    assert lines == ["[Search] episode 10/25 | 1.0 ep/s | 0m15s left | best reward -1.000 | best drop 1.00",
                     "[Search] episode 20/25 | 1.0 ep/s | 0m05s left | best reward -1.000 | best drop 1.00"]
    assert "\r" not in captured.err
