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

from .backends import BackendUnavailable, resolve_kernel_backend
from .reference import selective_state_update_ref

DECODE_BACKENDS = ("reference", "triton")


def resolve_decode_backend(backend: str, device: torch.device | str) -> str:
    return resolve_kernel_backend("decode", backend, device)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           backend="auto"):
    backend = resolve_decode_backend(backend, x.device)
    if backend == "triton":
        from .triton_decode import selective_state_update_triton
        return selective_state_update_triton(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias,
                                             dt_softplus=dt_softplus)
    return selective_state_update_ref(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
