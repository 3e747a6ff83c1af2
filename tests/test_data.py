import subprocess
import sys
import tarfile

import pytest
import torch

from models.batching import augment, iterate, normalize
from models.data import load_cifar10
from common.errors import UserError
from tests.conftest import ROOT, TEST_PER_CLASS, TRAIN_PER_CLASS


def test_tar_loads_all_images_with_labels(tiny_tar, cache_dir):
    d = load_cifar10(tiny_tar, cache_dir)
    assert d.train_x.shape == (10 * TRAIN_PER_CLASS, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (10 * TEST_PER_CLASS, 3, 32, 32)
    assert d.train_y.bincount().tolist() == [TRAIN_PER_CLASS] * 10
    assert d.test_y.bincount().tolist() == [TEST_PER_CLASS] * 10
    assert d.train_x.float().std() > 20  # real pixels, not zeros


def test_cache_is_used_and_keyed_by_source(tiny_tar, cache_dir, tmp_path):
    a = load_cifar10(tiny_tar, cache_dir)
    files = list(cache_dir.glob("cifar10-*.pt"))
    assert any(a.source_hash[:16] in f.name for f in files)
    b = load_cifar10(tiny_tar, cache_dir)
    assert torch.equal(a.train_x, b.train_x) and a.source_hash == b.source_hash
    # A different source (one test image fewer) gets its own cache entry.
    other = tmp_path / "other.tar.gz"
    with tarfile.open(tiny_tar) as src, tarfile.open(other, "w:gz") as out:
        members = [m for m in src if m.isfile()]
        dropped = [m for m in members if m.name.startswith("test/")][-1]
        for m in members:
            if m is not dropped:
                out.addfile(m, src.extractfile(m))
    c = load_cifar10(other, cache_dir)
    assert c.source_hash != a.source_hash and len(c.test_x) == len(a.test_x) - 1


def test_directory_source_matches_tar(tiny_tar, cache_dir, tmp_path):
    with tarfile.open(tiny_tar) as t:
        t.extractall(tmp_path / "tree", filter="data")
    a = load_cifar10(tiny_tar, cache_dir)
    b = load_cifar10(tmp_path / "tree", cache_dir)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)


def test_split_is_fixed_disjoint_and_stratified(tiny_tar, cache_dir):
    d = load_cifar10(tiny_tar, cache_dir)
    tr1, va1 = d.split()
    tr2, va2 = d.split()
    assert torch.equal(tr1, tr2) and torch.equal(va1, va2)
    assert len(set(tr1.tolist()) & set(va1.tolist())) == 0
    assert len(tr1) + len(va1) == len(d.train_x)
    assert d.train_y[va1].bincount(minlength=10).tolist() == [TRAIN_PER_CLASS // 10] * 10


def test_augment_shapes_ranges_and_determinism(tiny_tar, cache_dir):
    d = load_cifar10(tiny_tar, cache_dir)
    x = d.train_x[:64]
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, x)
    # Each augmented image is a shifted (possibly flipped) window of the original:
    # its non-padded pixels come from the source image.
    assert set(a[0].unique().tolist()) <= set(x[0].unique().tolist()) | {0}
    n = normalize(a)
    assert n.dtype == torch.float32 and n.abs().max() < 3
    xb, yb = next(iterate(d.train_x, d.train_y, 32, "cpu", torch.Generator().manual_seed(0), train=True))
    assert xb.shape == (32, 3, 32, 32) and yb.shape == (32,)


@pytest.mark.parametrize("pad", [0, 1, 4])
def test_augment_equals_a_per_image_crop_and_flip(tiny_tar, cache_dir, pad):
    """The batched row gather against the plain loop: pad, crop at the drawn offset, flip."""
    x = load_cifar10(tiny_tar, cache_dir).train_x[:48]
    out = augment(x, torch.Generator().manual_seed(7), pad)
    gen = torch.Generator().manual_seed(7)  # the same draws, in the same order
    offs = torch.randint(0, 2 * pad + 1, (2, len(x)), generator=gen)
    flip = torch.rand(len(x), generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i in range(len(x)):
        crop = padded[i, :, offs[0, i]:offs[0, i] + 32, offs[1, i]:offs[1, i] + 32]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)


def test_crop_and_flip_move_whole_rows():
    # Pixel value = column + 1: after a crop the non-padding values of a row are a
    # run of consecutive columns, ascending (no flip) or descending (flip), shifted <= 4.
    x = (torch.arange(32) + 1).to(torch.uint8).expand(64, 3, 32, 32).contiguous()
    out = augment(x, torch.Generator().manual_seed(0))
    flips = 0
    for img in out:
        row = [v for v in img[0, 16].tolist() if v]
        steps = {b - a for a, b in zip(row, row[1:])}
        assert steps in ({1}, {-1}) and len(row) >= 28
        assert all(torch.equal(img[c], img[0]) for c in (1, 2))
        flips += steps == {-1}
    assert 0 < flips < 64


def test_missing_and_corrupted_sources_are_clear_errors(tmp_path, cache_dir):
    with pytest.raises(UserError, match="not found"):
        load_cifar10(tmp_path / "nope.tar.gz", cache_dir)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage" * 100)
    with pytest.raises(UserError, match="corrupted"):
        load_cifar10(bad, cache_dir)
    empty = tmp_path / "empty"
    (empty / "train" / "cat").mkdir(parents=True)
    (empty / "test").mkdir()
    with pytest.raises(UserError, match="train/<class>"):
        load_cifar10(empty, cache_dir)


def test_cli_reports_bad_data_in_one_line(tmp_path):
    bad = tmp_path / "truncated.tar.gz"
    bad.write_bytes(b"\x1f\x8b")
    r = subprocess.run([sys.executable, "train_baselines.py", "float", "--data", str(bad), "--out-dir",
                        str(tmp_path / "o"), "--epochs", "1"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "truncated.tar.gz" in lines[0]


def test_calibration_images_are_class_mixed_training_images(tiny_tar, cache_dir):
    d = load_cifar10(tiny_tar, cache_dir)
    train_idx, val_idx = d.split()
    idx = d.calibration_indices(100)
    assert torch.equal(idx, d.calibration_indices(100))
    assert set(idx.tolist()) <= set(train_idx.tolist())
    assert len(d.train_y[idx].unique()) >= 8  # a prefix of the stored order would be one or two classes
