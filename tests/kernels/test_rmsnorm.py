"""RMSNorm: the Triton forward and backward (dx, dweight) against torch.nn.functional.rms_norm and against
rms_norm_ref in float64, and the backend table. CPU: Triton interpreter (TRITON_INTERPRET=1 per test, outputs
NaN-poisoned so an unwritten element fails the comparison). Gradients are of a random cotangent and the weight is
random, so a backward that dropped the weight, or a wrong rstd, shows up (the gradient of .sum() would hide some
of that)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmbench.kernels.common import triton_util as tu
from ssmbench.kernels.rmsnorm import BackendUnavailable, resolve_rmsnorm_backend, rms_norm, rms_norm_ref
from ssmbench.kernels.rmsnorm.triton_rmsnorm import rms_norm_triton

from .triton_testing import CUDA, DEV, gpu, rel_err, triton_mode  # noqa: F401  (triton_mode: autouse)

# torch's warning that a bf16 x with an fp32 weight takes its unfused path (the case the models have)
pytestmark = pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")

# Relative errors (norm-wise) allowed. fp32: rounding only. bf16: x's output and dx are rounded to bf16 (2 ** -9
# relative), torch's own bf16 backward rounds intermediates too; dweight of an fp32 weight is exact-ish either way.
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def make(shape, dtype, w_dtype=torch.float32, weight=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 2 + 0.3).to(dtype)
    w = (1 + 0.5 * torch.randn(shape[-1], generator=g)).to(w_dtype) if weight else None
    gy = torch.randn(shape, generator=g).to(dtype)
    return x.to(DEV), None if w is None else w.to(DEV), gy.to(DEV)


def grads(fn, x, w, gy):
    """y and (dx, dweight) of fn(x, w) for the cotangent gy, on fresh leaves."""
    x = x.detach().clone().requires_grad_()
    w = None if w is None else w.detach().clone().requires_grad_()
    y = fn(x, w)
    leaves = (x,) if w is None else (x, w)
    return (y, *torch.autograd.grad(y, leaves, gy.to(y.dtype)))


def check(x, w, gy, eps=1e-5, tol=None):
    tol = tol or TOL[x.dtype]
    d = x.shape[-1]
    y, *dg = grads(lambda a, b: rms_norm(a, b, eps, backend="triton"), x, w, gy)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert dg[0].dtype == x.dtype and (w is None or dg[1].dtype == w.dtype)
    # float64 truth from the same (rounded) inputs; and torch's own op at x's dtype
    exact = grads(lambda a, b: rms_norm_ref(a, b, eps), x.double(), None if w is None else w.double(), gy.double())
    torch_ = grads(lambda a, b: F.rms_norm(a, (d,), b, eps), x, w, gy)
    names = ("y", "dx", "dweight")
    errs = {f"{n} vs {which}": rel_err(a, b) for which, ref in (("float64", exact), ("F.rms_norm", torch_))
            for n, a, b in zip(names, (y, *dg), ref)}
    bad = {k: v for k, v in errs.items() if not v <= tol}  # `not <=`: a NaN fails too
    assert not bad, f"relative errors over {tol}: {bad}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize("rows", [1, 7, 300])
@pytest.mark.parametrize("d", [64, 96, 128, 1])
def test_matches_torch(d, rows, rank, dtype):
    shape = (rows, d) if rank == 2 else (2, rows, d)
    # At d = 1, dx = eps * w * gy / (x^2 + eps)^1.5 is the difference of two terms of size w * gy * rstd: with a
    # tiny eps, fp32 cancellation alone (torch's too) is a large relative error. A large eps keeps it conditioned.
    check(*make(shape, dtype, seed=d + rows), eps=1.0 if d == 1 else 1e-5)


@pytest.mark.parametrize("eps", [None, 1e-5, 0.5])
def test_eps(eps):
    # x small enough that eps = 0.5 changes every row's scale a lot; None means fp32's epsilon, also for bf16
    for dtype in (torch.float32, torch.bfloat16):
        x, w, gy = make((9, 96), dtype, seed=3)
        check((x.float() * 0.3).to(dtype), w, gy, eps=eps)


def test_weight_dtypes_and_no_weight():
    check(*make((5, 3, 96), torch.bfloat16, w_dtype=torch.bfloat16))  # the fused torch path: same dtypes
    check(*make((5, 40), torch.float16, w_dtype=torch.float16))
    check(*make((5, 40), torch.float16))
    check(*make((6, 96), torch.float32, weight=False))


@pytest.mark.parametrize("d", [3000, 8192])
def test_wide_rows(d):
    # one row per program, the whole row in one tile
    check(*make((3, d), torch.float32, seed=d))


def test_persistent_backward_loop(monkeypatch):
    # Few programs (as on a small GPU), so each adds up the dweight of several row blocks, the last one partial
    monkeypatch.setattr(tu, "num_sms", lambda device: 1)  # 2 programs for the 5 blocks of 64 rows
    check(*make((300, 64), torch.float32, seed=5))
    check(*make((300, 96), torch.bfloat16, seed=6))


def test_non_contiguous_inputs():
    x, _, gy = make((96, 13), torch.float32, seed=7)
    check(x.t(), make((1, 96), torch.float32)[1], gy.t())  # columns not adjacent: copied
    x, w, gy = make((13, 2 * 96), torch.float32, seed=8)
    check(x[:, 1::2], w[:96], gy[:, ::2])  # strided columns
    check(x[:, :96], w[:96], gy[:, 96:])  # a row stride of 2d: read in place
    x, w, gy = make((4, 5, 64), torch.bfloat16, seed=9)
    check(x.transpose(0, 1), w, gy.transpose(0, 1))  # leading dims that do not flatten to one stride
    check(x, w[::1].flip(0), gy)  # a weight view with a negative stride
    # the all-zero-stride cotangent .sum() hands over, and x's gradient in x's own layout
    xt = x.transpose(0, 1).detach().requires_grad_()
    rms_norm(xt, w, 1e-5, backend="triton").float().sum().backward()
    xr = x.transpose(0, 1).detach().double().requires_grad_()
    rms_norm_ref(xr, w.double(), 1e-5).sum().backward()
    assert xt.grad.shape == xt.shape and rel_err(xt.grad, xr.grad) <= TOL[torch.bfloat16]


def test_empty_and_bad_inputs():
    x, w, _ = make((0, 3, 64), torch.float32)
    y, dx, dw = grads(lambda a, b: rms_norm_triton(a, b, 1e-5), x, w, torch.ones(0, 3, 64, device=DEV))
    assert y.shape == dx.shape == x.shape and torch.equal(dw, torch.zeros_like(w))
    with pytest.raises(ValueError, match="float64"):
        rms_norm_triton(x.double(), w)
    with pytest.raises(ValueError, match="shape"):
        rms_norm_triton(x, w[:32])


@pytest.mark.parametrize("dtype, w_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                                            (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32)])
def test_reference_is_torchs_rms_norm(dtype, w_dtype):
    # bit for bit on the CPU (torch 2.13): all in fp32, weight included, one rounding to x's dtype
    x, w, _ = make((50, 96), dtype, w_dtype)
    x, w = x.cpu(), w.cpu()
    for eps in (None, 1e-5):
        y = F.rms_norm(x, (96,), w, eps)
        assert y.dtype == dtype and torch.equal(rms_norm_ref(x, w, eps), y)
    assert torch.equal(rms_norm_ref(x, None, None), F.rms_norm(x, (96,), None, None))
    # and nn.RMSNorm, which the models use
    norm = torch.nn.RMSNorm(96, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(w)
    assert torch.equal(norm.to(w_dtype)(x), rms_norm_ref(x, w, 1e-5))


def test_backend_table(monkeypatch):
    x, w, _ = make((4, 64), torch.float32)
    with pytest.raises(ValueError, match=r"unknown rms norm backend 'apex'.*'auto', 'reference', 'triton'"):
        rms_norm(x, w, backend="apex")
    # "auto" is the reference everywhere, CUDA included, until the Triton kernel is measured on a GPU
    assert resolve_rmsnorm_backend("auto", "cpu") == "reference"
    assert resolve_rmsnorm_backend("auto", "cuda") == "reference"
    assert torch.equal(rms_norm(x.cpu(), w.cpu()), rms_norm_ref(x.cpu(), w.cpu()))
    if not CUDA:
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(BackendUnavailable, match="CUDA"):
            rms_norm(x, w, backend="triton")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("d", [64, 1024])
def test_gpu_rmsnorm(d):
    check(*make((64 * 129, d), torch.float32, seed=d))
    check(*make((4, 1031, d), torch.bfloat16, seed=d))
