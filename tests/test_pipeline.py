import re

from agents import pipeline
from quant.result import read_result
from common.cli import run_main
from tests.conftest import wandb_log


def test_pipeline_runs_every_stage_then_skips_what_is_done(tmp_path, tiny_tar, cache_dir, capsys):
    argv = ["--epochs", "1", "--qat-epochs", "1", "--episodes", "12", "--algo", "random", "--search-size", "60",
            "--calib-batches", "2", "--data", str(tiny_tar),
            "--cache-dir", str(cache_dir), "--out-dir", str(tmp_path), "--device", "cpu"]
    assert run_main(pipeline.main, argv) == 0
    out = capsys.readouterr().out
    assert "[Float] Test Acc" in out and "[QAT] Test Acc" in out and "[RANDOM] Episode 12 | Teacher" in out
    assert out.strip().splitlines()[-1].startswith("[Eval] Teacher ")
    run = tmp_path / "epochs1_qat-epochs1"  # the teachers' flags are not the defaults: a directory of their own
    assert f"outputs go to {run}/" in out.splitlines()[0]
    result = only(run.glob("tri_ppo_int_codes/lenet5_random_12ep_*_result.json"))
    assert read_result(result)["complete"]
    assert run_main(pipeline.main, argv + ["--export"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipping") == 3 and "[Float] Epoch" not in out
    assert "[Eval] Teacher " in out and out.strip().splitlines()[-3:] == [
        f"[Export] wrote {result.with_name(result.stem + end)}" for end in (".onnx", "_tables.json", "_tables.h")]


def only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


def test_pipeline_fine_tunes_the_student_and_prints_both_eval_lines(tmp_path, tiny_tar, cache_dir, capsys):
    argv = ["--epochs", "1", "--qat-epochs", "1", "--episodes", "8", "--algo", "random", "--search-size", "60",
            "--calib-batches", "2", "--finetune-epochs", "1", "--data", str(tiny_tar),
            "--cache-dir", str(cache_dir), "--out-dir", str(tmp_path), "--device", "cpu", "--no-progress"]
    assert run_main(pipeline.main, argv) == 0
    out = capsys.readouterr().out
    assert "[Student] Epoch 1 | Val Acc " in out
    assert only((tmp_path / "epochs1_qat-epochs1").glob("lenet5_student_lenet5_random_8ep_*_result.pth"))
    evals = [line for line in out.splitlines() if line.startswith("[Eval] Teacher ")]
    assert len(evals) == 2 and evals[0].split("|")[0] == evals[1].split("|")[0]  # same teacher, two students
    assert "| student " in out



def test_pipeline_wandb_runs_form_one_group_with_the_eval_pictures(tmp_path, tiny_tar, cache_dir, monkeypatch):
    import os

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    argv = ["--epochs", "1", "--qat-epochs", "1", "--episodes", "6", "--algo", "random", "--search-size", "60",
            "--calib-batches", "2", "--data", str(tiny_tar), "--wandb", "offline", "--no-progress",
            "--cache-dir", str(cache_dir), "--out-dir", str(tmp_path / "out"), "--device", "cpu"]
    assert run_main(pipeline.main, argv) == 0
    assert "WANDB_RUN_GROUP" not in os.environ  # the group does not leak past the pipeline
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    logs = [wandb_log(r, b"test_acc", b"best_config", b"test_drop") for r in runs]  # each run's last records
    assert len(runs) == 4  # float, qat, search, eval
    assert all(b"pipeline-lenet5-K16-" in log for log in logs)
    search_log = next(log for log in logs if b"best_config" in log)
    assert b"codes/conv1" in search_log
    eval_run = next(r for r, log in zip(runs, logs) if b"test_drop" in log)
    assert list(eval_run.rglob("*_layers*.png")) and list(eval_run.rglob("*_search*.png"))


def test_a_rerun_with_other_flags_makes_its_own_outputs(tmp_path, tiny_tar, cache_dir, capsys):
    argv = ["--epochs", "1", "--qat-epochs", "1", "--episodes", "8", "--algo", "random", "--search-size", "60",
            "--calib-batches", "2", "--data", str(tiny_tar), "--cache-dir", str(cache_dir), "--out-dir", str(tmp_path),
            "--device", "cpu", "--no-progress"]
    assert run_main(pipeline.main, argv) == 0
    first = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    plan = re.search(r"\[Pipeline\] lenet5: float 1 epochs \(to run, ~0m\d\ds\) -> qat 1 epochs \(to run, ~0m\d\ds\) -> "
                     r"search random 8 episodes \(to run\) -> eval on the test set", capsys.readouterr().out)
    assert plan  # the plan first, with each stage's estimate
    for extra, teachers, result in ((["--levels", "8"], "epochs1_qat-epochs1", "lenet5_random_K8_8ep_*_result.json"),
                                    (["--tmax-rule", "p99"], "epochs1_qat-epochs1", "lenet5_random_p99_8ep_*"),
                                    (["--seed", "1"], "epochs1_qat-epochs1_seed1", "lenet5_random_seed1_8ep_*"),
                                    (["--epochs", "2"], "epochs2_qat-epochs1", "lenet5_random_8ep_*")):
        assert run_main(pipeline.main, argv + extra) == 0
        out = capsys.readouterr().out
        assert ("qat 1 epochs (done)" in out) == (teachers == "epochs1_qat-epochs1"), extra
        trained = "[Float] Test Acc" in out
        assert trained == (teachers != "epochs1_qat-epochs1"), extra  # new teachers only for new teachers' flags
        assert read_result(only((tmp_path / teachers / "tri_ppo_int_codes").glob(result)))["complete"]
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # the first run's outputs are untouched
    # An explicit --result-file made with other options is refused in one line, never reused.
    named = argv + ["--result-file", "mine.json"]
    assert run_main(pipeline.main, named) == 0
    capsys.readouterr()
    assert run_main(pipeline.main, named + ["--levels", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "levels=16 (asked: 8)" in err[0] and "result_file" not in err[0]  # real differences
    assert "drop --result-file: a run with these options writes its own lenet5_random_K8_8ep_" in err[0]


def test_in_a_log_the_pipeline_says_its_plan_and_its_progress_and_stays_small(tmp_path, tiny_tar, cache_dir):
    """Output to a file: the plan first, plain progress lines at the interval (here 0: at every step), no bar;
    even so the log stays under 50 kB."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "pipeline.log"
    argv = [sys.executable, "-m", "agents.pipeline", "--epochs", "1", "--qat-epochs", "1", "--episodes", "40",
            "--algo", "random", "--search-size", "60", "--calib-batches", "2", "--data",
            str(tiny_tar), "--cache-dir", str(cache_dir), "--out-dir", str(tmp_path), "--device", "cpu"]
    with open(log, "w") as f:
        r = subprocess.run(argv, cwd=Path(__file__).resolve().parents[1], stdout=f, stderr=subprocess.STDOUT,
                           env={**os.environ, "TAPQUANT_PROGRESS_INTERVAL": "0"})
    text = log.read_text()
    assert r.returncode == 0, text[-2000:]
    lines = text.splitlines()
    plan = next(i for i, line in enumerate(lines) if line.startswith("[Pipeline] lenet5: "))
    assert lines[plan].startswith("[Pipeline] lenet5: float 1 epochs (to run, ~")
    assert not any(line.startswith(("[Float]", "[QAT]", "[Search]")) for line in lines[:plan])
    assert any(line.startswith("[Float] Epoch 1/1 | ") and line.endswith(" left") for line in lines)
    assert any(line.startswith("[Search] episode ") and " ep/s | " in line for line in lines)
    assert "\r" not in text and log.stat().st_size < 50_000
