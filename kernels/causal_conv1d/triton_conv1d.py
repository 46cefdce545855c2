"""Causal depthwise conv1d in Triton: forward, backward (autograd) and the decode-step update.
Any strides (e.g. a [batch, L, dim] activation viewed as [batch, dim, L]); arithmetic in fp32."""

from __future__ import annotations

from pathlib import Path

import torch

from ..common import triton_util as tu
from ..common.options import option

_KERNELS = Path(__file__).with_name("triton_conv1d_kernels.py")
BLOCK_D, BLOCK_L = 16, 256
# The backward's kernels (SSMBENCH_CONV_BWD, kernels/common/options.py): "two_pass", the default
# (conv_bwd_grad_kernel then conv_bwd_dx_kernel: less recomputation, one fp32 buffer of g more; 0.29 ms less of
# Mamba's graphed Table 1 step on the H200) or "fused" (conv_bwd_kernel, the path until session 9). Both give the
# same numbers (tests/kernels/test_causal_conv1d.py); scripts/bench_conv1d_bwd.py times them.


def _silu_flag(activation):
    if activation in (None, "identity"):
        return False
    if activation in ("silu", "swish"):
        return True
    raise ValueError(f"activation must be None or 'silu', got {activation!r}")


def _blocks(dim, L):
    bd = min(BLOCK_D, tu.next_pow2(dim))
    bl = min(BLOCK_L, max(16, tu.next_pow2(L)))
    return bd, bl


class CausalConv1dTriton(torch.autograd.Function):
    """vmap: the member (vmapped) dimension folds into the channels, as for the scan: the conv is depthwise, so
    k members' channels (and their per-channel weights and biases) concatenate to k * dim channels of one
    launch."""

    @staticmethod
    def forward(x, weight, bias, activation):
        silu = _silu_flag(activation)
        batch, dim, L = x.shape
        W = weight.shape[1]
        bd, bl = _blocks(dim, L)
        nd = -(-dim // bd)
        y = tu.alloc_like(x)  # x's memory order (written through y's strides)
        K = tu.load_kernels(_KERNELS)
        K.conv_fwd_kernel[(batch * nd, -(-L // bl))](
            x, weight, bias if bias is not None else weight, y, dim, L, nd, *x.stride(), *weight.stride(),
            *y.stride(), HAS_BIAS=bias is not None, SILU=silu, W=W, BLOCK_D=bd, BLOCK_L=bl, num_warps=4)
        return y

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, activation = inputs
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = _silu_flag(activation)

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        batch, dim, L = x.shape
        W = weight.shape[1]
        bd, bl = _blocks(dim, L)
        nd, nl = -(-dim // bd), -(-L // bl)
        dx = tu.alloc(x.shape, x.dtype, x.device)
        dw = tu.alloc((batch * nl, dim, W), torch.float32, x.device)
        db = tu.alloc((batch * nl, dim), torch.float32, x.device) if bias is not None else dw
        K = tu.load_kernels(_KERNELS)
        if option("SSMBENCH_CONV_BWD") == "two_pass":
            g = tu.alloc((batch, dim, L), torch.float32, x.device)
            K.conv_bwd_grad_kernel[(batch * nd, nl)](
                x, weight, bias if bias is not None else weight, dy, g, dw, db, dim, L, nd, *x.stride(),
                *weight.stride(), *dy.stride(), HAS_BIAS=bias is not None, SILU=ctx.silu, W=W,
                BLOCK_D=bd, BLOCK_L=bl, num_warps=4)
            K.conv_bwd_dx_kernel[(batch * nd, nl)](
                weight, g, dx, dim, L, nd, *weight.stride(), *dx.stride(), W=W, BLOCK_D=bd, BLOCK_L=bl, num_warps=4)
        else:
            K.conv_bwd_kernel[(batch * nd, nl)](
                x, weight, bias if bias is not None else weight, dy, dx, dw, db, dim, L, nd, *x.stride(),
                *weight.stride(), *dy.stride(), *dx.stride(), HAS_BIAS=bias is not None, SILU=ctx.silu, W=W,
                BLOCK_D=bd, BLOCK_L=bl, num_warps=4)
        dbias = db.sum(0).to(bias.dtype) if bias is not None else None
        return dx, dw.sum(0).to(weight.dtype), dbias, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, activation):
        k = info.batch_size

        def members_first(t, d):
            return t.expand(k, *t.shape) if d is None else t.movedim(d, 0)

        x = members_first(x, in_dims[0])  # [k, batch, dim, L]
        _, batch, dim, L = x.shape
        # Only the folded [batch, k * dim] view is needed: any strides along those (the kernel takes them).
        x = x.transpose(0, 1).reshape(batch, k * dim, L)
        weight = members_first(weight, in_dims[1]).reshape(k * dim, -1)
        bias = None if bias is None else members_first(bias, in_dims[2]).reshape(k * dim)
        y = CausalConv1dTriton.apply(x, weight, bias, activation)
        return y.view(batch, k, dim, L), 1


def causal_conv1d_triton(x, weight, bias=None, activation=None):
    return CausalConv1dTriton.apply(x, weight, bias, activation)


def causal_conv1d_update_triton(x_t, conv_state, weight, bias=None, activation=None):
    silu = _silu_flag(activation)
    batch, dim, S = conv_state.shape
    W = weight.shape[1]
    assert S >= W, f"conv_state holds {S} inputs, fewer than the width {W}"
    bd = min(128, tu.next_pow2(dim))
    y = tu.alloc((batch, dim), x_t.dtype, x_t.device)
    K = tu.load_kernels(_KERNELS)
    K.conv_update_kernel[(batch, -(-dim // bd))](
        x_t, conv_state, weight, bias if bias is not None else weight, y, dim, *x_t.stride(), *conv_state.stride(),
        *weight.stride(), *y.stride(), HAS_BIAS=bias is not None, SILU=silu, W=W, S=S, BLOCK_D=bd, num_warps=4)
    return y
