import subprocess
import sys

import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from common.errors import UserError
from tests.conftest import ROOT, train_args, wandb_log
from train_baselines import train


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "train_baselines.py", *args], cwd=cwd, capture_output=True, text=True)


def test_float_and_qat_one_epoch_through_the_cli(tmp_path, tiny_tar, cache_dir):
    common = ["--data", str(tiny_tar), "--cache-dir", str(cache_dir), "--out-dir", str(tmp_path), "--device", "cpu",
              "--batch-size", "64"]
    r = run_cli("float", "--epochs", "1", *common)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert any(l.startswith("[Float] Epoch 1 | Val Acc ") for l in lines)
    assert lines[-1].startswith("[Float] Test Acc ") and lines[-1].endswith("%")
    assert (tmp_path / "lenet5_float_unfused.pth").is_file()
    r = run_cli("qat", "--qat-epochs", "1", *common)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert any(l.startswith("[QAT] Epoch 1 | Val Acc ") for l in lines)
    assert lines[-1].startswith("[QAT] Test Acc ")
    ck = load_checkpoint(tmp_path / "lenet5_qat_preconvert.pth", "lenet5", "qat")
    assert ck["meta"]["complete"] and ck["meta"]["data_hash"] and ck["meta"]["seed"] == 0
    assert "act_max" in ck["state_dict"] and (ck["state_dict"]["act_max"] > 0).all()
    assert ck["meta"]["observer"] == "max"  # the default observer, recorded for --resume


def test_qat_resume_refuses_another_observer(tiny_teacher, tmp_path, tiny_tar, cache_dir):
    import shutil

    shutil.copy(tiny_teacher / "lenet5_float_unfused.pth", tmp_path)

    def stop(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_args("qat", tmp_path, tiny_tar, cache_dir, epochs=2, observer="ema"), on_epoch_end=stop)
    with pytest.raises(UserError, match="observer=ema, now max"):
        train(train_args("qat", tmp_path, tiny_tar, cache_dir, epochs=2, resume=True))


def test_checkpoint_round_trip_and_wrong_model_or_stage(tiny_teacher, tmp_path):
    path = tiny_teacher / "lenet5_float_unfused.pth"
    ck = load_checkpoint(path, "lenet5", "float")
    assert ck["meta"]["epochs"] == 2 and ck["meta"]["complete"]
    save_checkpoint(tmp_path / "copy.pth", "lenet5", "float", ck["state_dict"], ck["meta"])
    again = load_checkpoint(tmp_path / "copy.pth", "lenet5", "float")
    assert all(torch.equal(again["state_dict"][k], v) for k, v in ck["state_dict"].items())
    with pytest.raises(UserError, match="holds a lenet5 model, but --model is vgg16"):
        load_checkpoint(path, "vgg16", "float")
    with pytest.raises(UserError, match="is a float checkpoint, expected qat"):
        load_checkpoint(path, "lenet5", "qat")


def test_bad_checkpoints_are_one_line_errors(tiny_teacher, tiny_tar, tmp_path):
    corrupt = tmp_path / "lenet5_float_unfused.pth"
    corrupt.write_bytes((tiny_teacher / "lenet5_float_unfused.pth").read_bytes()[:300])
    r = run_cli("qat", "--data", str(tiny_tar), "--out-dir", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "corrupted" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    empty = tmp_path / "none"
    r = run_cli("qat", "--data", str(tiny_tar), "--out-dir", str(empty))
    assert r.returncode == 2 and "python train_baselines.py float --model lenet5" in r.stderr
    r = run_cli("qat", "--model", "vgg16", "--data", str(tiny_tar),
                "--float-checkpoint", str(tiny_teacher / "lenet5_float_unfused.pth"))
    assert r.returncode == 2 and "holds a lenet5 model" in r.stderr


@pytest.mark.parametrize("flag", [["--epochs", "0"], ["--epochs", "-3"], ["--lr", "abc"], ["--batch-size", "0"],
                                  ["--model", "resnet"], ["--device", "tpu"], ["--crop-pad", "-1"],
                                  ["--crop-pad", "40"], ["--batchnorm", "bn"]])
def test_nonsense_flags_are_rejected(flag):
    r = run_cli("float", *flag)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: float: argument --"), r.stderr


def test_resume_after_interruption_matches_uninterrupted(tmp_path, tiny_tar, cache_dir, capsys):
    full = train(train_args("float", tmp_path / "a", tiny_tar, cache_dir, epochs=3))

    def stop_after_two(epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_args("float", tmp_path / "b", tiny_tar, cache_dir, epochs=3), on_epoch_end=stop_after_two)
    partial = load_checkpoint(tmp_path / "b" / "lenet5_float_unfused.pth", "lenet5", "float")
    assert partial["meta"]["epochs_done"] == 2 and not partial["meta"]["complete"]
    with pytest.raises(UserError, match="epochs=3, now 4"):
        train(train_args("float", tmp_path / "b", tiny_tar, cache_dir, epochs=4, resume=True))
    # QAT on the unfinished checkpoint refuses with the command that finishes it: run that very command.
    with pytest.raises(UserError) as e:
        train(train_args("qat", tmp_path / "b", tiny_tar, cache_dir))
    suggested = str(e.value).split("finish it with: ")[1]
    assert suggested.startswith("python train_baselines.py float --model lenet5 --epochs 3 ") and "\n" not in suggested
    import train_baselines

    assert train_baselines.main(suggested.split()[2:] + ["--data", str(tiny_tar), "--cache-dir", str(cache_dir),
                                                         "--device", "cpu"]) == 0
    assert "[Float] 3 epochs (1 left to run) of lenet5" in capsys.readouterr().out  # the plan counts what is left
    resumed = load_checkpoint(tmp_path / "b" / "lenet5_float_unfused.pth")["meta"]
    a = load_checkpoint(tmp_path / "a" / "lenet5_float_unfused.pth")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "lenet5_float_unfused.pth")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_acc"] == full["test_acc"]
    with pytest.raises(UserError, match="already complete"):
        train(train_args("float", tmp_path / "b", tiny_tar, cache_dir, epochs=3, resume=True))


