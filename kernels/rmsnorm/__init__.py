"""RMSNorm over the last dimension: reference (torch) and Triton.

    y = rms_norm(x [..., d], weight [d] or None, eps=None, backend="auto" | "reference" | "triton")
    y = x * rsqrt(mean(x ** 2 over d) + eps) * weight, computed in fp32, in x's dtype (as F.rms_norm)

The backends are the rows of RMSNORM_TABLE (table.py): "auto" takes the reference everywhere for now (the Triton
kernel awaits a GPU measurement); asking for "triton" where it cannot run raises BackendUnavailable with the
reason, and an unknown name is a ValueError listing the known ones.
"""

from __future__ import annotations

import torch

from ..common.dispatch import BackendUnavailable
from .reference import rms_norm_ref
from .table import RMSNORM_TABLE


def resolve_rmsnorm_backend(backend: str, device: torch.device | str) -> str:
    return RMSNORM_TABLE.resolve(backend, device)


def rms_norm(x, weight=None, eps=None, backend="auto"):
    return RMSNORM_TABLE.impl(resolve_rmsnorm_backend(backend, x.device))(x, weight, eps)


__all__ = ["BackendUnavailable", "RMSNORM_TABLE", "resolve_rmsnorm_backend", "rms_norm", "rms_norm_ref"]
