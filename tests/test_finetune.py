import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from agents import search
from agents.evaluate import evaluate_result
from models.batching import iterate
from common.cli import run_main
from models.data import load_cifar10
from common.errors import UserError
from models.metrics import predict
from models.training import make_optimizer, sgd_step
from quant.finetune import TapStudent
from quant.integer import export_int8, integer_predict
from quant.lookup import apply_table_learned_clip, apply_table_ste
from quant.qat import load_teacher
from quant.tap import TapParams, build_table, decode_action, levels_of, with_clip
from models.checkpoint import load_checkpoint
from tests.conftest import ROOT, train_args
from train_baselines import train


def test_the_table_gradient_is_straight_through_below_tmax_and_zero_above():
    table = torch.tensor(np.minimum((np.arange(256) // 4) * 4, 12)).float()  # levels 0,4,8,12; tmax = 12
    q = torch.tensor([0.0, 3.0, 6.0, 12.0, 13.0, 200.0], requires_grad=True)
    out = apply_table_ste(q, table)
    assert out.tolist() == [0.0, 0.0, 4.0, 12.0, 12.0, 12.0]
    out.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert q.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def result(tiny_teacher, tiny_tar, cache_dir):
    """A random-search result with coarse K = 4 tables on the tiny teacher."""
    assert run_main(search.main, ["--algo", "random", "--episodes", "20", "--levels", "4", "--result-file", "ft.json",
                                  "--out-dir", str(tiny_teacher), "--data", str(tiny_tar), "--cache-dir",
                                  str(cache_dir), "--search-size", "60", "--calib-batches", "2",
                                  "--no-progress"]) == 0
    return tiny_teacher / "tri_ppo_int_codes" / "ft.json"


def student_for(result, tiny_teacher):
    import json

    res = json.loads(result.read_text())
    teacher = load_teacher(tiny_teacher / "lenet5_qat_preconvert.pth", "lenet5")
    tables = {n: torch.tensor(c["table"]) for n, c in res["best"]["config"].items()}
    return teacher, TapStudent(teacher, tables, attention_weight=res["attention_weight"])


def test_a_few_steps_of_fine_tuning_lower_the_loss(result, tiny_teacher, tiny_tar, cache_dir):
    teacher, student = student_for(result, tiny_teacher)
    d = load_cifar10(tiny_tar, cache_dir)
    xb, yb = next(iterate(d.train_x[:256], d.train_y[:256], 256, "cpu"))
    with torch.no_grad():
        assert torch.equal(student.eval()(xb), teacher(xb, tables=student.tables))  # starts as the tabled teacher
        before = student.loss(xb, yb).item()
    opt, _ = make_optimizer(student, 0.001, 0.0, 1, 20, "student")
    student.train()
    for _ in range(20):
        sgd_step(student.loss, xb, yb, opt)
    with torch.no_grad():
        after = student.eval().loss(xb, yb).item()
    assert after < before
    assert torch.equal(teacher.act_max, student.act_max)  # the activation scales stay the teacher's


def test_fine_tuned_student_round_trips_evaluates_and_runs_in_integers(result, tiny_teacher, tiny_tar, cache_dir,
                                                                        capsys):
    # By default a tenth of the training images (54 here) are held out of fine-tuning: the fine-tuned student
    # is kept only where it beats the untuned tables there (one-sided paired z > 1.645), else the teacher's weights.
    meta = train(train_args("student", tiny_teacher, tiny_tar, cache_dir, config_path=str(result), epochs=1))
    check = meta["holdout_check"]
    assert check["images"] == 54 and check["kept"] == (check["z"] > 1.645)
    teacher, _ = student_for(result, tiny_teacher)
    kept = load_teacher(tiny_teacher / "lenet5_student_ft.pth", "lenet5", stage="student")
    assert torch.equal(kept.weights["conv1"], teacher.weights["conv1"]) != check["kept"]
    # Without the held-out check the fine-tuned student is always kept.
    meta = train(train_args("student", tiny_teacher, tiny_tar, cache_dir, config_path=str(result), epochs=1,
                            holdout=0))
    path = tiny_teacher / "lenet5_student_ft.pth"
    assert "holdout_check" not in meta
    assert meta["complete"] and meta["result"]["sha256"] and meta["kd_weight"] == 3.0
    saved = load_teacher(path, "lenet5", stage="student")
    _, student = student_for(result, tiny_teacher)
    d = load_cifar10(tiny_tar, cache_dir)
    assert not torch.equal(saved.weights["conv1"], student.weights["conv1"])  # it trained
    p_saved = predict(saved, d.test_x, "cpu", tables=student.tables)
    ev = evaluate_result(result, data=tiny_tar, cache_dir=cache_dir, student=str(path))
    assert ev["student"] == pytest.approx(100 * (p_saved == d.test_y).float().mean().item())
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("[Eval] Teacher ")
    tables = {n: t.to(torch.uint8).numpy() for n, t in student.tables.items()}
    p_int = integer_predict(d.test_x, export_int8(saved), tables=tables)
    assert (p_int == p_saved).float().mean() >= 0.99


def test_evaluate_refuses_a_student_of_another_result_and_bad_checkpoints(result, tiny_teacher, tiny_tar, cache_dir,
                                                                          tmp_path):
    train(train_args("student", tiny_teacher, tiny_tar, cache_dir, config_path=str(result), epochs=1, holdout=0))
    other = tmp_path / "other.json"
    other.write_text(result.read_text().replace('"seed": 0', '"seed": 7'))
    with pytest.raises(UserError, match="fine-tuned for another result"):
        evaluate_result(other, data=tiny_tar, cache_dir=cache_dir, student=str(tiny_teacher / "lenet5_student_ft.pth"))
    truncated = tmp_path / "s.pth"
    truncated.write_bytes((tiny_teacher / "lenet5_student_ft.pth").read_bytes()[:500])
    r = subprocess.run([sys.executable, "-m", "agents.evaluate", "--config-path", str(result), "--student",
                        str(truncated), "--data", str(tiny_tar), "--cache-dir", str(cache_dir)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "corrupted" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "train_baselines.py", "student", "--data", str(tiny_tar)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "needs --config-path" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "train_baselines.py", "student", "--config-path", str(result), "--model",
                        "vgg16", "--data", str(tiny_tar)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "is a lenet5 result" in r.stderr


def test_the_learned_clip_gradient_is_lsq_inside_and_pact_above():
    table = torch.tensor(np.minimum((np.arange(256) // 4) * 4, 12)).float()  # levels 0,4,8,12; tmax = 12
    q = torch.tensor([0.0, 3.0, 6.0, 12.0, 13.0, 200.0], requires_grad=True)
    alpha = torch.tensor(12.0, requires_grad=True)
    out = apply_table_learned_clip(q, alpha, table, grad_scale=0.5)
    assert out.tolist() == [0.0, 0.0, 4.0, 12.0, 12.0, 12.0]
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    out.backward(g)
    assert q.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]
    # (out - q) / alpha up to tmax, 1 above it
    expected = 0.5 * (0 + 2.0 * (0 - 3) / 12 + 3.0 * (4 - 6) / 12 + 0 + 5.0 + 6.0)
    assert alpha.grad.item() == pytest.approx(expected)


@given(st.integers(4, 255), st.integers(4, 64), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),
       st.floats(0, 1), st.integers(1, 255))
def test_moving_the_clip_keeps_a_valid_tap_with_the_same_levels(tmax, levels, a0, a1, a2, a3, new_tmax):
    p = decode_action([2 * a0 - 1, 2 * a1 - 1, 2 * a2 - 1, 2 * a3 - 1], tmax, levels)
    assert with_clip(p, p.tmax) == p
    m = with_clip(p, new_tmax)
    assert (m.tmax, m.n1, m.n2, m.n3, m.K, m.exact) == (new_tmax, p.n1, p.n2, p.n3, p.K, new_tmax < p.K)
    assert new_tmax < 4 or 1 <= m.b1 < m.b2 < m.tmax
    assert build_table(m)[255] == new_tmax and len(levels_of(m)) <= p.K


def test_a_student_that_learns_its_clips_evaluates_and_exports_with_the_tables_it_learned(
        result, tiny_teacher, tiny_tar, cache_dir, tmp_path):
    out = tmp_path / "learned"
    meta = train(train_args("student", out, tiny_tar, cache_dir, config_path=str(result), epochs=1, clip_lr=1.0,
                            holdout=0))
    searched = {n: c["tmax"] for n, c in json.loads(result.read_text())["best"]["config"].items()}
    learned = {n: c["tmax"] for n, c in meta["clips"].items()}
    assert meta["clip_lr"] == 1.0 and learned != searched  # the clips moved
    for n, c in meta["clips"].items():
        assert meta["tables"][n] == build_table(TapParams(**c)).tolist()
    path = out / "lenet5_student_ft.pth"
    saved = load_teacher(path, "lenet5", stage="student")  # the INT8 model, without the clip parameters
    d = load_cifar10(tiny_tar, cache_dir)
    tables = {n: torch.tensor(t).float() for n, t in meta["tables"].items()}
    p_saved = predict(saved, d.test_x, "cpu", tables=tables)
    assert meta["test_acc"] == pytest.approx(100 * (p_saved == d.test_y).float().mean().item())
    ev = evaluate_result(result, data=tiny_tar, cache_dir=cache_dir, student=str(path), verbose=False)
    assert ev["student"] == pytest.approx(meta["test_acc"])
    p_int = integer_predict(d.test_x, export_int8(saved), tables={n: np.array(t, np.uint8)
                                                                  for n, t in meta["tables"].items()})
    assert (p_int == p_saved).float().mean() >= 0.99

    def stop(epoch):
        raise KeyboardInterrupt

    args = dict(config_path=str(result), epochs=2, clip_lr=1.0, holdout=0)
    with pytest.raises(KeyboardInterrupt):  # killed after its first epoch, then resumed: the same clips and weights
        train(train_args("student", tmp_path / "b", tiny_tar, cache_dir, **args), on_epoch_end=stop)
    resumed = train(train_args("student", tmp_path / "b", tiny_tar, cache_dir, resume=True, **args))
    full = train(train_args("student", tmp_path / "a", tiny_tar, cache_dir, **args))
    assert resumed["clips"] == full["clips"] and resumed["tables"] == full["tables"]
    a, b = (load_checkpoint(tmp_path / x / "lenet5_student_ft.pth")["state_dict"] for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
