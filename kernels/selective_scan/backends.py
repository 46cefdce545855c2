"""Dispatch for the selective scan: `selective_scan(..., backend=)` over the rows of SCAN_TABLE (table.py)."""

from __future__ import annotations

import torch

from ..common.dispatch import BackendUnavailable
from .checks import check_scan_args
from .table import SCAN_TABLE

__all__ = ["BackendUnavailable", "SCAN_TABLE", "available_backends", "resolve_backend", "selective_scan",
           "unavailable_reason"]


def unavailable_reason(backend: str, device: torch.device | str) -> str | None:
    """None if `backend` can run on `device`, else a sentence saying why not."""
    return SCAN_TABLE.unavailable_reason(backend, device)


def available_backends(device: torch.device | str) -> list[str]:
    return SCAN_TABLE.available(device)


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """Turn "auto" into a concrete backend for `device`; check that an explicit one can run."""
    return SCAN_TABLE.resolve(backend, device)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
    backend = resolve_backend(backend, u.device)
    check_scan_args(u, delta, A, B, C, D, z, delta_bias, backend=backend)  # once, here, for every backend
    # the backend's body, minus the argument check just made
    return SCAN_TABLE.impl(backend)(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                    delta_softplus=delta_softplus, return_last_state=return_last_state)
