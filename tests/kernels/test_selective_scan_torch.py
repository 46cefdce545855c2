"""The chunked PyTorch selective scan against the sequential reference (run in float64), and its dispatch.

Errors are relative, ||out - ref|| / ||ref||, on fresh random inputs of awkward lengths. Sizes stay small so
the reference loop is quick: the whole file runs in a few seconds on two CPU cores.
"""

from __future__ import annotations

import pytest
import torch

from ssmbench.kernels.selective_scan import BackendUnavailable, resolve_backend, selective_scan
from ssmbench.kernels.selective_scan.reference import selective_scan_ref
from ssmbench.kernels.selective_scan.torch_scan import selective_scan_torch

# float32 against the float64 reference: observed ~1e-7 (outputs and gradients, L up to 1000), so 50x margin
TOL32 = 5e-6


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def bc_shape(layout: str, batch: int, dim: int, N: int, L: int) -> tuple[int, ...]:
    return {"fixed": (dim, N), "varying": (batch, N, L), "groups2": (batch, 2, N, L),
            "groups4": (batch, 4, N, L)}[layout]


def make_inputs(batch=2, dim=4, N=4, L=63, layout="varying", C_layout=None, dtype=torch.float32, seed=0,
                D=True, z=True, delta_bias=True, softplus=True, initial_state=True):
    """Random inputs as a dict of leaf tensors (None for the ones left out), in the ranges Mamba sees."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift

    if softplus:  # softplus(delta + bias) lands mostly in [0.05, 1]
        delta = rnd(batch, dim, L, scale=0.5, shift=-1.5)
        bias = rnd(dim, scale=0.3)
    else:  # delta used as given, so keep it (and delta + bias) positive
        delta = torch.rand(batch, dim, L, generator=g, dtype=torch.float64) * 0.5 + 0.05
        bias = torch.rand(dim, generator=g, dtype=torch.float64) * 0.1
    x = {
        "u": rnd(batch, dim, L),
        "delta": delta,
        "A": -torch.exp(rnd(dim, N, scale=0.5)),  # negative real, as -exp(A_log)
        "B": rnd(*bc_shape(layout, batch, dim, N, L)),
        "C": rnd(*bc_shape(C_layout or layout, batch, dim, N, L)),
        "D": rnd(dim) if D else None,
        "z": rnd(batch, dim, L) if z else None,
        "delta_bias": bias if delta_bias else None,
        "initial_state": rnd(batch, dim, N) if initial_state else None,
    }
    # A, D and delta_bias stay fp32 even for bf16 models (as in mamba_ssm); float64 stays float64
    keep = {"A", "D", "delta_bias", "initial_state"}
    for k, v in x.items():
        if v is not None:
            t = dtype if (k not in keep or dtype == torch.float64) else torch.float32
            x[k] = v.to(t).requires_grad_(True)
    return x


def run_both(x, softplus=True, **kw):
    """Run the torch scan on `x` and the reference on float64 copies; backprop the same random cotangents
    through output and last state. Returns (ours, reference) as dicts of y, last_state and input grads."""
    ref_x = {k: (v.detach().double().requires_grad_(True) if v is not None else None) for k, v in x.items()}
    results = []
    for fn, inputs, extra in ((selective_scan_torch, x, kw), (selective_scan_ref, ref_x, {})):
        args = {k: v for k, v in inputs.items()}
        y, last = fn(args.pop("u"), args.pop("delta"), args.pop("A"), args.pop("B"), args.pop("C"),
                     delta_softplus=softplus, return_last_state=True, **args, **extra)
        g = torch.Generator().manual_seed(1)
        gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
        gs = torch.randn(last.shape, generator=g, dtype=torch.float64)
        ((y.double() * gy).sum() + (last.double() * gs).sum()).backward()
        out = {"y": y.detach(), "last_state": last.detach()}
        out.update({f"grad_{k}": v.grad for k, v in inputs.items() if v is not None})
        results.append(out)
    return results


def assert_close(ours, ref, tol, grad_tol=None):
    grad_tol = grad_tol or tol
    assert ours.keys() == ref.keys()
    for k in ref:
        assert ours[k] is not None, f"{k}: no gradient"
        assert torch.isfinite(ours[k].double()).all(), f"{k}: non-finite values"
        err = rel_err(ours[k], ref[k])
        limit = grad_tol if k.startswith("grad_") else tol
        assert err < limit, f"{k}: relative error {err:.2e} >= {limit:.0e}"


@pytest.mark.parametrize("layout", ["fixed", "varying", "groups2"])
@pytest.mark.parametrize("L", [1, 63, 64, 1000])
def test_matches_reference(L, layout):
    x = make_inputs(batch=2, dim=4, N=4, L=L, layout=layout, seed=L)
    ours, ref = run_both(x)
    assert ours["y"].dtype == torch.float32 and ours["y"].shape == (2, 4, L)
    assert ours["last_state"].shape == (2, 4, 4) and ours["last_state"].dtype == torch.float32
    assert_close(ours, ref, tol=TOL32)


@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("options", [
    dict(),
    dict(D=False, z=False, delta_bias=False, initial_state=False),
    dict(D=True, z=False, delta_bias=False, initial_state=False),
    dict(D=False, z=True, delta_bias=True, initial_state=False),
])
def test_optional_inputs(options, softplus):
    x = make_inputs(batch=2, dim=3, N=5, L=63, softplus=softplus, seed=7, **options)
    ours, ref = run_both(x, softplus=softplus)
    assert_close(ours, ref, tol=TOL32)


@pytest.mark.parametrize("inner_scan", ["sequential", "doubling"])
@pytest.mark.parametrize("L,chunk_size", [(63, 10), (100, 7), (64, 1), (17, 64), (1000, 48)])
def test_chunk_sizes_and_inner_scans(L, chunk_size, inner_scan):
    """Chunks that do not divide L (a short last chunk), chunks of one step, a chunk longer than L, and
    the Hillis-Steele inner scan at non-power-of-two chunk lengths."""
    x = make_inputs(batch=2, dim=4, N=4, L=L, layout="groups2", seed=L + chunk_size)
    ours, ref = run_both(x, chunk_size=chunk_size, inner_scan=inner_scan)
    assert_close(ours, ref, tol=TOL32)


@pytest.mark.parametrize("B_layout,C_layout", [("varying", "fixed"), ("fixed", "groups2"),
                                               ("groups4", "fixed"), ("groups4", "groups4")])
def test_mixed_bc_layouts(B_layout, C_layout):
    """A fixed B or C beside a time-varying one of any group count. (Two time-varying ones must agree on their
    group count, [batch, N, L] counting as one: tests/kernels/test_scan_checks.py.)"""
    x = make_inputs(batch=2, dim=8, N=4, L=40, layout=B_layout, C_layout=C_layout, seed=3)
    ours, ref = run_both(x, chunk_size=16)
    assert_close(ours, ref, tol=TOL32)


@pytest.mark.parametrize("layout", ["fixed", "varying", "groups2"])
def test_float64_is_exact(layout):
    """With float64 inputs the arithmetic is float64 too, so the only difference is summation order."""
    x = make_inputs(batch=2, dim=4, N=8, L=200, layout=layout, dtype=torch.float64, seed=11)
    ours, ref = run_both(x, chunk_size=32)
    assert ours["y"].dtype == torch.float64 and ours["last_state"].dtype == torch.float64
    assert_close(ours, ref, tol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["fixed", "varying", "groups2"])
def test_half_precision_inputs(layout, dtype):
    x = make_inputs(batch=2, dim=4, N=4, L=63, layout=layout, dtype=dtype, seed=5)
    ours, ref = run_both(x)
    assert ours["y"].dtype == dtype, "output comes back in u's dtype"
    assert ours["grad_u"].dtype == dtype and ours["grad_A"].dtype == torch.float32
    # Arithmetic is float32; what differs is the rounding of the output and of the cotangent flowing back
    # through it (bf16 eps 7.8e-3). Reductions of rounded cotangents with cancellation (grad_D, grad_delta_bias)
    # come out near 1e-2 for bf16, the rest near 2e-3.
    tol = 3e-2 if dtype == torch.bfloat16 else 3e-3
    assert_close(ours, ref, tol=tol)


def test_extreme_decay_gives_finite_values_and_gradients():
    """delta * A down to -2000 within one step: exp underflows to 0, which is right, and nothing is inf/NaN
    (a formulation through exp(-cumsum(delta * A)) would overflow here)."""
    x = make_inputs(batch=2, dim=4, N=4, L=64, softplus=False, seed=2)
    with torch.no_grad():
        x["delta"].mul_(40.0)
        x["A"].mul_(20.0)
    ours, ref = run_both(x, softplus=False, chunk_size=32)
    assert_close(ours, ref, tol=TOL32)


def test_long_sequence_against_closed_form():
    """L = 2**16 at tiny batch*dim*N: constant delta, u and fixed B, C make an LTI system whose state is a
    geometric sum, h_t = dt*u*B * (1 - a^(t+1)) / (1 - a) with a = exp(dt*A); checks the long loop end to end.
    The decays keep memories short (<= ~100 steps): with a = 1 - 1e-5 any float32 recurrence, the reference's
    too, drifts ~1e-3 from the exact sum (rounding accumulates over the 1 / (1 - a) steps it remembers)."""
    L, dim = 2 ** 16, 2
    u = torch.ones(1, dim, L)
    delta = torch.full((1, dim, L), 0.1)
    A = -torch.tensor([[0.1, 0.5, 2.0], [0.2, 1.0, 4.0]])
    B = torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0]])
    C = torch.tensor([[0.5, 1.0, -1.0], [2.0, -0.5, 1.0]])
    with torch.no_grad():
        y, last = selective_scan_torch(u, delta, A, B, C, return_last_state=True)
    a = torch.exp(0.1 * A.double())  # [dim, N]
    t = torch.arange(L, dtype=torch.float64)
    h = (0.1 * B.double())[..., None] * (1 - a[..., None] ** (t + 1)) / (1 - a[..., None])  # [dim, N, L]
    y_ref = (C.double()[..., None] * h).sum(1)[None]
    assert rel_err(y, y_ref) < 1e-4
    assert rel_err(last, h[None, ..., -1]) < 1e-4


def test_long_sequence_against_reference():
    x = make_inputs(batch=1, dim=2, N=4, L=4097, layout="varying", seed=4)
    with torch.no_grad():
        args = {k: v.detach() for k, v in x.items()}
        y, last = selective_scan_torch(args.pop("u"), args.pop("delta"), args.pop("A"), args.pop("B"),
                                       args.pop("C"), delta_softplus=True, return_last_state=True, **args)
        args = {k: v.detach().double() for k, v in x.items()}
        y_ref, last_ref = selective_scan_ref(args.pop("u"), args.pop("delta"), args.pop("A"), args.pop("B"),
                                             args.pop("C"), delta_softplus=True, return_last_state=True, **args)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(last, last_ref) < 1e-5


def test_empty_sequence():
    x = make_inputs(L=0)
    args = {k: v.detach() for k, v in x.items()}
    y, last = selective_scan_torch(args.pop("u"), args.pop("delta"), args.pop("A"), args.pop("B"), args.pop("C"),
                                   return_last_state=True, **args)
    assert y.shape == (2, 4, 0)
    assert torch.equal(last, x["initial_state"].detach())


def test_bad_arguments():
    x = {k: v.detach() for k, v in make_inputs(L=8).items()}
    pos = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    with pytest.raises(ValueError, match="inner_scan"):
        selective_scan_torch(*pos, inner_scan="blelloch")
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan_torch(*pos, chunk_size=-1)


# dispatch

def _args(L=16):
    x = {k: v.detach() for k, v in make_inputs(L=L, initial_state=False).items() if k != "initial_state"}
    return (x.pop("u"), x.pop("delta"), x.pop("A"), x.pop("B"), x.pop("C")), x


def test_dispatch_torch_backend():
    pos, kw = _args()
    y, last = selective_scan(*pos, **kw, delta_softplus=True, return_last_state=True, backend="torch")
    y_direct, last_direct = selective_scan_torch(*pos, **kw, delta_softplus=True, return_last_state=True)
    assert torch.equal(y, y_direct) and torch.equal(last, last_direct)
    y_ref = selective_scan(*pos, **kw, delta_softplus=True, backend="reference")
    assert rel_err(y, y_ref) < 1e-5


def test_auto_picks_torch_on_cpu():
    assert resolve_backend("auto", "cpu") == "torch"


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    pos, kw = _args()
    with pytest.raises(BackendUnavailable, match="triton") as info:
        selective_scan(*pos, **kw, backend="triton")
    message = str(info.value)
    try:
        import triton  # noqa: F401
    except ImportError:
        assert "not importable" in message
    else:
        assert "CUDA" in message and "TRITON_INTERPRET=1" in message, message


def test_unknown_backend_is_a_value_error():
    pos, kw = _args()
    with pytest.raises(ValueError, match="unknown selective scan backend 'cuda_magic'"):
        selective_scan(*pos, **kw, backend="cuda_magic")


def test_default_chunk_sizes():
    """Short chunks for big batch*dim*N (cache), long ones for small (few chunks over a long sequence)."""
    from ssmbench.kernels.selective_scan.torch_scan import _default_chunk_size
    assert _default_chunk_size("sequential", 32 * 128 * 16, 256) == 8
    assert _default_chunk_size("sequential", 1 * 2 * 3, 2 ** 16) == 256
    assert _default_chunk_size("sequential", 32 * 128 * 16, 5) == 5
    assert _default_chunk_size("doubling", 32 * 128 * 16, 256) == 128
    assert _default_chunk_size("doubling", 8 * 1536 * 16, 2048) == 64
    assert _default_chunk_size("doubling", 64 * 16, 2 ** 16) == 512
