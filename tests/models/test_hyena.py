"""Hyena implicit filter layer: step == forward, causality, any length, decaying filter."""

import dataclasses
import inspect

import pytest
import torch

from ssmbench.models.layers.base import ssm_parameter_names
from ssmbench.models.layers.hyena import HyenaFilterLayer, HyenaOptions
from ssmbench.models.registry import build_layer


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("emb_dim", [3, 5])
def test_step_matches_forward(emb_dim):
    torch.manual_seed(0)
    layer = HyenaFilterLayer(8, filter_order=16, emb_dim=emb_dim, max_len=64).eval()
    x = torch.randn(2, 40, 8)
    with torch.no_grad():
        y = layer(x)
        cache = layer.allocate_cache(2, 40, "cpu")
        ys = []
        for t in range(40):
            y_t = layer.step(x[:, t], cache)
            ys.append(y_t)
    state, = cache.buffers
    assert state.shape == (2, 8, 40) and state.dtype == torch.float32
    assert rel_err(torch.stack(ys, 1), y) < 1e-4


def test_step_with_grad_enabled_matches_too():
    torch.manual_seed(1)
    layer = HyenaFilterLayer(4, filter_order=8)
    x = torch.randn(1, 10, 4)
    state, ys = layer.allocate_cache(1, 10, "cpu"), []
    for t in range(10):
        y_t = layer.step(x[:, t], state)
        ys.append(y_t)
    assert rel_err(torch.stack(ys, 1).detach(), layer(x).detach()) < 1e-4


def test_causal():
    torch.manual_seed(2)
    layer = HyenaFilterLayer(8, filter_order=16)
    x = torch.randn(2, 60, 8)
    x2 = x.clone()
    x2[:, 31:] = torch.randn(2, 29, 8)
    with torch.no_grad():
        y, y2 = layer(x), layer(x2)
    assert torch.allclose(y[:, :31], y2[:, :31], atol=1e-5)
    assert not torch.allclose(y[:, 31:], y2[:, 31:], atol=1e-4)


def test_longer_than_max_len():
    torch.manual_seed(3)
    layer = HyenaFilterLayer(4, filter_order=16, max_len=1024)
    x = torch.randn(1, 3000, 4)
    with torch.no_grad():
        y = layer(x)
        y_short = layer(x[:, :1024])
    assert y.shape == x.shape and torch.isfinite(y).all()
    # the filter does not depend on L: a prefix of the input gives a prefix of the output
    assert rel_err(y[:, :1024], y_short) < 1e-4


def test_filter_decays():
    torch.manual_seed(4)
    layer = HyenaFilterLayer(8, filter_order=16, max_len=1024)
    plain = HyenaFilterLayer(8, filter_order=16, max_len=1024, modulate=False)
    plain.load_state_dict(layer.state_dict())
    with torch.no_grad():
        h, h_plain = layer.filter(1024), plain.filter(1024)
    window = h / h_plain                                       # exp(-t |delta_c|), per channel
    assert (window[:, 1:] <= window[:, :-1] + 1e-6).all()
    assert window[:, 0].sub(1).abs().max() < 1e-5
    assert (window[:, -1] <= 0.05).all()                       # the slowest channel reaches ~target^(1/1.5)
    assert h[:, -100:].abs().mean() < 0.1 * h[:, :100].abs().mean()


def test_gradients_params_options_registry():
    torch.manual_seed(5)
    layer = build_layer("hyena", 6, {"filter_order": 8, "max_len": 128})
    assert isinstance(layer, HyenaFilterLayer)
    layer(torch.randn(2, 20, 6)).square().mean().backward()
    for n, p in layer.named_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and torch.isfinite(p.grad).all(), n
    assert ssm_parameter_names(layer) == {n for n, _ in layer.named_parameters()}
    kwargs = list(inspect.signature(HyenaFilterLayer.__init__).parameters)[2:]
    assert kwargs == [f.name for f in dataclasses.fields(HyenaOptions)]
    with pytest.raises(ValueError, match="emb_dim"):
        HyenaFilterLayer(4, emb_dim=4)
