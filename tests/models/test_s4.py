"""S4 / S4D: both views agree, causality, HiPPO-LegS and its NPLR form, ZOH, gradients, parameter groups."""

import dataclasses
import inspect
import math

import pytest
import torch

from ssmbench.models.layers.base import ssm_parameter_names
from ssmbench.models.layers.s4 import INITS, S4Layer, S4Options, hippo_legs, nplr_legs, zoh_dense, zoh_diagonal
from ssmbench.models.registry import build_layer


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def run_steps(layer, x):
    state = layer.allocate_cache(x.shape[0], x.shape[1], x.device)
    ys = []
    for t in range(x.shape[1]):
        y_t = layer.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("L", [32, 100])
def test_step_matches_forward(init, L):
    torch.manual_seed(0)
    layer = S4Layer(8, d_state=16, init=init).eval()
    x = torch.randn(2, L, 8)
    with torch.no_grad():
        y = layer(x)
        y_steps, state = run_steps(layer, x)
    assert y.shape == x.shape
    assert rel_err(y_steps, y) < 1e-4
    assert state.is_complex() == (init in ("legs", "lin", "inv"))
    assert state.shape == (2, 8, 8 if init in ("legs", "lin", "inv") else 16)


@pytest.mark.parametrize("init", INITS)
def test_causal(init):
    torch.manual_seed(1)
    layer = S4Layer(8, d_state=16, init=init)
    x = torch.randn(2, 50, 8)
    t = 20
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn(2, 50 - t - 1, 8)
    with torch.no_grad():
        y, y2 = layer(x), layer(x2)
    assert torch.allclose(y[:, : t + 1], y2[:, : t + 1], atol=1e-5)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:], atol=1e-3)


@pytest.mark.parametrize("init", INITS)
def test_kernel_is_recurrent_unroll(init):
    torch.manual_seed(2)
    layer = S4Layer(4, d_state=16, init=init)
    L = 70
    with torch.no_grad():
        K = layer.kernel(L)
        dA, dB, C = layer.recurrent_params()
        h, ref = dB, []
        for _ in range(L):                                 # K_l = Re(C dA^l dB)
            ref.append((C * h).sum(-1).real if h.is_complex() else (C * h).sum(-1))
            h = torch.einsum("hnm,hm->hn", dA, h) if dA.dim() == 3 else dA * h
    assert K.shape == (4, L) and not K.is_complex()
    assert rel_err(K, torch.stack(ref, -1)) < 1e-5


def test_hippo_legs_definition():
    N = 5
    A, B = hippo_legs(N)
    for n in range(N):
        assert B[n] == pytest.approx(math.sqrt(2 * n + 1))
        for k in range(N):
            want = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1) if n > k else -(n + 1) if n == k else 0.0
            assert A[n, k].item() == pytest.approx(want)


