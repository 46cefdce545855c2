"""One decode step of the selective scan in Triton: the state advances by one token in place.

    y, state = selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                                             dt_softplus=False)

state [batch, dim, N] (any float dtype; updated in place, arithmetic in fp32); x, dt, z [batch, dim];
A [dim, N]; B, C [batch, N] or [batch, groups, N]; D, dt_bias [dim]. Same contract as
reference.selective_state_update_ref: returns (y [batch, dim] in x's dtype, state).
"""

from __future__ import annotations

from pathlib import Path

from ..common import triton_util as tu
from .checks import check_step_args

_KERNELS = Path(__file__).with_name("triton_decode_kernels.py")


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    check_step_args(state, x, dt, A, B, C, D, z, dt_bias, backend="triton")
    return state_update_triton_unchecked(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


def state_update_triton_unchecked(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """selective_state_update_triton without the argument check (for callers that have just made it)."""
    batch, dim, N = state.shape
    if B.dim() == 2:
        B, C = B[:, None], C[:, None]
    groups = B.shape[1]
    assert dim % groups == 0 and C.shape[1] == groups, "B and C need the same number of groups, dividing dim"
    y = tu.alloc((batch, dim), x.dtype, x.device)
    bd = min(64, tu.next_pow2(dim))
    bn = max(2, tu.next_pow2(N))
    zz = z if z is not None else x
    K = tu.load_kernels(_KERNELS)
    K.state_update_kernel[(batch, -(-dim // bd))](
        state, x, dt, A, B, C, D if D is not None else A, zz, dt_bias if dt_bias is not None else A, y,
        dim, N, dim // groups,
        *state.stride(), *x.stride(), *dt.stride(), *zz.stride(), *y.stride(), *A.stride(),
        *B.stride(), *C.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus,
        BLOCK_D=bd, BLOCK_N=bn, num_warps=4)
    return y, state
