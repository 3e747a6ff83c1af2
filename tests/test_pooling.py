"""max_pool2x2 against F.max_pool2d: values always, gradients where maxima are unique,
and a valid subgradient (one maximal element per window) where they tie."""

import pytest
import torch
import torch.nn.functional as F

from models.pooling import max_pool2x2


def windows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) with even H, W -> (N, C, H/2, W/2, 4): each 2x2 window's elements."""
    n, c, h, w = t.shape
    return t.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)


@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (3, 16, 10, 10), (2, 5, 7, 9), (2, 3, 2, 2)])
def test_values_and_gradients_equal_max_pool2d(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    ref = F.max_pool2d(x, 2)
    out = max_pool2x2(x)
    assert torch.equal(out, ref)
    g = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, x, g)
    (g_out,) = torch.autograd.grad(out, x, g)
    assert torch.equal(g_out, g_ref)  # continuous random values: every maximum is unique


def test_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(max_pool2x2, (x,))


def test_ties_give_each_window_gradient_to_one_maximal_element():
    torch.manual_seed(2)
    x = torch.randint(0, 3, (8, 4, 12, 12)).float().requires_grad_()  # ties in most windows
    out = max_pool2x2(x)
    assert torch.equal(out, F.max_pool2d(x, 2))
    g = torch.rand_like(out) + 0.5  # nonzero everywhere
    (gx,) = torch.autograd.grad(out, x, g)
    gw, xw = windows(gx), windows(x.detach())
    receives = gw != 0
    assert (receives.sum(-1) == 1).all()
    assert (xw[receives] == out.detach().flatten()).all()  # the element that receives it is a maximum
    assert torch.equal(gw.sum(-1), g)
    # the tie rule documented in models/pooling.py: left column, then top row
    for window, receives in (([5.0, 5.0, 5.0, 5.0], 0), ([1.0, 5.0, 5.0, 0.0], 2), ([1.0, 5.0, 2.0, 5.0], 1)):
        w = torch.tensor(window).view(1, 1, 2, 2).requires_grad_()
        (gw1,) = torch.autograd.grad(max_pool2x2(w).sum(), w)
        assert gw1.flatten().tolist() == [float(i == receives) for i in range(4)]


def test_integer_codes_and_no_grad():
    torch.manual_seed(3)
    codes = torch.randint(0, 256, (2, 6, 28, 28), dtype=torch.uint8)
    out = max_pool2x2(codes)
    assert out.dtype == torch.uint8
    assert torch.equal(out, F.max_pool2d(codes.float(), 2).to(torch.uint8))
    x = torch.randn(2, 6, 13, 13, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(max_pool2x2(x), F.max_pool2d(x, 2))
