"""Selective scan (S6): one functional op, several backends with one signature.

    y = selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, backend="auto")

Backends: "reference" (sequential loop, ground truth), "torch" (chunked parallel scan, any device), "triton"
(fused kernels, CUDA or TRITON_INTERPRET=1), "mamba_ssm" (official CUDA kernel, when importable). "auto" picks
the fastest one that can run on the inputs' device. The backends are the rows of SCAN_TABLE (table.py), those of
the decode step the rows of DECODE_TABLE. Asking for a backend that cannot run raises
BackendUnavailable with the reason; nothing falls back silently. Every entry (this dispatcher, each backend's own
function, the decode step) checks its arguments the same way first (checks.py): a wrong shape, group count,
length or dtype is a ValueError naming the argument and both shapes, never a silent slice or cast.
"""

from __future__ import annotations

from ..common import triton_util  # its old home: `from ssmbench.kernels.selective_scan import triton_util`
from .backends import BackendUnavailable, available_backends, resolve_backend, selective_scan
from .decode import selective_state_update
from .reference import selective_scan_ref, selective_state_update_ref
from .table import DECODE_TABLE, SCAN_TABLE


def __getattr__(name: str):
    if name == "BACKENDS":  # the table's names now (a row added at run time included)
        return SCAN_TABLE.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "DECODE_TABLE",
    "SCAN_TABLE",
    "available_backends",
    "resolve_backend",
    "selective_scan",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_ref",
    "triton_util",
]
