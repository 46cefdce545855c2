"""The selective scan as a plain sequential loop: the ground truth every other backend is tested against.

Same signature and layouts as mamba_ssm's `selective_scan_fn` (real A only):
    u, delta, z: [batch, dim, L]        A: [dim, N]        D, delta_bias: [dim]
    B, C: [dim, N] (fixed, LTI-style), [batch, N, L] or [batch, groups, N, L] (input-dependent)
The state recurrence, per (batch, dim, n):
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,    y_t = <C_t, h_t> + D * u_t,    out = y * silu(z)
Arithmetic is done in float32, or float64 when any input is float64 (tests use that as the reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_scan_args, check_step_args


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def expand_bc(X: torch.Tensor, batch: int, dim: int, L: int) -> torch.Tensor:
    """B or C in any accepted layout -> [batch, dim, N, L] (a view where possible)."""
    if X.dim() == 2:  # [dim, N]: the same at every step
        return X[None, :, :, None].expand(batch, dim, X.shape[1], L)
    if X.dim() == 3:  # [batch, N, L]: shared by all channels
        return X[:, None].expand(batch, dim, X.shape[1], L)
    groups = X.shape[1]  # [batch, groups, N, L]: channel d uses group d // (dim // groups)
    return X.repeat_interleave(dim // groups, dim=1)


def prepare_delta(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool,
                  dtype: torch.dtype) -> torch.Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        # delta is [batch, dim, L] for the scan and [batch, dim] for a decode step; the bias is per channel.
        bias = delta_bias.to(dtype)
        delta = delta + (bias[:, None] if delta.dim() == 3 else bias)
    return F.softplus(delta) if delta_softplus else delta


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, initial_state=None):
    check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state, backend="reference")
    return scan_ref_unchecked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)


def scan_ref_unchecked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, initial_state=None):
    """selective_scan_ref without the argument check (for callers that have just made it)."""
    dtype_out = u.dtype
    ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, L = u.shape
    uc = u.to(ct)
    dt = prepare_delta(delta, delta_bias, delta_softplus, ct)
    A = A.to(ct)
    Bx = expand_bc(B.to(ct), batch, dim, L)
    Cx = expand_bc(C.to(ct), batch, dim, L)
    h = (torch.zeros(batch, dim, A.shape[1], dtype=ct, device=u.device) if initial_state is None
         else initial_state.to(ct))
    ys = []
    for t in range(L):
        dA = torch.exp(dt[:, :, t, None] * A)  # [batch, dim, N]
        h = dA * h + (dt[:, :, t] * uc[:, :, t])[..., None] * Bx[..., t]
        ys.append((h * Cx[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else uc.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + uc * D.to(ct)[:, None]
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_out)
    return (y, h) if return_last_state else y


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decode step. state: [batch, dim, N] (updated in place and returned); x, dt, z: [batch, dim];
    B, C: [batch, N] or [batch, groups, N]. Returns (y [batch, dim], state)."""
    check_step_args(state, x, dt, A, B, C, D, z, dt_bias, backend="reference")
    return state_update_ref_unchecked(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


def state_update_ref_unchecked(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """selective_state_update_ref without the argument check (for callers that have just made it)."""
    ct = compute_dtype(state, x, dt, A, B, C)
    batch, dim = x.shape
    dt = prepare_delta(dt, dt_bias, dt_softplus, ct)
    A = A.to(ct)
    if B.dim() == 2:
        B, C = B[:, None], C[:, None]
    groups = B.shape[1]
    Bx = B.to(ct).repeat_interleave(dim // groups, dim=1)  # [batch, dim, N]
    Cx = C.to(ct).repeat_interleave(dim // groups, dim=1)
    h = torch.exp(dt[..., None] * A) * state.to(ct) + (dt * x.to(ct))[..., None] * Bx
    y = (h * Cx).sum(-1)
    if D is not None:
        y = y + x.to(ct) * D.to(ct)
    if z is not None:
        y = y * F.silu(z.to(ct))
    state.copy_(h.to(state.dtype))
    return y.to(x.dtype), state
