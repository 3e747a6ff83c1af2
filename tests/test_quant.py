import numpy as np
import pytest
import torch

from models import build_model
from quant.fake_quant import activation_codes, fake_quant_weight
from quant.integer import export_int8, integer_predict
from quant.qat import EMA, QuantNet
from quant.tap import identity_table


def calibrated(name="lenet5", seed=0):
    torch.manual_seed(seed)
    q = QuantNet(build_model(name))
    q.calibrate([(torch.randn(64, 3, 32, 32), None)])
    return q.eval()


def test_activation_codes_semantics_and_ste():
    y = torch.tensor([-1.0, 0.0, 0.04, 0.05, 0.26, 3.0, 100.0], requires_grad=True)
    s = torch.tensor(0.1)
    q = activation_codes(torch.relu(y), s)
    assert q.tolist() == [0, 0, 0, 0, 3, 30, 255]  # round half to even: 0.5 -> 0
    q.sum().backward()
    # STE: gradient 1/s inside the range, 0 where clamped (and where ReLU is off)
    assert y.grad.tolist() == pytest.approx([0, 0, 10, 10, 10, 10, 0])


def test_weight_fake_quant_is_int8_per_channel():
    w = torch.randn(6, 3, 5, 5) * torch.arange(1, 7).view(6, 1, 1, 1)
    wq, s = fake_quant_weight(w)
    codes = wq / s.view(6, 1, 1, 1)
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.abs().max() <= 127 + 1e-4
    assert torch.allclose(codes.abs().flatten(1).amax(1), torch.full((6,), 127.0))
    w.requires_grad_(True)
    fake_quant_weight(w)[0].sum().backward()
    assert torch.allclose(w.grad, torch.ones_like(w))


def test_record_points_are_uint8_codes_and_zero_stays_zero():
    q = calibrated()
    x = torch.randn(8, 3, 32, 32)
    rec = {}
    q(x, record=rec)
    for n, c in rec.items():
        assert torch.equal(c, c.round()) and c.min() >= 0 and c.max() <= 255
    assert (rec["conv1"] == 0).float().mean() > 0.05  # ReLU zeros present as code 0


def test_lookup_table_changes_codes_as_asked():
    q = calibrated()
    x = torch.randn(8, 3, 32, 32)
    ident = {n: torch.tensor(identity_table()).float() for n in q.quant_layers}
    base, rec_b = {}, {}
    out_plain = q(x, record=base)
    out_ident = q(x, tables=ident, record=rec_b)
    assert torch.equal(out_plain, out_ident)
    halve = torch.tensor((np.arange(256) // 2) * 2).float()  # odd codes -> even code below
    rec = {}
    q(x, tables={"conv2": halve}, record=rec)
    assert torch.equal(rec["conv1"], base["conv1"])  # upstream untouched
    assert (rec["conv2"] % 2 == 0).all()
    assert torch.equal(rec["conv2"], halve[q.codes(1, q.next_input(0, base["conv1"])).long()])


def test_bn_folding_preserves_the_float_function():
    torch.manual_seed(0)
    f = build_model("alexnet")
    f.train()
    f(torch.randn(16, 3, 32, 32))  # give BatchNorm non-trivial running statistics
    f.eval()
    q = QuantNet(f)
    h = torch.randn(4, 3, 32, 32)
    y_float = torch.relu(f.conv1_bn(f.conv1(h)))
    y_fold = torch.relu(torch.nn.functional.conv2d(h, q.weights["conv1"], q.biases["conv1"], padding=1))
    assert torch.allclose(y_float, y_fold, atol=1e-4)


def test_integer_only_inference_agrees_with_fake_quant(tiny_teacher, tiny_tar, cache_dir):
    from quant.qat import load_teacher
    from models.data import load_cifar10
    from models.metrics import predict

    q = load_teacher(tiny_teacher / "lenet5_qat_preconvert.pth", "lenet5")
    d = load_cifar10(tiny_tar, cache_dir)
    exported = export_int8(q)
    assert exported[1][0].w.dtype == torch.int32 and exported[1][0].w.abs().max() <= 127
    p_int = integer_predict(d.test_x, exported)
    p_fq = predict(q, d.test_x, "cpu")
    assert (p_int == p_fq).float().mean() >= 0.99
    # with a table on every layer too
    t = {n: torch.tensor(np.minimum(np.arange(256), 20)).float() for n in q.quant_layers}
    p_int_t = integer_predict(d.test_x, exported, tables={n: v.to(torch.uint8).numpy() for n, v in t.items()})
    p_fq_t = predict(q, d.test_x, "cpu", tables=t)
    assert (p_int_t == p_fq_t).float().mean() >= 0.99


@pytest.mark.parametrize("observer", ["ema", "max"])
def test_observers_track_the_batch_maxima(observer):
    torch.manual_seed(0)
    q = QuantNet(build_model("lenet5"), observer=observer).train()
    batches = [torch.randn(16, 3, 32, 32) * k for k in (1.0, 3.0, 0.5)]
    maxima = []
    for x in batches:
        rec: dict = {}
        with torch.no_grad():
            q(x, record=rec)
            # conv1's pre-quantisation output of this batch, for the expected observer value
            maxima.append(q.linear_part(0, q.quantize_input(x)).amax().clamp_min(0))
    first, expect = maxima[0], maxima[0]
    for m in maxima[1:]:
        expect = torch.maximum(expect, m) if observer == "max" else (1 - EMA) * expect + EMA * m
    assert q.act_max[0] == pytest.approx(float(expect), rel=1e-5)
    assert (observer == "max") == bool(q.act_max[0] > first * 1.5)  # the 3x batch dominates only "max"
    q.eval()
    before = q.act_max.clone()
    q(batches[1] * 10)
    assert torch.equal(q.act_max, before)  # frozen outside training


def test_frozen_weights_match_and_are_dropped_by_training():
    q = calibrated()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        plain = q(x)
        q.freeze()
        assert torch.equal(q(x), plain)
        q.double().float()  # dtype/device moves re-freeze from the moved weights
        assert q._frozen is not None and torch.equal(q(x), plain)
    q.train()
    assert q._frozen is None  # training must see the live weights
    with torch.no_grad():
        q.weights["conv1"].mul_(2)
    q.eval()
    assert not torch.equal(q(x), plain)
