"""RMSNorm over the last dimension, the plain PyTorch ground truth.

    y = rms_norm_ref(x [..., d], weight [d] or None, eps)
    y = x * rsqrt(mean(x ** 2 over d) + eps) * weight

Matches torch.nn.functional.rms_norm(x, (d,), weight, eps) (checked bit for bit on torch 2.13, CPU): the whole
product is computed in fp32 (fp64 for fp64 x), weight included, and rounded once to x's dtype, whatever the
weight's dtype (an fp32 weight does not promote a bf16 x's output to fp32). eps=None means the machine epsilon
of that compute dtype (fp32's for a bf16 x, as torch does), not of x's dtype.
"""

from __future__ import annotations

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def default_eps(x: torch.Tensor, eps: float | None) -> float:
    return torch.finfo(compute_dtype(x)).eps if eps is None else float(eps)


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float | None = None) -> torch.Tensor:
    ct = compute_dtype(x)
    xf = x.to(ct)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + default_eps(x, eps))
    if weight is not None:
        y = y * weight.to(ct)
    return y.to(x.dtype)
