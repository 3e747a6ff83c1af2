"""Shared fixtures: a small real CIFAR-10 subset and tiny teachers trained on it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# 600 training and 200 test images of real CIFAR-10, shipped in the repo
# (tests/data/make_tiny_cifar10.py made it), so a fresh clone needs no network.
TINY_TAR = ROOT / "tests" / "data" / "cifar10-tiny.tar.gz"
TRAIN_PER_CLASS, TEST_PER_CLASS = 60, 20  # what it holds

# Two cores: torch's intra-op threads are enough; keep tests from oversubscribing.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_tar() -> Path:
    return TINY_TAR


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_cache(cache_dir, monkeypatch):
    # Never touch the user's ~/.cache from tests.
    monkeypatch.setenv("TAPQUANT_CACHE", str(cache_dir))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


def train_args(stage: str, out_dir: Path, data: Path, cache: Path, **kw):
    """train_baselines' stage config (its own defaults), for 1 epoch at batch 64 unless `kw` says otherwise."""
    from train_baselines import stage_config

    return stage_config(stage, **{"data": str(data), "cache_dir": str(cache), "out_dir": str(out_dir), "device": "cpu",
                                "batch_size": 64, "epochs": 1, **kw})


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_tar, cache_dir) -> Path:
    """A LeNet-5 float (2 epochs) and INT8 QAT (1 epoch) teacher on the tiny subset; returns out_dir."""
    from train_baselines import train

    out = tmp_path_factory.mktemp("outputs")
    train(train_args("float", out, tiny_tar, cache_dir, epochs=2))
    train(train_args("qat", out, tiny_tar, cache_dir, epochs=1))
    return out


def wandb_log(run_dir: Path, *needles: bytes, wait: float = 30.0) -> bytes:
    """An offline W&B run's log (protobuf records, keys as plain strings) once it holds one of `needles`.
    W&B's service process writes it and may still be flushing when run.finish() returns: wait up to `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        log = next(run_dir.glob("run-*.wandb")).read_bytes()
        if any(n in log for n in needles) or time.monotonic() > deadline:
            return log
        time.sleep(0.2)
