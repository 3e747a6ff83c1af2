"""Soft labels: a file made by a tiny teacher, the lookup of the view drawn, training and resuming with it, refusals."""

import json

import numpy as np
import pytest
import torch

from common.cli import run_main
from common.errors import UserError
from models import soft_labels
from models.batching import augment, normalize, view_count
from models.checkpoint import load_checkpoint, load_float_model
from models.data import load_cifar10
from tests.conftest import train_args
from train_baselines import main as train_main, train


@pytest.fixture(scope="module")
def soft_file(tiny_teacher, tiny_tar, cache_dir):
    path = tiny_teacher / "soft.npz"
    assert train_main(["soft-labels", "--from", str(tiny_teacher / "lenet5_float_unfused.pth"), "--output", str(path),
                       "--data", str(tiny_tar), "--cache-dir", str(cache_dir), "--no-progress"]) == 0
    return path


def test_the_file_holds_the_teachers_logits_of_the_view_each_image_is_drawn_in(soft_file, tiny_teacher, tiny_tar,
                                                                              cache_dir):
    data = load_cifar10(tiny_tar, cache_dir)
    soft = soft_labels.read(soft_file, data, 1)
    train_idx, _ = data.split()
    assert soft.logits.shape == (len(train_idx), view_count(1), 10)
    assert soft.header["images"]["count"] == len(train_idx) and soft.header["teacher"]["model"] == "lenet5"
    teacher = load_float_model(tiny_teacher / "lenet5_float_unfused.pth", "lenet5").eval()
    x = data.train_x[train_idx][:64]
    crops, views = augment(x, torch.Generator().manual_seed(3), 1, views=True)
    _, stored = soft.lookup(torch.arange(64) * view_count(1) + views)
    with torch.no_grad():
        assert torch.allclose(stored, teacher(normalize(crops)), atol=2e-2, rtol=1e-2)  # float16 storage


def test_fewer_views_stand_in_for_the_others():
    assert soft_labels.view_map(1, "one").tolist() == [0] * 18
    assert soft_labels.view_map(1, "flip").tolist() == [0] * 9 + [1] * 9
    assert soft_labels.stored_views(1, "flip") == [(0, 1, 1), (1, 1, 1)]


def test_training_with_soft_labels_resumes_exactly(soft_file, tmp_path, tiny_tar, cache_dir):
    kw = dict(epochs=2, soft_labels=str(soft_file), kd_weight=2.0)
    full = train(train_args("float", tmp_path / "a", tiny_tar, cache_dir, **kw))
    assert full["soft_labels"] == soft_labels.read(soft_file, load_cifar10(tiny_tar, cache_dir), 1).sha256

    def stop(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_args("float", tmp_path / "b", tiny_tar, cache_dir, **kw), on_epoch_end=stop)
    train(train_args("float", tmp_path / "b", tiny_tar, cache_dir, resume=True, **kw))
    a, b = (load_checkpoint(tmp_path / d / "lenet5_float_unfused.pth")["state_dict"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(train_args("float", tmp_path / "c", tiny_tar, cache_dir, epochs=2))
    plain = load_checkpoint(tmp_path / "c" / "lenet5_float_unfused.pth")["state_dict"]
    assert not all(torch.equal(a[k], plain[k]) for k in a)  # the soft labels changed the training


def altered(src, dst, change):
    with np.load(src) as z:
        header, logits = json.loads(bytes(z["header"]).decode()), z["logits"].copy()
    change(header, logits)
    soft_labels.write(dst, header, logits)
    return dst


@pytest.mark.parametrize("make, says", [
    (lambda src, dst: dst.write_bytes(src.read_bytes()[:5000]) and dst, "damaged"),
    (lambda src, dst: altered(src, dst, lambda h, lg: lg.__setitem__((0, 0, 0), lg[0, 0, 0] + 1)), "altered"),
    (lambda src, dst: altered(src, dst, lambda h, lg: h.__setitem__("data_hash", "0" * 64)), "another data source"),
    (lambda src, dst: altered(src, dst, lambda h, lg: h["images"].__setitem__("indices_sha256", "0")), "another split"),
    (lambda src, dst: altered(src, dst, lambda h, lg: h["images"].__setitem__("count", 7)), "covers 7 images"),
    (lambda src, dst: altered(src, dst, lambda h, lg: h.__setitem__("crop_pad", 2)), "crop padding 2"),
    (lambda src, dst: altered(src, dst, lambda h, lg: h.__setitem__("classes", 100)), "100 classes"),
])
def test_a_file_that_does_not_fit_is_one_line_and_nothing_is_written(make, says, soft_file, tmp_path, tiny_tar,
                                                                    cache_dir, capsys):
    bad = make(soft_file, tmp_path / "bad.npz")
    argv = ["float", "--soft-labels", str(bad), "--epochs", "1", "--data", str(tiny_tar), "--cache-dir",
            str(cache_dir), "--out-dir", str(tmp_path / "out")]
    assert run_main(train_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_soft_labels_and_another_teacher_are_refused(soft_file, tmp_path, tiny_tar, cache_dir):
    with pytest.raises(UserError, match="two teachers"):
        train(train_args("float", tmp_path, tiny_tar, cache_dir, soft_labels=str(soft_file), distill_epochs=1))
