"""The search's stage kernels (quant/kernels.py) against QuantNet's float simulation."""

import os
import subprocess
import sys

import pytest
import torch

from quant.qat import load_teacher
from models import build_model
from models.batching import iterate
from models.data import load_cifar10
from models.pooling import max_pool2x2
from quant.attention import energy, square_pair_table, tabled_energy
from quant.kernels import (INT8_SAFE_MAX, FloatStages, Int8Stages, int8_exact_max_code, int8_kernels_available,
                          stage_kernels)
from quant.qat import QuantNet
from tests.conftest import ROOT

needs_int8 = pytest.mark.skipif(not int8_kernels_available(), reason="no oneDNN int8 kernels in this PyTorch build")
BACKENDS = [FloatStages, pytest.param(Int8Stages, marks=needs_int8)]


def teacher_record(tiny_teacher, tiny_tar, cache_dir):
    q = load_teacher(tiny_teacher / "lenet5_qat_preconvert.pth", "lenet5")
    x = load_cifar10(tiny_tar, cache_dir).test_x[:100]
    xb = next(iterate(x, torch.zeros(len(x), dtype=torch.long), len(x), torch.device("cpu")))[0]
    rec: dict = {}
    logits = q(xb, record=rec)
    return q, rec, logits


def what_reads(q: QuantNet, rec: dict, i: int, kernels) -> torch.Tensor:
    """The teacher's codes that stage i reads (pooled, channels-last), in the kernels' dtype."""
    prev = q.stages[i - 1]
    codes = rec[prev.name]
    codes = max_pool2x2(codes) if prev.pool else codes
    if codes.dim() == 4:
        codes = codes.contiguous(memory_format=torch.channels_last)
    return codes.to(kernels.dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stages_reproduce_the_teachers_codes_and_logits(backend, tiny_teacher, tiny_tar, cache_dir):
    q, rec, logits = teacher_record(tiny_teacher, tiny_tar, cache_dir)
    kern = backend(q)
    for i in range(1, len(q.stages)):
        h = what_reads(q, rec, i, kern)
        if q.stages[i].classifier:
            assert torch.allclose(kern.logits(i, h).float(), logits, rtol=1e-4, atol=1e-4)
            continue
        out = kern.codes(i, h)
        assert out.dtype == kern.dtype and out.shape == rec[q.stages[i].name].shape
        diff = (out.float() - rec[q.stages[i].name]).abs()
        # Codes may differ by one where float rounding meets a .5 boundary: ~3 in a million.
        assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.999


@needs_int8
def test_int8_kernels_match_the_float_simulation_on_tabled_codes(tiny_teacher, tiny_tar, cache_dir):
    """Codes a table saturates at 60 (tmax-like) run in the int8 kernels themselves, not the fallback."""
    q, rec, _ = teacher_record(tiny_teacher, tiny_tar, cache_dir)
    int8, flt = Int8Stages(q), FloatStages(q)
    int8._float = None  # any use of the float fallback would fail
    for i in range(1, len(q.stages)):
        h = what_reads(q, rec, i, int8).clamp(max=60)
        assert h.amax() <= INT8_SAFE_MAX and h.amax() == 60
        if q.stages[i].classifier:
            assert torch.allclose(int8.logits(i, h), flt.logits(i, h.float()), rtol=1e-4, atol=1e-4)
            continue
        diff = (int8.codes(i, h).float() - flt.codes(i, h.float())).abs()
        assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.999


def _codes_up_to_255_match_the_float_simulation() -> int:
    """Int8Stages on codes 130..255 (where u8 x s8 pairs can saturate without VNNI) against the float
    simulation; returns the measured exact bound."""
    torch.manual_seed(0)
    q = QuantNet(build_model("lenet5"))
    with torch.no_grad():  # every int8 weight of conv2 at +-127: the largest pair sums
        w = q.weights["conv2"]
        w.copy_(w.sign() * w.abs().amax(dim=(1, 2, 3), keepdim=True))
    q.calibrate([(torch.randn(16, 3, 32, 32), None)])
    q.eval().freeze()
    assert q.int8_weights(1)[0].abs().min() == 127
    int8, flt = Int8Stages(q), FloatStages(q)
    h = torch.randint(130, 256, (8, 6, 14, 14), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    diff = (int8.codes(1, h).float() - flt.codes(1, h.float())).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.999  # float32 requantisation: a .5 boundary at most
    return int8.exact_max


@needs_int8
def test_int8_codes_up_to_255_are_exact_on_this_cpu():
    """On a CPU with VNNI the kernels take every code (exact_max 255); without, codes above 129 take the float
    path. Either way the codes are the float simulation's."""
    assert _codes_up_to_255_match_the_float_simulation() in (INT8_SAFE_MAX, 255)


@needs_int8
def test_without_vnni_the_bound_is_measured_and_the_codes_stay_exact():
    """oneDNN capped at AVX2 (what an AVX2-only CPU runs, on any x86 CPU): the measured bound is 129."""
    code = ("from tests.test_kernels import _codes_up_to_255_match_the_float_simulation as f; "
            "import sys; sys.exit(0 if f() == 129 else 3)")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"},
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_channels_last_flatten_matches_the_plain_one(backend):
    torch.manual_seed(0)
    q = QuantNet(build_model("lenet5"))
    q.calibrate([(torch.randn(16, 3, 32, 32), None)])
    kern = backend(q.eval().freeze())
    h = torch.randint(0, 60, (8, 16, 5, 5)).to(kern.dtype)
    i = q.stage_index("fc1")
    plain = kern.codes(i, h)
    cl = kern.codes(i, h.contiguous(memory_format=torch.channels_last))
    assert torch.equal(plain, cl)


def test_backend_choice():
    q = QuantNet(build_model("lenet5"))
    q.calibrate([(torch.randn(4, 3, 32, 32), None)])
    q.eval().freeze()
    cpu = torch.device("cpu")
    assert isinstance(stage_kernels(q, cpu, "float"), FloatStages)
    expected = Int8Stages if int8_exact_max_code() else FloatStages
    assert isinstance(stage_kernels(q, cpu, "auto"), expected)
    assert isinstance(stage_kernels(q, torch.device("cuda"), "auto"), FloatStages)  # chosen, not run
    with pytest.raises(ValueError, match="needs a CPU"):
        stage_kernels(q, torch.device("cuda"), "int8")
    with pytest.raises(ValueError, match="auto, int8 or float"):
        stage_kernels(q, cpu, "fp8")


@pytest.mark.parametrize("shape,channels_last", [((3, 16, 4, 5), True), ((3, 5, 4, 4), True),
                                                  ((3, 16, 4, 5), False), ((7, 120), False)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_tabled_energy_equals_the_energy_of_the_looked_up_map(shape, channels_last, dtype):
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 256, shape, generator=g).to(dtype)
    if channels_last:
        q = q.contiguous(memory_format=torch.channels_last)
    table = torch.sort(torch.randint(0, 256, (256,), generator=g)).values.to(dtype)
    table[0] = 0
    want = energy(table[q.long()])
    assert torch.equal(tabled_energy(q, table), want)
    assert torch.equal(tabled_energy(q, table, sq_pair_tab=square_pair_table(table)), want)


def test_the_kernels_line_names_the_choice_and_its_reason():
    from quant.kernels import kernels_line

    assert "float simulation (asked)" in kernels_line("cpu", "float")
    assert "float simulation (cuda)" in kernels_line("cuda", "auto")
    line = kernels_line("cpu", "auto")
    if not int8_kernels_available():
        assert "no oneDNN int8 kernels here" in line
    elif int8_exact_max_code() == 255:
        assert "VNNI: exact for every code" in line
    else:
        assert "above code 129" in line


def test_a_cpu_whose_int8_kernels_refuse_to_run_gets_the_float_simulation(monkeypatch):
    """oneDNN without an int8 implementation for the CPU's instruction set: no traceback, the float scorer."""
    import quant.kernels as kernels

    def refuse():
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(kernels, "_probe_int8_kernels", refuse)
    monkeypatch.setattr(kernels, "int8_kernels_available", lambda: True)
    kernels.int8_exact_max_code.cache_clear()
    try:
        q = QuantNet(build_model("lenet5"))
        q.calibrate([(torch.randn(4, 3, 32, 32), None)])
        assert isinstance(stage_kernels(q.eval().freeze(), torch.device("cpu"), "auto"), FloatStages)
        assert "float simulation (no oneDNN int8 kernels here)" in kernels.kernels_line("cpu", "auto")
        with pytest.raises(ValueError, match="use --backend float"):
            stage_kernels(q, torch.device("cpu"), "int8")
    finally:
        kernels.int8_exact_max_code.cache_clear()
