"""RMSNorm in Triton: forward (saving one fp32 rstd per row) and backward (dx and dweight), with autograd.
Same results as rms_norm_ref: fp32 arithmetic, output in x's dtype, gradients in their inputs' dtypes."""

from __future__ import annotations

from pathlib import Path

import torch

from ..common import triton_util as tu
from .reference import default_eps

_KERNELS = Path(__file__).with_name("triton_rmsnorm_kernels.py")
TILE = 4096  # elements of x a program holds (rows x padded columns); a wider row is one row per program
PROGRAMS_PER_SM = 2  # backward grid: programs per SM (see RMSNormTriton.backward)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _blocks(n_rows: int, d: int) -> tuple[int, int, int]:
    """BLOCK_ROWS, BLOCK_D, num_warps. Short inputs get fewer rows, not a mostly masked tile."""
    bd = tu.next_pow2(d)
    br = max(1, min(TILE // bd, tu.next_pow2(n_rows)))
    return br, bd, 4 if br * bd <= 4096 else 8 if br * bd <= 8192 else 16


def _lastdim_contig(t: torch.Tensor) -> torch.Tensor:
    # any row stride is fine for the kernels (a slice of a wider buffer), the columns must be adjacent
    return t if t.stride(-1) == 1 else t.contiguous()


class RMSNormTriton(torch.autograd.Function):
    """On [n_rows, d] (rms_norm_triton flattens the leading dims). Returns (y, rstd); rstd is an output only so
    that setup_context can save it (the form torch.func needs) and takes no gradient. No vmap rule yet."""

    @staticmethod
    def forward(x, weight, eps):
        n_rows, d = x.shape
        br, bd, warps = _blocks(n_rows, d)
        y = tu.alloc((n_rows, d), x.dtype, x.device)
        rstd = tu.alloc((n_rows,), torch.float32, x.device)
        if n_rows:
            K = tu.load_kernels(_KERNELS)
            K.rmsnorm_fwd_kernel[(-(-n_rows // br),)](
                x, weight if weight is not None else x, y, rstd, n_rows, d, x.stride(0), y.stride(0), eps,
                HAS_WEIGHT=weight is not None, BLOCK_ROWS=br, BLOCK_D=bd, num_warps=warps)
        return y, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _ = inputs
        rstd = output[1]
        ctx.save_for_backward(x, weight, rstd)
        ctx.mark_non_differentiable(rstd)

    @staticmethod
    def backward(ctx, dy, _drstd):
        x, weight, rstd = ctx.saved_tensors
        n_rows, d = x.shape
        dy = _lastdim_contig(dy)  # e.g. the all-zero-stride expand that .sum()'s backward hands over
        has_dw = weight is not None and ctx.needs_input_grad[1]
        br, bd, warps = _blocks(n_rows, d)
        n_blocks = -(-n_rows // br)
        # One wave of programs, each looping over its share of the row blocks (a second wave would idle SMs at
        # the end): at d = 64 the backward compiles to ~130 registers a thread for sm_90 (ptxas, triton 3.9), so
        # 3 programs of 4 warps fit on an SM. Untuned: scripts/bench_rmsnorm.py is where to try others.
        n_prog = max(1, min(n_blocks, PROGRAMS_PER_SM * tu.num_sms(x.device)))
        dx = tu.alloc((n_rows, d), x.dtype, x.device)
        dw = tu.alloc((n_prog, d), torch.float32, x.device) if has_dw else None
        if n_rows:
            K = tu.load_kernels(_KERNELS)
            K.rmsnorm_bwd_kernel[(n_prog,)](
                x, weight if weight is not None else x, dy, rstd, dx, dw if has_dw else dx, n_rows, d, n_blocks,
                x.stride(0), dy.stride(0), dx.stride(0), HAS_WEIGHT=weight is not None, HAS_DW=has_dw,
                BLOCK_ROWS=br, BLOCK_D=bd, num_warps=warps)
        elif has_dw:
            dw.zero_()
        return dx, dw.sum(0).to(weight.dtype) if has_dw else None, None


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float | None = None) -> torch.Tensor:
    """y = x * rsqrt(mean(x ** 2, -1) + eps) * weight for x [..., d] in fp32/bf16/fp16 and weight [d] (any float
    dtype, read as fp32) or None; eps=None is fp32's machine epsilon, as in torch.nn.functional.rms_norm."""
    if x.dtype not in DTYPES:
        raise ValueError(f"rms_norm_triton takes x in {DTYPES} (it computes in fp32), not {x.dtype}")
    d = x.shape[-1]
    if weight is not None:
        if weight.shape != (d,):
            raise ValueError(f"weight must have shape ({d},) to match x {tuple(x.shape)}, not {tuple(weight.shape)}")
        if not weight.is_floating_point() or weight.device != x.device:
            raise ValueError(f"weight must be a floating tensor on {x.device}, not {weight.dtype} on {weight.device}")
        weight = weight.contiguous()
    # reshape is a view whenever the leading dims flatten to one row stride; as autograd ops, dx comes back in
    # x's own shape and layout
    x2 = _lastdim_contig(x.reshape(-1, d))
    y, _ = RMSNormTriton.apply(x2, weight, default_eps(x, eps))
    return y.view(x.shape)
