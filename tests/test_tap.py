import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from quant.attention import attention_loss, attention_map
from quant.histogram import code_histogram, p90_nonzero, stats_from_counts, tmax_from_counts
from quant.tap import build_table, decode_action, levels_of

actions = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4)


@settings(max_examples=300, deadline=None)
@given(a=actions, tmax=st.integers(1, 255), k=st.sampled_from([4, 5, 8, 16, 32, 64]))
def test_every_action_decodes_to_a_valid_monotone_table(a, tmax, k):
    p = decode_action(a, tmax, k)
    assert p.n1 >= 1 and p.n2 >= 1 and p.n3 >= 1 and p.n1 + p.n2 + p.n3 == k - 1
    if not p.exact:
        assert 0 < p.b1 < p.b2 < tmax
    t = build_table(p)
    assert t.dtype == np.uint8 and t.shape == (256,)
    assert t[0] == 0 and t[tmax] == tmax
    assert (np.diff(t.astype(int)) >= 0).all()
    assert (t[tmax:] == t[tmax]).all()
    assert len(np.unique(t)) <= k  # never more than the budget
    assert set(np.unique(t[: tmax + 1]).tolist()) == set(levels_of(p))
    if p.exact:
        assert (t[: tmax + 1] == np.arange(tmax + 1)).all()


def test_decoder_edges():
    lo = decode_action([-1, -1, -1, -1], 30, 16)
    assert (lo.b1, lo.b2, lo.n1, lo.n2, lo.n3) == (1, 2, 1, 1, 13)
    hi = decode_action([1, 1, 1, 1], 30, 16)
    assert (hi.b1, hi.b2, hi.n1, hi.n2, hi.n3) == (28, 29, 13, 1, 1)
    k4 = decode_action([0.3, -0.2, 0.9, -0.9], 40, 4)
    assert (k4.n1, k4.n2, k4.n3) == (1, 1, 1)
    assert levels_of(k4) == [0, k4.b1, k4.b2, 40]
    # tmax < 4 (and generally tmax < K): the exact identity up to tmax
    for tmax in (1, 2, 3):
        t = build_table(decode_action([0, 0, 0, 0], tmax, 4))
        assert t[: tmax + 1].tolist() == list(range(tmax + 1)) and (t[tmax:] == tmax).all()
    # out-of-range actions are brought into [-1, 1] before decoding
    assert decode_action([5, -7, 2, -3], 30, 16) == decode_action([1, -1, 1, -1], 30, 16)
    with pytest.raises(ValueError):
        decode_action([0, 0, 0, 0], 30, 3)


def test_nearest_level_ties_go_low():
    p = decode_action([-1, -1, 1, -1], 40, 4)  # levels 0, 1, 2, 40
    t = build_table(p)
    assert levels_of(p) == [0, 1, 2, 40]
    assert t[21] == 2 and t[22] == 40  # 21 is exactly between 2 and 40: goes low
    p = decode_action([-1, -1, -1, -1], 12, 4)  # 12 < ... not exact (K=4): levels 0,1,2,12
    assert build_table(p)[7].item() == 2  # tie 7 between 2 and 12 -> lower


def test_histogram_p90_and_tmax_on_known_codes():
    codes = torch.tensor([0] * 50 + list(range(1, 101)), dtype=torch.float32)
    counts = code_histogram(codes)
    assert counts.sum() == 150 and counts[0] == 50 and counts[1:101].tolist() == [1] * 100
    assert p90_nonzero(counts) == 90  # 90th percentile of 1..100, zeros excluded
    assert tmax_from_counts(counts) == 100
    st_ = stats_from_counts(counts)
    assert st_.zero_frac == pytest.approx(1 / 3) and st_.sat_frac == 0.0
    assert st_.binned(10).sum() == pytest.approx(1.0)
    counts2 = np.zeros(256, dtype=np.int64)
    counts2[250] = 10
    assert tmax_from_counts(counts2) == 255  # min(255, p90 + 10)
    assert tmax_from_counts(np.zeros(256, dtype=np.int64)) == 10  # all zeros: p90 = 0


def test_attention_loss_known_values():
    a = torch.rand(4, 16, 10, 10)
    assert attention_loss(a, attention_map(a)).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_loss(3 * a, attention_map(a)).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    g = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # per sample: q = a^2 / ||a^2||: [1,0] vs [0,1] -> sqrt(2); [0,1] vs [0,1] -> 0
    assert attention_loss(f, attention_map(g)).item() == pytest.approx(np.sqrt(2) / 2)
    conv = torch.zeros(1, 2, 2, 2)
    conv[0, 0, 0, 0] = 1.0
    assert attention_map(conv).tolist() == [[1.0, 0.0, 0.0, 0.0]]


@given(st.integers(1, 255), st.integers(4, 64), st.lists(st.floats(-1, 1), min_size=4, max_size=4))
def test_encode_action_inverts_decode_action(tmax, levels, action):
    from quant.tap import encode_action

    p = decode_action(action, tmax, levels)
    assert decode_action(encode_action(p), tmax, levels) == p
