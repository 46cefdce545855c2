"""Causal depthwise conv1d: Triton forward/backward and decode update against the F.conv1d reference (float64).
CPU: Triton interpreter (TRITON_INTERPRET=1 per test); GPU: `pytest -m gpu` runs the full-size variants."""

from __future__ import annotations

import pytest
import torch

from ssmbench.kernels.causal_conv1d import BackendUnavailable, causal_conv1d_fn, causal_conv1d_ref, causal_conv1d_update

from .triton_testing import CUDA, DEV, gpu, rel_err, triton_mode  # noqa: F401  (triton_mode: autouse)


@pytest.fixture(autouse=True, params=["fused", "two_pass"])
def bwd_mode(request, monkeypatch):
    """Every test under both backward paths of the Triton conv (kernels/causal_conv1d/triton_conv1d.py)."""
    monkeypatch.setenv("SSMBENCH_CONV_BWD", request.param)
    return request.param


def check_conv(batch, dim, L, W, activation, bias=True, dtype=torch.float32, tol=1e-5, channel_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if channel_last:  # [batch, L, dim] memory viewed as [batch, dim, L], as Mamba's in_proj produces it
        x = torch.randn(batch, L, dim, generator=g).transpose(1, 2)
    else:
        x = torch.randn(batch, dim, L, generator=g)
    w = torch.randn(dim, W, generator=g) / W
    b = torch.randn(dim, generator=g) if bias else None
    ins = [t.to(DEV) if t is not None else None for t in (x.to(dtype), w, b)]
    fast = [t.clone().requires_grad_() if t is not None else None for t in ins]
    if channel_last:
        fast[0] = ins[0].detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    ref = [t.double().clone().requires_grad_() if t is not None else None for t in ins]
    y = causal_conv1d_fn(*fast, activation=activation, backend="triton")
    yr = causal_conv1d_ref(*ref, activation=activation)
    assert y.dtype == dtype
    gy = torch.randn(y.shape, generator=g).to(y)
    (y * gy).sum().backward()
    (yr * gy.double()).sum().backward()
    errs = {"y": rel_err(y, yr)}
    for name, a, r in zip(("x", "weight", "bias"), fast, ref):
        if a is not None:
            errs["d" + name] = rel_err(a.grad, r.grad)
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"relative errors over {tol}: {bad}"


@pytest.mark.parametrize("W", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_conv_widths(W, activation):
    check_conv(2, 5, 37, W, activation, seed=W)


@pytest.mark.parametrize("L", [1, 3, 300])
def test_conv_lengths(L):
    check_conv(1, 17, L, 4, "silu", seed=L)


def test_conv_no_bias_channel_last_half():
    check_conv(2, 6, 40, 4, "silu", bias=False, channel_last=True, seed=1)
    check_conv(1, 4, 33, 3, None, dtype=torch.bfloat16, tol=1e-2, seed=2)


def test_output_keeps_a_channel_first_memory_order():
    # x as a [B, E, L] view of an [E, B, L] buffer (the Mamba block's channel-major layout): y comes back in
    # the same order, so the next GEMM reads it as [E, B * L] without a copy, and equals the reference
    from ssmbench.kernels.causal_conv1d.triton_conv1d import causal_conv1d_triton
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 2, 40, generator=g).to(DEV).transpose(0, 1)  # [B=2, E=5, L=40], strides (40, 80, 1)
    w, b = torch.randn(5, 4, generator=g).to(DEV), torch.randn(5, generator=g).to(DEV)
    y = causal_conv1d_triton(x, w, b, "silu")
    assert y.stride() == x.stride()
    assert rel_err(y, causal_conv1d_ref(x.double(), w.double(), b.double(), "silu")) <= 1e-5


@pytest.mark.parametrize("W,state_len", [(4, 4), (2, 2), (3, 5)])
def test_update_matches_full_conv(W, state_len):
    g = torch.Generator().manual_seed(W)
    batch, dim, L = 2, 6, 9
    x = torch.randn(batch, dim, L, generator=g).to(DEV)
    w = torch.randn(dim, W, generator=g).to(DEV)
    b = torch.randn(dim, generator=g).to(DEV)
    full = causal_conv1d_ref(x.double(), w.double(), b.double(), "silu")
    state = torch.full((batch, dim, state_len), float("nan"), device=DEV)
    state.zero_()
    ys = [causal_conv1d_update(x[:, :, t], state, w, b, "silu", backend="triton") for t in range(L)]
    assert rel_err(torch.stack(ys, -1), full) < 1e-5
    torch.testing.assert_close(state, x[:, :, L - state_len:])


def test_backend_errors(monkeypatch):
    x, w = torch.randn(1, 2, 5), torch.randn(2, 4)
    assert causal_conv1d_fn(x, w, backend="auto").shape == x.shape  # reference on CPU
    with pytest.raises(ValueError, match="unknown"):
        causal_conv1d_fn(x, w, backend="cudnn")
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d_fn(x, w, activation="relu", backend="reference")
    if not CUDA:
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(BackendUnavailable, match="CUDA"):
            causal_conv1d_fn(x, w, backend="triton")
        with pytest.raises(BackendUnavailable, match="CUDA"):
            causal_conv1d_update(x[:, :, 0], torch.zeros(1, 2, 4), w, backend="triton")


@pytest.mark.parametrize("bias, activation", [(True, "silu"), (False, None)])
def test_both_backward_paths_give_the_same_numbers(monkeypatch, bwd_mode, bias, activation):
    # The two-pass backward does the fused one's fp32 arithmetic in the same order on the same tiles: not just
    # close, equal in the interpreter (so switching between them does not change a run).
    if bwd_mode != "fused":
        pytest.skip("one comparison of the two is enough")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 20, 300, generator=g).to(DEV)
    w, b = (torch.randn(20, 4, generator=g) / 4).to(DEV), torch.randn(20, generator=g).to(DEV) if bias else None
    gy = torch.randn(2, 20, 300, generator=g).to(DEV)
    grads = {}
    for mode in ("fused", "two_pass"):
        monkeypatch.setenv("SSMBENCH_CONV_BWD", mode)
        leaves = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
        y = causal_conv1d_fn(*leaves, *([None] if b is None else []), activation=activation, backend="triton")
        grads[mode] = torch.autograd.grad((y * gy).sum(), leaves)
    for a, c in zip(grads["fused"], grads["two_pass"]):
        # the interpreter runs the same numpy arithmetic: equal; a GPU compiler may contract multiply-adds
        # differently in two different kernels: within fp32 rounding
        assert torch.equal(a, c) if not CUDA else rel_err(c, a) <= 1e-6
    monkeypatch.setenv("SSMBENCH_CONV_BWD", "three_pass")
    with pytest.raises(ValueError, match="SSMBENCH_CONV_BWD='three_pass' is not one of"):
        y = causal_conv1d_fn(x.clone().requires_grad_(), w, b, activation=activation, backend="triton")
        y.sum().backward()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("W", [2, 3, 4])
@pytest.mark.parametrize("L", [1, 1000, 4097])
def test_gpu_conv(W, L):
    check_conv(4, 1536, L, W, "silu", seed=L + W)
    check_conv(2, 100, L, W, None, channel_last=True, dtype=torch.bfloat16, tol=1e-2, seed=W)
