import subprocess
import sys

import pytest
import torch

from models import ATTENTION_LAYERS, MODEL_NAMES, build_model, quant_layer_names
from common.errors import UserError
from tests.conftest import ROOT

EXPECTED_LAYERS = {
    "lenet5": ["conv1", "conv2", "fc1", "fc2"],
    "alexnet": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"],
    "vgg16": [f"conv{i}" for i in range(1, 14)],
    "vgg19": [f"conv{i}" for i in range(1, 17)],
    # the stem, then each block's inner and post-add ReLU: 1 + 2 * 3 * n for depth 6n + 2
    **{f"resnet{d}": ["conv1"] + [f"g{g}b{b}c{c}" for g in (1, 2, 3) for b in range(1, (d - 2) // 6 + 1) for c in (1, 2)]
       for d in (20, 32, 56)},
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shapes_and_layer_lists(name):
    m = build_model(name)
    assert m.quant_layers == EXPECTED_LAYERS[name] == quant_layer_names(name)
    assert set(ATTENTION_LAYERS[name]) <= set(m.quant_layers)
    rec = {}
    out = m(torch.randn(2, 3, 32, 32), record=rec)
    assert out.shape == (2, 10)
    assert len(rec) == len(EXPECTED_LAYERS[name])
    assert all((v >= 0).all() for v in rec.values())  # record points are post-ReLU


def test_lenet5_is_the_guides_architecture():
    m = build_model("lenet5").eval()  # BatchNorm1d cannot train on a batch of one
    shapes = {n: tuple(getattr(m, n).weight.shape) for n in ("conv1", "conv2", "fc1", "fc2", "fc3")}
    assert shapes == {"conv1": (6, 3, 5, 5), "conv2": (16, 6, 5, 5), "fc1": (120, 400), "fc2": (84, 120),
                      "fc3": (10, 84)}
    rec = {}
    m(torch.randn(1, 3, 32, 32), record=rec)
    assert {k: tuple(v.shape) for k, v in rec.items()} == {
        "block_output.conv1": (1, 6, 28, 28), "block_output.conv2": (1, 16, 10, 10),
        "classifier.fc1.out": (1, 120), "classifier.fc2.out": (1, 84)}
    assert 60_000 < sum(p.numel() for p in m.parameters()) < 65_000


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_path_pools_before_relu_with_the_same_values_and_gradients(name):
    """Without `record`, pooled stages run ReLU after max-pooling (models/net.py);
    with it, ReLU first as the record points need. Both must agree exactly."""
    torch.manual_seed(0)
    m = build_model(name).train()
    x = torch.randn(4, 3, 32, 32)
    proj = torch.randn(4, 10)
    results = []
    for record in (None, {}):
        out = m(x, record=record)
        grads = torch.autograd.grad((out * proj).sum(), list(m.parameters()))
        results.append((out, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UserError, match="lenet5"):
        build_model("resnet")


def test_debug_command_prints_shapes_and_record_points():
    r = subprocess.run([sys.executable, "-m", "models.lenet5"], cwd=ROOT, capture_output=True, text=True, check=True)
    for needle in ("block_output.conv1", "block_output.conv2", "classifier.fc1.out", "classifier.fc2.out",
                   "(1, 6, 28, 28)", "(1, 400)", "(1, 10)"):
        assert needle in r.stdout


@pytest.mark.parametrize("batchnorm", ["conv", "all"])
def test_folding_batchnorm_gives_the_plain_network_with_the_same_function(batchnorm):
    from models.net import fold_batchnorm

    torch.manual_seed(0)
    m = build_model("lenet5", batchnorm).train()
    for _ in range(3):  # non-trivial running statistics
        m(torch.randn(32, 3, 32, 32))
    for name in m.bn_layers:  # and non-trivial affine parameters
        bn = getattr(m, f"{name}_bn")
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    m.eval()
    plain = fold_batchnorm(m)
    assert m.batchnorm == batchnorm and plain.batchnorm == "none"
    assert m.bn_layers == (["conv1", "conv2"] if batchnorm == "conv" else ["conv1", "conv2", "fc1", "fc2"])
    assert sum(p.numel() for p in plain.parameters()) == 62_006  # the guide's LeNet-5, exactly
    x = torch.randn(8, 3, 32, 32)
    ra, rb = {}, {}
    assert torch.allclose(m(x, record=ra), plain(x, record=rb), atol=1e-5)
    assert all(torch.allclose(ra[k], rb[k], atol=1e-5) for k in ra)


def test_bad_batchnorm_placement_is_a_clear_error():
    with pytest.raises(UserError, match="none, conv, all"):
        build_model("lenet5", "fc")


def test_debug_command_shows_the_folded_network():
    r = subprocess.run([sys.executable, "-m", "models.lenet5", "--batchnorm", "conv"], cwd=ROOT, capture_output=True,
                       text=True, check=True)
    assert "BatchNorm after conv1, conv2" in r.stdout and "folded into conv1, conv2" in r.stdout
    assert "62,006 parameters" in r.stdout
