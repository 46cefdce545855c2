"""Triton kernel of one selective-scan decode step (loaded through triton_util.load_kernels)."""

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    dim, N, dims_per_group,
    s_sb, s_sd, s_sn, s_xb, s_xd, s_tb, s_td, s_zb, s_zd, s_yb, s_yd, s_Ad, s_An,
    s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < dim
    mdn = md[:, None] & (offs_n < N)[None, :]
    grp = offs_d // dims_per_group  # a block may straddle groups: gather B, C per row

    sp = state_ptr + b * s_sb + offs_d[:, None] * s_sd + offs_n[None, :] * s_sn
    h = tl.load(sp, mask=mdn, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + b * s_xb + offs_d * s_xd, mask=md, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * s_tb + offs_d * s_td, mask=md, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
    A = tl.load(A_ptr + offs_d[:, None] * s_Ad + offs_n[None, :] * s_An, mask=mdn, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + b * s_Bb + grp[:, None] * s_Bg + offs_n[None, :] * s_Bn, mask=mdn, other=0.0)
    Cv = tl.load(C_ptr + b * s_Cb + grp[:, None] * s_Cg + offs_n[None, :] * s_Cn, mask=mdn, other=0.0)
    h = tl.exp2(dt[:, None] * A * LOG2E) * h + (dt * x)[:, None] * Bv.to(tl.float32)
    y = tl.sum(h * Cv.to(tl.float32), axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + b * s_zb + offs_d * s_zd, mask=md, other=0.0).to(tl.float32)
        y = y * z * tl.sigmoid(z)
    tl.store(sp, h, mask=mdn)
    tl.store(y_ptr + b * s_yb + offs_d * s_yd, y, mask=md)
