"""H3's shift SSM: step == forward, causality, it is the short convolution its docstring says."""

import pytest
import torch

from ssmbench.models.layers.base import ssm_parameter_names
from ssmbench.models.layers.shift import ShiftSSM


@pytest.mark.parametrize("d_state", [1, 4, 64])
def test_step_matches_forward(d_state):
    torch.manual_seed(0)
    layer = ShiftSSM(8, d_state=d_state)
    x = torch.randn(2, 37, 8)
    with torch.no_grad():
        y = layer(x)
        state, ys = layer.allocate_cache(2, 37, "cpu"), []
        for t in range(37):
            y_t = layer.step(x[:, t], state)
            ys.append(y_t)
    assert state.shape == (2, 8, d_state)
    assert ((torch.stack(ys, 1) - y).norm() / y.norm()) < 1e-5


def test_definition():
    torch.manual_seed(1)
    layer = ShiftSSM(3, d_state=4)
    x = torch.randn(1, 12, 3)
    with torch.no_grad():
        y = layer(x)
    C, D = layer.C.detach(), layer.D.detach()
    for t in range(12):
        want = sum(C[:, k] * x[0, t - k] for k in range(4) if t - k >= 0) + D * x[0, t]
        assert torch.allclose(y[0, t], want, atol=1e-5)


def test_causal_and_params():
    torch.manual_seed(2)
    layer = ShiftSSM(8)
    x = torch.randn(2, 30, 8)
    x2 = x.clone()
    x2[:, 11:] = torch.randn(2, 19, 8)
    assert torch.allclose(layer(x)[:, :11], layer(x2)[:, :11])
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    assert ssm_parameter_names(layer) == {"C", "D"}