def test_batchnorm_teacher_folds_for_qat_and_refuses_another_placement(tmp_path, tiny_tar, cache_dir):
    from models.checkpoint import load_float_model

    meta = train(train_args("float", tmp_path, tiny_tar, cache_dir, batchnorm="all"))
    assert meta["batchnorm"] == "all"
    path = tmp_path / "lenet5_float_unfused.pth"
    assert load_float_model(path, "lenet5").bn_layers == ["conv1", "conv2", "fc1", "fc2"]
    qmeta = train(train_args("qat", tmp_path, tiny_tar, cache_dir))
    assert qmeta["batchnorm"] == "all" and qmeta["complete"]
    qsd = load_checkpoint(tmp_path / "lenet5_qat_preconvert.pth", "lenet5", "qat")["state_dict"]
    assert not any("_bn" in k for k in qsd)  # the INT8 teacher is the plain LeNet-5
    ck = load_checkpoint(path, "lenet5", "float")
    ck["meta"]["batchnorm"] = "conv"  # a checkpoint that claims another placement than its weights
    save_checkpoint(path, "lenet5", "float", ck["state_dict"], ck["meta"])
    with pytest.raises(UserError, match="does not fit a lenet5 with batchnorm=conv"):
        load_float_model(path, "lenet5")


def test_wandb_offline_run_holds_the_epoch_metrics(tmp_path, tiny_tar, cache_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    train(train_args("float", tmp_path / "out", tiny_tar, cache_dir, epochs=2, wandb="offline"))
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # An offline run is one binary log of protobuf records, whose keys are stored as plain strings:
    # two epochs of history (train_loss, val_acc, lr) and the summary's test accuracy.
    log = wandb_log(runs[0], b"test_acc")
    assert log.count(b"train_loss") >= 2 and log.count(b"val_acc") >= 2 and b"test_acc" in log


def test_float_distills_from_a_float_teacher_and_records_it(tiny_teacher, tmp_path, tiny_tar, cache_dir):
    from common.files import file_sha256

    src = tiny_teacher / "lenet5_float_unfused.pth"
    meta = train(train_args("float", tmp_path, tiny_tar, cache_dir, distill_from=str(src), kd_weight=2.0))
    assert meta["complete"] and meta["distill_from"] == file_sha256(src) and meta["kd_weight"] == 2.0
    with pytest.raises(UserError, match="--distill-from .*no such float checkpoint"):
        train(train_args("float", tmp_path, tiny_tar, cache_dir, distill_from=str(tmp_path / "missing.pth")))


def test_distill_epochs_trains_the_teacher_first_then_distills_from_it(tmp_path, tiny_tar, cache_dir):
    from common.files import file_sha256
    from models.checkpoint import checkpoint_path

    meta = train(train_args("float", tmp_path, tiny_tar, cache_dir, distill_epochs=1))
    teacher = checkpoint_path(tmp_path / "distill", "lenet5", "float")
    assert meta["complete"] and meta["distill_epochs"] == 1 and meta["distill_from"] == file_sha256(teacher)
    assert "distill_epochs" not in load_checkpoint(teacher, "lenet5", "float")["meta"]  # a plain run
    with pytest.raises(UserError, match="model to distill from.*other seed"):  # never silently reused
        train(train_args("float", tmp_path, tiny_tar, cache_dir, distill_epochs=1, seed=1))


def test_in_a_log_a_long_epoch_writes_progress_lines(tmp_path, tiny_tar, cache_dir):
    """Output redirected (not a terminal): plain lines with the rate and the time left, at the interval."""
    import os

    r = subprocess.run([sys.executable, "train_baselines.py", "float", "--epochs", "1", "--batch-size", "8",
                        "--data", str(tiny_tar), "--cache-dir", str(cache_dir), "--out-dir", str(tmp_path),
                        "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "TAPQUANT_PROGRESS_INTERVAL": "0"})
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("[Float] Epoch 1/1 | ")]
    assert len(lines) > 10 and lines[0].endswith(" left") and " batch/s | " in lines[0]
