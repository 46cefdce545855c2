"""Argument checks shared by every selective-scan backend and by the decode step.

    check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state=None, backend="...")
    check_step_args(state, x, dt, A, B, C, D, z, dt_bias, backend="...")

Called at the top of the public dispatchers (`selective_scan`, `selective_state_update`) and of every backend
entry that can be called directly (selective_scan_ref / _torch / _triton, selective_state_update_ref / _triton),
so that all of them accept exactly the same inputs and none of them slices, broadcasts or casts its way past a
mistake. The dispatchers then call the backends' bodies (`*_unchecked`), so each call is checked once. A mistake
is a ValueError that
names the argument and both shapes, e.g. "B has L=70 time steps but u has L=64 (B: [2, 1, 16, 70], u: [2, 8,
64])"; an argument that is not a tensor at all is a TypeError.

What is accepted (the layouts of mamba_ssm's selective_scan_fn, real A only):
    u, delta, z    [batch, dim, L]        A  [dim, N], real        D, delta_bias  [dim]
    B, C           [dim, N] (fixed), [batch, N, L] (one group) or [batch, groups, N, L]; groups divides dim,
                   and when B and C both vary over time their group counts agree ([batch, N, L] counts as 1)
    initial_state  [batch, dim, N] (reference and torch backends)
All tensors on u's device, all real floating point (float16, bfloat16, float32, float64); complex A is an error,
not a cast that drops its imaginary part. The Triton kernels compute in float32, so they refuse float64 instead
of rounding it silently (the reference and torch backends compute in float64 when an input is float64).

Only host-side metadata is read (shape, dtype, device): no device reads and no .item(), so the checks are safe
inside CUDA-graph capture and cost a few microseconds a call.
"""

from __future__ import annotations

import torch

from .table import DECODE_TABLE, SCAN_TABLE

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOATS_NO64 = (torch.float16, torch.bfloat16, torch.float32)


def _floats(table, backend) -> tuple:
    """The float dtypes `backend` takes: no float64 for the rows whose kernels compute in float32 whatever they
    are given (`fp32_only`; mamba_ssm refuses float64 itself)."""
    row = table.rows.get(backend)
    return _FLOATS_NO64 if row is not None and row.fp32_only else _FLOATS


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _fail(msg: str):
    raise ValueError(msg)


def _tensor(name: str, t, optional: bool = False) -> bool:
    """False for an absent optional argument; TypeError for anything that is not a tensor."""
    if t is None:
        if optional:
            return False
        raise TypeError(f"{name} is required, got None")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return True


def _dtype(name: str, t: torch.Tensor, floats: tuple, backend: str | None):
    if t.dtype in floats:
        return
    if t.dtype.is_complex:
        _fail(f"{name} is complex ({t.dtype}); the selective scan takes real tensors only (A real [dim, N]), and "
              f"a cast would drop the imaginary part")
    if t.dtype == torch.float64:  # a float type this backend does not compute in
        _fail(f"{name} is float64 but the {backend} backend computes in float32 and would round it; pass "
              f"float32/bfloat16/float16, or use backend 'reference' or 'torch' for float64")
    _fail(f"{name} has dtype {t.dtype}; expected a floating-point tensor ({', '.join(str(f) for f in floats)})")


