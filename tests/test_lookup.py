import pytest
import torch

from models import build_model
from quant.lookup import apply_table, code_pairs, pair_table
from quant.qat import QuantNet


def random_codes(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g)


@pytest.mark.parametrize("code_dtype,table_dtype,out_dtype", [
    (torch.float32, torch.float32, torch.float32),
    (torch.float32, torch.uint8, torch.float32),    # a float q gets a float table
    (torch.float64, torch.float64, torch.float64),  # no wider integer: one gather per code
    (torch.float16, torch.float32, torch.float16),
    (torch.int32, torch.int32, torch.int32),
    (torch.uint8, torch.uint8, torch.uint8),
])
@pytest.mark.parametrize("shape", [(4, 6, 5, 7), (3, 5), (7,)])  # even and odd element counts
def test_lookup_equals_plain_indexing(code_dtype, table_dtype, out_dtype, shape):
    q = random_codes(*shape)
    table = torch.randperm(256, generator=torch.Generator().manual_seed(1)).to(table_dtype)
    out = apply_table(q.to(code_dtype), table)
    assert out.dtype == out_dtype and out.shape == q.shape
    assert torch.equal(out, table[q].to(out_dtype))


def test_lookup_keeps_channels_last_and_accepts_precomputed_pairs():
    q = random_codes(3, 16, 10, 10).float().contiguous(memory_format=torch.channels_last)
    table = torch.rand(256)
    out = apply_table(q, table, pairs=code_pairs(q), pair_tab=pair_table(table))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert torch.equal(out, table[q.long()])


def test_pair_table_rejects_a_table_of_the_wrong_size():
    with pytest.raises(ValueError, match="256 entries"):
        pair_table(torch.zeros(255))


def test_flatten_of_a_channels_last_map_matches_the_plain_one():
    torch.manual_seed(0)
    qn = QuantNet(build_model("lenet5"))
    qn.calibrate([(torch.randn(16, 3, 32, 32), None)])
    qn.eval().freeze()
    i = qn.stage_index("fc1")
    h = torch.rand(8, 16, 5, 5)
    plain = qn.linear_part(i, h)
    cl = qn.linear_part(i, h.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(plain, cl, rtol=1e-5, atol=1e-5)
