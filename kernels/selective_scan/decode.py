"""Decode-step dispatch: `selective_state_update(..., backend=)` over the reference and the Triton kernel.

    y, state = selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                                      backend="auto")

state [batch, dim, N] is advanced by one token in place and returned with y [batch, dim]. Backends:
"reference" (selective_state_update_ref) and "triton" (CUDA, or the CPU interpreter with TRITON_INTERPRET=1), the
rows of DECODE_TABLE (table.py); "auto" takes Triton on CUDA, else the reference. Asking for "triton" where it
cannot run raises BackendUnavailable with the reason.
"""

from __future__ import annotations

import torch

from .checks import check_step_args
from .table import DECODE_TABLE


def __getattr__(name: str):
    if name == "DECODE_BACKENDS":  # the table's names now (a row added at run time included)
        return DECODE_TABLE.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_decode_backend(backend: str, device: torch.device | str) -> str:
    return DECODE_TABLE.resolve(backend, device)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           backend="auto"):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    backend = resolve_decode_backend(backend, x.device)
    check_step_args(state, x, dt, A, B, C, D, z, dt_bias, backend=backend)
    return DECODE_TABLE.impl(backend)(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
