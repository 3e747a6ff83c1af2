"""Shared fixtures: a small real CIFAR-10 subset and tiny teachers trained on it."""

from __future__ import annotations

import io
import os
import tarfile
from argparse import Namespace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_TAR = Path(os.environ.get("TAPQUANT_SHARED_TAR", ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
TRAIN_PER_CLASS = 60
TEST_PER_CLASS = 20

# Two cores: torch's intra-op threads are enough; keep tests from oversubscribing.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def make_subset_tar(dest: Path, train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS) -> Path:
    """Copies the first images of each class from the shared CIFAR-10 archive."""
    if not SHARED_TAR.is_file():
        pytest.fail(f"the shared CIFAR-10 copy {SHARED_TAR} is missing (set TAPQUANT_SHARED_TAR)")
    taken: dict = {}
    with tarfile.open(SHARED_TAR, "r:gz") as src, tarfile.open(dest, "w:gz") as out:
        for m in src:
            if not m.isfile():
                continue
            parts = Path(m.name).parts
            part, cls = parts[-3], parts[-2]
            limit = train_per_class if part == "train" else test_per_class
            key = (part, cls)
            if taken.get(key, 0) >= limit:
                continue
            taken[key] = taken.get(key, 0) + 1
            blob = src.extractfile(m).read()
            info = tarfile.TarInfo(f"{part}/{cls}/{Path(m.name).name}")
            info.size = len(blob)
            out.addfile(info, io.BytesIO(blob))
            if len(taken) == 20 and all(v >= (train_per_class if k[0] == "train" else test_per_class)
                                        for k, v in taken.items()):
                break
    return dest


@pytest.fixture(scope="session")
def tiny_tar(tmp_path_factory) -> Path:
    return make_subset_tar(tmp_path_factory.mktemp("data") / "cifar10-tiny.tar.gz")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_cache(cache_dir, monkeypatch):
    # Never touch the user's ~/.cache from tests.
    monkeypatch.setenv("TAPQUANT_CACHE", str(cache_dir))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


def train_args(stage: str, out_dir: Path, data: Path, cache: Path, **kw) -> Namespace:
    """train_baselines' parsed flags (its own defaults), for 1 epoch at batch 64 unless `kw` says otherwise."""
    from train_baselines import build_parser

    args = build_parser().parse_args([stage, "--data", str(data), "--cache-dir", str(cache), "--out-dir", str(out_dir),
                                      "--device", "cpu", "--batch-size", "64"])
    args.epochs = 1
    for k, v in kw.items():
        setattr(args, k, v)
    return args


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_tar, cache_dir) -> Path:
    """A LeNet-5 float (2 epochs) and INT8 QAT (1 epoch) teacher on the tiny subset; returns out_dir."""
    from train_baselines import train

    out = tmp_path_factory.mktemp("outputs")
    train(train_args("float", out, tiny_tar, cache_dir, epochs=2))
    train(train_args("qat", out, tiny_tar, cache_dir, epochs=1))
    return out
