"""Random scan inputs in the layout of the paper's kernel benchmark (Figure 8), shared by the profiler and the
kernel scripts so that they all time the same thing."""

from __future__ import annotations

import torch


def paper_scan_inputs(batch: int, dim: int, L: int, N: int = 16, dtype: torch.dtype = torch.bfloat16,
                      gated: bool = True, *, generator: torch.Generator) -> dict:
    """u, delta, z [batch, dim, L] in `dtype`; B, C time-varying [batch, 1, N, L] in `dtype`; A [dim, N] fp32 with
    decays in (e^-2.1dt, e^-0.1dt); D, delta_bias [dim] fp32 (z None when not gated). Drawn in this order from
    `generator`, on its device."""
    dev = generator.device

    def r(*shape):
        return torch.randn(*shape, device=dev, generator=generator)
    return dict(u=r(batch, dim, L).to(dtype), delta=(r(batch, dim, L) * 0.5 - 1).to(dtype),
                A=-(torch.rand(dim, N, device=dev, generator=generator) * 2 + 0.1), B=r(batch, 1, N, L).to(dtype),
                C=r(batch, 1, N, L).to(dtype), D=r(dim), z=r(batch, dim, L).to(dtype) if gated else None,
                delta_bias=r(dim) * 0.3)