def _device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor):
    if t.device != ref.device:
        _fail(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def _input(name: str, t, floats: tuple, backend: str | None, ref_name: str, ref: torch.Tensor,
           optional: bool = False) -> bool:
    """A tensor argument's own checks, in order: a tensor (or None when optional), a float dtype the backend takes,
    on the device of `ref`. False when an optional argument is absent."""
    if not _tensor(name, t, optional=optional):
        return False
    _dtype(name, t, floats, backend)
    _device(name, t, ref_name, ref)
    return True


def _like(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor, axes: tuple[str, ...]):
    """t must have ref's shape; the axes are named for the message."""
    if t.dim() != ref.dim():
        _fail(f"{name} must be [{', '.join(axes)}] like {ref_name} but has {t.dim()} dimensions "
              f"({name}: {_shape(t)}, {ref_name}: {_shape(ref)})")
    for i, ax in enumerate(axes):
        if t.shape[i] != ref.shape[i]:
            what = f"L={t.shape[i]} time steps" if ax == "L" else f"{ax}={t.shape[i]}"
            ref_what = f"L={ref.shape[i]}" if ax == "L" else f"{ax}={ref.shape[i]}"
            _fail(f"{name} has {what} but {ref_name} has {ref_what} ({name}: {_shape(t)}, {ref_name}: "
                  f"{_shape(ref)})")


def _per_channel(name: str, t: torch.Tensor, dim: int, ref_name: str, ref: torch.Tensor):
    if t.dim() != 1 or t.shape[0] != dim:
        _fail(f"{name} must be [dim] = [{dim}] (one value per channel of {ref_name}) but has shape {_shape(t)} "
              f"({ref_name}: {_shape(ref)})")


def _check_A(A: torch.Tensor, dim: int, ref_name: str, ref: torch.Tensor, floats, backend) -> int:
    _dtype("A", A, floats, backend)
    if A.dim() != 2:
        _fail(f"A must be [dim, N] but has shape {_shape(A)} ({ref_name}: {_shape(ref)})")
    if A.shape[0] != dim:
        _fail(f"A has dim={A.shape[0]} channels but {ref_name} has dim={dim} (A: {_shape(A)}, {ref_name}: "
              f"{_shape(ref)})")
    return A.shape[1]


def _groups_agree(B_groups: int | None, C_groups: int | None, B: torch.Tensor, C: torch.Tensor):
    if B_groups is not None and C_groups is not None and B_groups != C_groups:
        _fail(f"B has {B_groups} group(s) but C has {C_groups}; time-varying B and C must have the same number "
              f"of groups (B: {_shape(B)}, C: {_shape(C)})")


def _varying_bc(name: str, X: torch.Tensor, batch: int, dim: int, N: int, n_axis: int, groups: int,
                ref_name: str, ref: torch.Tensor, A: torch.Tensor) -> int:
    """What a time-varying B/C must satisfy in the scan and in one decode step alike: the batch of its reference
    input, A's N along `n_axis`, and a group count that divides dim. Returns the group count."""
    if X.shape[0] != batch:
        _fail(f"{name} has batch={X.shape[0]} but {ref_name} has batch={batch} ({name}: {_shape(X)}, "
              f"{ref_name}: {_shape(ref)})")
    if X.shape[n_axis] != N:
        _fail(f"{name} has N={X.shape[n_axis]} states but A has N={N} ({name}: {_shape(X)}, A: {_shape(A)})")
    if groups < 1 or dim % groups:
        _fail(f"{name} has {groups} groups, which does not divide dim={dim} ({name}: {_shape(X)}, "
              f"{ref_name}: {_shape(ref)})")
    return groups


def _scan_bc(name: str, X: torch.Tensor, batch: int, dim: int, L: int, N: int, u: torch.Tensor,
             A: torch.Tensor) -> int | None:
    """One of B/C of the scan. Returns its group count (None when fixed over time)."""
    if X.dim() == 2:  # [dim, N]
        if X.shape[0] != dim:
            _fail(f"{name} fixed over time must be [dim, N] = [{dim}, {N}] but has dim={X.shape[0]} "
                  f"({name}: {_shape(X)}, u: {_shape(u)})")
        if X.shape[1] != N:
            _fail(f"{name} has N={X.shape[1]} states but A has N={N} ({name}: {_shape(X)}, A: {_shape(A)})")
        return None
    if X.dim() not in (3, 4):
        _fail(f"{name} must be [dim, N], [batch, N, L] or [batch, groups, N, L] but has shape {_shape(X)} "
              f"(u: {_shape(u)}, A: {_shape(A)})")
    if X.shape[-1] != L:
        _fail(f"{name} has L={X.shape[-1]} time steps but u has L={L} ({name}: {_shape(X)}, u: {_shape(u)})")
    return _varying_bc(name, X, batch, dim, N, -2, X.shape[1] if X.dim() == 4 else 1, "u", u, A)


def check_scan_args(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None, *,
                    backend: str = "reference") -> None:
    """Raise (ValueError; TypeError for a non-tensor) unless the arguments form one valid selective scan for
    `backend` (see the module docstring). Reads shapes, dtypes and devices only."""
    floats = _floats(SCAN_TABLE, backend)
    _tensor("u", u)
    _dtype("u", u, floats, backend)
    if u.dim() != 3:
        _fail(f"u must be [batch, dim, L] but has shape {_shape(u)}")
    batch, dim, L = u.shape
    axes = ("batch", "dim", "L")
    for name, t in (("delta", delta), ("z", z)):
        if _input(name, t, floats, backend, "u", u, optional=name == "z"):
            _like(name, t, "u", u, axes)
    _tensor("A", A)
    _device("A", A, "u", u)
    N = _check_A(A, dim, "u", u, floats, backend)
    groups = {}
    for name, X in (("B", B), ("C", C)):
        _input(name, X, floats, backend, "u", u)
        groups[name] = _scan_bc(name, X, batch, dim, L, N, u, A)
    _groups_agree(groups["B"], groups["C"], B, C)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if _input(name, t, floats, backend, "u", u, optional=True):
            _per_channel(name, t, dim, "u", u)
    if _input("initial_state", initial_state, floats, backend, "u", u, optional=True):
        if tuple(initial_state.shape) != (batch, dim, N):
            _fail(f"initial_state must be [batch, dim, N] = [{batch}, {dim}, {N}] but has shape "
                  f"{_shape(initial_state)} (u: {_shape(u)}, A: {_shape(A)})")


def check_step_args(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, *, backend: str = "reference") -> None:
    """The same for one decode step: state [batch, dim, N]; x, dt, z [batch, dim]; A [dim, N]; B, C [batch, N]
    or [batch, groups, N] (groups dividing dim, the same for B and C); D, dt_bias [dim]."""
    floats = _floats(DECODE_TABLE, backend)
    _tensor("x", x)
    _dtype("x", x, floats, backend)
    if x.dim() != 2:
        _fail(f"x must be [batch, dim] (one token) but has shape {_shape(x)}")
    batch, dim = x.shape
    for name, t in (("dt", dt), ("z", z)):
        if _input(name, t, floats, backend, "x", x, optional=name == "z"):
            _like(name, t, "x", x, ("batch", "dim"))
    _tensor("A", A)
    _device("A", A, "x", x)
    N = _check_A(A, dim, "x", x, floats, backend)
    _input("state", state, floats, backend, "x", x)
    if tuple(state.shape) != (batch, dim, N):
        _fail(f"state must be [batch, dim, N] = [{batch}, {dim}, {N}] but has shape {_shape(state)} "
              f"(x: {_shape(x)}, A: {_shape(A)})")
    groups = {}
    for name, X in (("B", B), ("C", C)):
        _input(name, X, floats, backend, "x", x)
        if X.dim() not in (2, 3):
            _fail(f"{name} must be [batch, N] or [batch, groups, N] for one step but has shape {_shape(X)} "
                  f"(x: {_shape(x)})")
        groups[name] = _varying_bc(name, X, batch, dim, N, -1, X.shape[1] if X.dim() == 3 else 1, "x", x, A)
    _groups_agree(groups["B"], groups["C"], B, C)
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if _input(name, t, floats, backend, "x", x, optional=True):
            _per_channel(name, t, dim, "x", x)
