"""Residual nets: the chain with skip edges (models/net.py) through QAT, the integer reference, the scorer,
the env and the ONNX export, on a narrow ResNet-20 trained on the tiny subset."""

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the TapQuant-* ids)
from envs.problem import TapProblem
from models import build_model, quant_layer_names
from models.data import load_cifar10
from models.metrics import predict
from models.net import Stage, StagedNet, shortcut
from quant.integer import export_int8, integer_logits, integer_predict
from quant.qat import load_teacher
from quant.tap import identity_table
from tests.conftest import train_args
from train_baselines import train

WIDTH = 0.125  # 2 / 4 / 8 channels: seconds an epoch on the tiny subset


def test_resnet20_is_he_et_al_s_cifar_net():
    net = build_model("resnet20")
    assert sum(p.numel() for p in net.parameters() if p.dim() > 1) == 268_336  # conv + fc weights: the paper's 0.27 M
    assert len(quant_layer_names("resnet20")) == 19 and len(quant_layer_names("resnet56")) == 55
    assert [st.residual for st in net.stages if st.residual][:3] == ["conv1", "g1b1c2", "g1b2c2"]
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # Option A: every second position, the new channels zero on both sides.
    x = torch.arange(2 * 4 * 4 * 4.0).view(2, 4, 4, 4)
    y = shortcut(x, torch.Size([2, 8, 2, 2]))
    assert y.shape == (2, 8, 2, 2) and torch.equal(y[:, 2:6], x[:, :, ::2, ::2]) and not y[:, :2].any()


def test_a_skip_edge_must_point_back():
    stages = [Stage("conv1", "conv", 3, 4, kernel=3, padding=1, residual="conv2"),
              Stage("conv2", "conv", 4, 4, kernel=3, padding=1), Stage("fc", "fc", 4, 10, gap=True, classifier=True)]
    with pytest.raises(ValueError, match="conv1: its residual source 'conv2' is not an earlier hidden layer"):
        StagedNet("bad", stages)


@pytest.fixture(scope="module")
def resnet_teacher(tmp_path_factory, tiny_tar, cache_dir):
    out = tmp_path_factory.mktemp("resnet20")
    # Batches of 270: a narrow ResNet's step is all per-layer overhead, so fewer steps are what makes it quick.
    train(train_args("float", out, tiny_tar, cache_dir, model="resnet20", width=WIDTH, precision="fp32", batch_size=270))
    train(train_args("qat", out, tiny_tar, cache_dir, model="resnet20", batch_size=270))
    return out


def test_integer_reference_and_scorer_agree_with_fake_quant(resnet_teacher, tiny_tar, cache_dir):
    q = load_teacher(resnet_teacher / "resnet20_qat_preconvert.pth", "resnet20")
    d = load_cifar10(tiny_tar, cache_dir)
    exported = export_int8(q)
    joins = [layer for layer in exported[1] if layer.residual]
    assert len(joins) == 9 and all(layer.skip_mantissa is not None for layer in joins)
    assert exported[1][-1].gap_size == 64  # 8 x 8 positions summed before the classifier
    tables = {n: np.minimum(np.arange(256), 12).astype(np.uint8) for n in q.quant_layers}
    for t in (None, tables):
        p_int = integer_predict(d.test_x, exported, tables=t)
        p_fq = predict(q, d.test_x, "cpu", tables={n: torch.tensor(v).float() for n, v in t.items()} if t else None)
        assert (p_int == p_fq).float().mean() >= 0.99
    # The scorer (int8 kernels where the CPU has them) starts from the teacher's codes at a block's join.
    problem = TapProblem(model="resnet20", width=WIDTH, out_dir=str(resnet_teacher), data=str(tiny_tar),
                         cache_dir=str(cache_dir), search_size=60, calib_batches=1)
    ident = {n: identity_table() for n in problem.layers}
    assert problem.score_uncached(ident).drop == 0.0
    late = {n: tables[n] for n in problem.layers[8:]}  # from g2b1c2 on: g1b3c2's teacher codes join g2b1c2
    runner_preds = torch.cat([logits.argmax(1) for *_, logits, _ in problem.runner.chunks(
        problem.runner.device_tables(late))])
    x = d.train_x[problem.search_idx]
    full_preds = predict(q, x, "cpu", tables={n: torch.tensor(v).float() for n, v in late.items()})
    assert (runner_preds == full_preds).float().mean() >= 0.95
    assert np.isfinite(problem.score_params(problem.analytic)["reward"])


def test_registered_env_and_onnx_export_of_a_residual_net(resnet_teacher, tiny_tar, cache_dir, tmp_path):
    env = gym.make("TapQuant-ResNet20-v1", out_dir=str(resnet_teacher), data=str(tiny_tar),
                   cache_dir=str(cache_dir), search_size=40, calib_batches=1, width=WIDTH)
    obs, _ = env.reset(seed=0)
    for _ in range(19):
        obs, reward, term, _, info = env.step(env.action_space.sample())
    assert term and np.isfinite(reward) and len(info["config"]) == 19
    assert set(info["att_per_layer"]) == {"g2b3c2", "g3b3c2"}
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime as ort

        from quant.onnx_export import build_onnx

        q = load_teacher(resnet_teacher / "resnet20_qat_preconvert.pth", "resnet20")
        exported, d = export_int8(q), load_cifar10(tiny_tar, cache_dir)
        tables = {n: np.minimum(np.arange(256), 30).astype(np.uint8) for n in q.quant_layers[::2]}
        for t in (None, tables):
            sess = ort.InferenceSession(build_onnx(exported, t).SerializeToString())
            got = sess.run(None, {"pixels": d.test_x.numpy()})[0]
            ref = integer_logits(d.test_x, exported, t).numpy()
            assert np.array_equal(got.argmax(1), ref.argmax(1)) and np.allclose(got, ref, atol=1e-5)


def test_a_checkpoint_of_another_structure_is_refused_in_one_line(tmp_path):
    from common.errors import UserError
    from tests.test_env import random_weight_teacher

    random_weight_teacher("resnet20", tmp_path)
    with pytest.raises(UserError) as e:
        load_teacher(tmp_path / "resnet20_qat_preconvert.pth", "resnet32")
    assert "holds a resnet20 model, but --model is resnet32" in str(e.value) and "\n" not in str(e.value)
