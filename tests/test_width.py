"""--width: narrower nets that train on 2 cores, recorded and refused where they do not match."""

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the TapQuant-* ids)
from common.errors import UserError
from envs.problem import TapProblem
from models import build_model, scaled_stages
from quant.qat import load_teacher
from tests.conftest import train_args
from train_baselines import train


def test_width_scales_every_hidden_layer_and_keeps_the_classifier():
    full, half = scaled_stages("alexnet", 1.0), scaled_stages("alexnet", 0.5)
    assert [s.out_ch for s in half] == [32, 96, 192, 128, 128, 512, 512, 10]
    assert half[5].in_ch == 128 * 4 * 4 and full[5].in_ch == 256 * 4 * 4  # fc6 reads the flattened 4x4 map
    net = build_model("vgg16", width=0.25)
    assert net.width == 0.25 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in build_model("alexnet", width=0.5).parameters()) == 1_881_642  # the 1.88 M
    with pytest.raises(UserError, match="leaves lenet5's conv1 .6 channels. with no channel"):
        build_model("lenet5", width=0.05)
    with pytest.raises(UserError, match="finite number > 0"):
        build_model("lenet5", width=0.0)


def test_a_narrow_teacher_carries_its_width_through_qat_search_and_resume(tmp_path, tiny_tar, cache_dir):
    def stop(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_args("float", tmp_path, tiny_tar, cache_dir, epochs=2, width=0.5), on_epoch_end=stop)
    with pytest.raises(UserError, match="started with width=0.5, now 1.0"):  # another width does not resume
        train(train_args("float", tmp_path, tiny_tar, cache_dir, epochs=2, resume=True))
    train(train_args("float", tmp_path, tiny_tar, cache_dir, epochs=2, width=0.5, resume=True))
    train(train_args("qat", tmp_path, tiny_tar, cache_dir, epochs=1))
    teacher = load_teacher(tmp_path / "lenet5_qat_preconvert.pth", "lenet5")
    assert teacher.width == 0.5 and teacher.meta["width"] == 0.5
    assert [st.out_ch for st in teacher.stages] == [3, 8, 60, 42, 10]
    kw = dict(out_dir=str(tmp_path), data=str(tiny_tar), cache_dir=str(cache_dir), search_size=60, calib_batches=1)
    problem = TapProblem(width=0.5, **kw)
    assert np.isfinite(problem.score_params(problem.analytic)["reward"])
    with pytest.raises(UserError, match="width 0.5, but --width is 1.0; pass --width 0.5"):
        TapProblem(width=1.0, **kw)


def test_a_narrow_alexnet_trains_in_bf16_resumes_exactly_and_quantizes(tmp_path, tiny_tar, cache_dir):
    """bf16 autocast with channels-last (asked for: emulated, slower, on a CPU without native bf16): the one-batch
    check is recorded, a killed run resumes to the same weights, and QAT starts from it in fp32."""
    from models.checkpoint import load_checkpoint

    kw = dict(model="alexnet", width=0.125, precision="bf16", epochs=2)
    full = train(train_args("float", tmp_path / "a", tiny_tar, cache_dir, **kw))
    assert full["precision"] == "bf16" and abs(full["bf16_check"]["bf16"] - full["bf16_check"]["fp32"]) < 0.1

    def stop(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_args("float", tmp_path / "b", tiny_tar, cache_dir, **kw), on_epoch_end=stop)
    with pytest.raises(UserError, match="started with precision=bf16, now fp32"):
        train(train_args("float", tmp_path / "b", tiny_tar, cache_dir, **{**kw, "precision": "fp32"}, resume=True))
    train(train_args("float", tmp_path / "b", tiny_tar, cache_dir, **kw, resume=True))
    a, b = (load_checkpoint(tmp_path / d / "alexnet_float_unfused.pth")["state_dict"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    qat = train(train_args("qat", tmp_path / "a", tiny_tar, cache_dir, model="alexnet"))
    assert qat["complete"] and qat["width"] == 0.125 and "bf16_check" not in qat

    # The trained net through the user's doors: its registered env, and the ONNX export scoring as the teacher.
    env = gym.make("TapQuant-AlexNet-v1", out_dir=str(tmp_path / "a"), data=str(tiny_tar), cache_dir=str(cache_dir),
                   search_size=60, calib_batches=1, width=0.125)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, reward, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and np.isfinite(reward)
    if importlib.util.find_spec("onnxruntime"):
        from agents.evaluate import evaluate_onnx
        from agents.export import export

        onnx_file = tmp_path / "alexnet.onnx"
        export(teacher=str(tmp_path / "a" / "alexnet_qat_preconvert.pth"), output=str(onnx_file), model="alexnet")
        ev = evaluate_onnx(onnx_file, tiny_tar, cache_dir, verbose=False)
        assert ev["student"] == pytest.approx(ev["teacher"], abs=1e-4)
