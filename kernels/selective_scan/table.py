"""The backends of the selective scan and of its decode step: one table each, one row per backend.

The dispatchers (`selective_scan` in backends.py, `selective_state_update` in decode.py), the argument checks
(checks.py: `fp32_only`), the S6 layer (its `scan_backend` choices and decode backend), the Mamba block (its conv
backend) and the profiler (ssmbench/perf/kernels.py) all read these tables. A new scan backend is its file (the
function, plus a `*_unchecked` body the dispatcher calls after checking the arguments once) and a row in SCAN_TABLE;
see kernels/common/dispatch.py for the fields.
"""

from __future__ import annotations

import importlib

import torch

from ..common.dispatch import Backend, BackendTable, triton_reason


def _mamba_ssm_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"inputs are on {device.type}; mamba_ssm's kernel needs a CUDA device"
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except Exception as e:  # ImportError, or a CUDA extension that fails to load
        return f"mamba_ssm is not importable ({type(e).__name__}: {e})"
    return None


# "auto": on CUDA the fused kernels win; elsewhere the chunked torch scan does (the interpreter is for tests).
SCAN_TABLE = BackendTable("selective scan", __package__, {
    "reference": Backend(".reference:scan_ref_unchecked", step="reference", profile_rank=130),
    "torch": Backend(".torch_scan:scan_torch_unchecked", auto={"cuda": 2, "*": 0}, step="reference",
                     profile_rank=90),
    "triton": Backend(".triton_scan:scan_triton_unchecked", triton_reason, auto={"cuda": 0}, fp32_only=True,
                      step="triton", profile_rank=10),
    "mamba_ssm": Backend("mamba_ssm.ops.selective_scan_interface:selective_scan_fn", _mamba_ssm_reason,
                         auto={"cuda": 1}, fp32_only=True, profile_rank=20, version_of="mamba_ssm"),
})

# "auto": Triton on CUDA, the reference elsewhere.
DECODE_TABLE = BackendTable("decode", __package__, {
    "reference": Backend(".reference:state_update_ref_unchecked", auto={"cuda": 1, "*": 0}),
    "triton": Backend(".triton_decode:state_update_triton_unchecked", triton_reason, auto={"cuda": 0},
                      fp32_only=True),
})