@pytest.mark.parametrize("N", [2, 8, 64])
def test_nplr_legs_reconstructs(N):
    A, B = hippo_legs(N)
    Lambda, P, B2, V = nplr_legs(N)
    normal = A + P[:, None] * P[None, :]
    assert torch.allclose(normal @ normal.T, normal.T @ normal, atol=1e-8)        # A + P P^T is normal
    assert torch.allclose(V.conj().T @ V, torch.eye(N, dtype=V.dtype), atol=1e-10)  # V unitary
    assert torch.allclose(Lambda.real, torch.full((N,), -0.5, dtype=torch.float64))
    assert torch.allclose(Lambda[N // 2:], Lambda[: N // 2].conj())
    recon = V @ torch.diag(Lambda) @ V.conj().T - (P[:, None] * P[None, :]).to(V.dtype)
    assert (recon - A).abs().max() < 1e-4 * N
    assert torch.equal(B2, B)


def test_nplr_layer_is_hippo_at_init():
    layer = S4Layer(3, d_state=8, init="nplr")
    A, B, _ = layer.continuous_params()
    A_legs, B_legs = hippo_legs(8)
    assert torch.allclose(A, A_legs.float().expand(3, 8, 8), atol=1e-4)
    assert torch.allclose(B, B_legs.float().expand(3, 8))


def test_zoh_scalar_closed_form():
    a, b, dt = -0.7, 1.3, 0.05
    layer = S4Layer(1, d_state=1, init="real")
    with torch.no_grad():
        layer.log_A_real.fill_(math.log(0.7))
        layer.B.fill_(b)
        layer.log_dt.fill_(math.log(dt))
        dA, dB, _ = layer.recurrent_params()
    assert dA.item() == pytest.approx(math.exp(a * dt), rel=1e-6)
    assert dB.item() == pytest.approx((math.exp(a * dt) - 1) / a * b, rel=1e-5)
    # the dense (augmented-exponential) route agrees with the closed form too
    dA2, dB2 = zoh_dense(torch.tensor([[[a]]], dtype=torch.float64), torch.tensor([[b]], dtype=torch.float64),
                         torch.tensor([dt], dtype=torch.float64))
    assert dA2.item() == pytest.approx(math.exp(a * dt), rel=1e-12)
    assert dB2.item() == pytest.approx((math.exp(a * dt) - 1) / a * b, rel=1e-12)


def test_zoh_dense_matches_diagonal():
    """With P = 0 the NPLR matrix is normal, V diag(Lambda) V^*, so its ZOH is V diag(exp(dt Lambda)) V^*."""
    torch.manual_seed(3)
    Lambda, _, _, V = nplr_legs(8)
    B = torch.randn(2, 8, dtype=torch.float64)
    dt = torch.tensor([0.01, 0.1], dtype=torch.float64)
    A = (V @ torch.diag(Lambda) @ V.conj().T).real.expand(2, 8, 8)
    dA, dB = zoh_dense(A, B, dt)
    dA_d, dB_d = zoh_diagonal(Lambda.expand(2, 8), (B.to(V.dtype) @ V.conj()), dt)   # eigenbasis: V^* B
    assert torch.allclose(dA.to(V.dtype), torch.einsum("nk,hk,mk->hnm", V, dA_d, V.conj()), atol=1e-10)
    assert torch.allclose(dB.to(V.dtype), torch.einsum("nk,hk->hn", V, dB_d), atol=1e-10)


@pytest.mark.parametrize("init", INITS)
def test_gradients_and_ssm_params(init):
    torch.manual_seed(4)
    layer = S4Layer(4, d_state=8, init=init)
    x = torch.randn(2, 40, 4, requires_grad=True)
    layer(x).square().mean().backward()
    names = {n for n, _ in layer.named_parameters()}
    for n, p in layer.named_parameters():
        assert p.dtype == torch.float32, n
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n
    assert torch.isfinite(x.grad).all()
    assert ssm_parameter_names(layer) == names


def test_autocast_bf16_keeps_fp32_math():
    torch.manual_seed(5)
    layer = S4Layer(4, d_state=8, init="legs")
    x = torch.randn(2, 30, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert rel_err(y.float(), layer(x.bfloat16().float())) < 1e-2


def test_registry_and_validation():
    layer = build_layer("s4", 16, {"d_state": 8, "init": "lin"})
    assert isinstance(layer, S4Layer) and layer.init == "lin" and layer.d_state == 8
    assert layer(torch.randn(1, 10, 16)).shape == (1, 10, 16)
    assert layer.lr_ssm == S4Options().lr_ssm
    for make in (lambda: S4Layer(4, init="bogus"), lambda: build_layer("s4", 4, {"init": "bogus"})):
        with pytest.raises(ValueError) as e:
            make()
        assert "init" in str(e.value) and all(i in str(e.value) for i in INITS)
    with pytest.raises(ValueError, match="d_state"):
        S4Layer(4, d_state=7, init="legs")


def test_options_are_the_keyword_arguments():
    kwargs = list(inspect.signature(S4Layer.__init__).parameters)[2:]
    assert kwargs == [f.name for f in dataclasses.fields(S4Options)]
