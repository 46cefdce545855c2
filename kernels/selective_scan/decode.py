"""Decode-step dispatch: `selective_state_update(..., backend=)` over the reference and the Triton kernel.

    y, state = selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                                      backend="auto")

state [batch, dim, N] is advanced by one token in place and returned with y [batch, dim]. Backends:
"reference" (selective_state_update_ref) and "triton" (CUDA, or the CPU interpreter with TRITON_INTERPRET=1);
"auto" takes Triton on CUDA, else the reference. Asking for "triton" where it cannot run raises
BackendUnavailable with the reason.
"""

from __future__ import annotations

import torch

from .backends import resolve_kernel_backend
from .checks import check_step_args
from .reference import state_update_ref_unchecked

DECODE_BACKENDS = ("reference", "triton")


def resolve_decode_backend(backend: str, device: torch.device | str) -> str:
    return resolve_kernel_backend("decode", backend, device)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           backend="auto"):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    backend = resolve_decode_backend(backend, x.device)
    check_step_args(state, x, dt, A, B, C, D, z, dt_bias, backend=backend)
    if backend == "triton":
        from .triton_decode import state_update_triton_unchecked
        return state_update_triton_unchecked(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias,
                                             dt_softplus=dt_softplus)
    return state_update_ref_unchecked(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
