"""Triton kernels of the causal depthwise conv1d (loaded through common.triton_util.load_kernels).
Tiles are [BLOCK_D channels, BLOCK_L steps]; the W shifted views of x are separate (cached) loads."""

import triton
import triton.language as tl


@triton.jit
def _preact(x_ptr, w_ptr, bias_ptr, b64, offs_d, t, md, L, s_xb, s_xd, s_xl, s_wd, s_wk,
            HAS_BIAS: tl.constexpr, W: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    if HAS_BIAS:
        acc = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)[:, None] + \
            tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for k in tl.static_range(W):
        wk = tl.load(w_ptr + offs_d * s_wd + k * s_wk, mask=md, other=0.0).to(tl.float32)
        tk = t - (W - 1) + k
        xk = tl.load(x_ptr + b64 * s_xb + offs_d[:, None] * s_xd + tk[None, :] * s_xl,
                     mask=md[:, None] & ((tk >= 0) & (tk < L))[None, :], other=0.0).to(tl.float32)
        acc += wk[:, None] * xk
    return acc


@triton.jit
def conv_fwd_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, dim, L, n_dblocks,
                    s_xb, s_xd, s_xl, s_wd, s_wk, s_yb, s_yd, s_yl,
                    HAS_BIAS: tl.constexpr, SILU: tl.constexpr, W: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid = tl.program_id(0)
    b64 = (pid // n_dblocks).to(tl.int64)
    offs_d = (pid % n_dblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    md = offs_d < dim
    y = _preact(x_ptr, w_ptr, bias_ptr, b64, offs_d, t, md, L, s_xb, s_xd, s_xl, s_wd, s_wk,
                HAS_BIAS, W, BLOCK_D, BLOCK_L)
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(y_ptr + b64 * s_yb + offs_d[:, None] * s_yd + t[None, :] * s_yl, y,
             mask=md[:, None] & (t < L)[None, :])


@triton.jit
def _act_grad(dy_ptr, x_ptr, w_ptr, bias_ptr, b64, offs_d, t, md, L, s_xb, s_xd, s_xl, s_wd, s_wk, s_gb, s_gd, s_gl,
              HAS_BIAS: tl.constexpr, SILU: tl.constexpr, W: tl.constexpr,
              BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """g = dy * act'(pre) at steps t (fp32; 0 past L)."""
    g = tl.load(dy_ptr + b64 * s_gb + offs_d[:, None] * s_gd + t[None, :] * s_gl,
                mask=md[:, None] & (t < L)[None, :], other=0.0).to(tl.float32)
    if SILU:
        pre = _preact(x_ptr, w_ptr, bias_ptr, b64, offs_d, t, md, L, s_xb, s_xd, s_xl, s_wd, s_wk,
                      HAS_BIAS, W, BLOCK_D, BLOCK_L)
        sg = tl.sigmoid(pre)
        g = g * sg * (1.0 + pre * (1.0 - sg))
    return g


@triton.jit
def _store_param_grads(g, x_ptr, dw_ptr, dbias_ptr, prow, b64, offs_d, t, md, L, s_xb, s_xd, s_xl,
                       HAS_BIAS: tl.constexpr, W: tl.constexpr):
    """This tile's partial sums of the weight and bias gradients: dw[k] = sum_t g_t x_{t-W+1+k}, dbias = sum_t g_t,
    at row prow of the [batch * n_lblocks, dim(, W)] buffers the wrapper adds up."""
    if HAS_BIAS:
        tl.store(dbias_ptr + prow, tl.sum(g, axis=1), mask=md)
    for k in tl.static_range(W):
        tk = t - (W - 1) + k
        xk = tl.load(x_ptr + b64 * s_xb + offs_d[:, None] * s_xd + tk[None, :] * s_xl,
                     mask=md[:, None] & ((tk >= 0) & (tk < L))[None, :], other=0.0).to(tl.float32)
        tl.store(dw_ptr + prow * W + k, tl.sum(g * xk, axis=1), mask=md)


@triton.jit
def _bwd_tile(dim, n_dblocks, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """Where a backward program works: grid (batch * n_dblocks, n_lblocks); program (b * n_dblocks + dblk, lblk)
    owns channels dblk * BLOCK_D .. and steps lblk * BLOCK_L ... Returns b (int64), the channel and step offsets,
    the mask of real channels and the row of its dw / dbias partial sums."""
    pid = tl.program_id(0)
    lblk = tl.program_id(1)
    b64 = (pid // n_dblocks).to(tl.int64)
    offs_d = (pid % n_dblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    t = lblk * BLOCK_L + tl.arange(0, BLOCK_L)
    md = offs_d < dim
    prow = (b64 * tl.num_programs(1) + lblk) * dim + offs_d
    return b64, offs_d, t, md, prow


@triton.jit
def conv_bwd_kernel(x_ptr, w_ptr, bias_ptr, dy_ptr, dx_ptr, dw_ptr, dbias_ptr, dim, L, n_dblocks,
                    s_xb, s_xd, s_xl, s_wd, s_wk, s_gb, s_gd, s_gl, s_dxb, s_dxd, s_dxl,
                    HAS_BIAS: tl.constexpr, SILU: tl.constexpr, W: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    # dx_t = sum_j w[W-1-j] g_{t+j}, g = dy * act'(pre); dw, dbias: per-(batch, L block) partial sums
    # [batch * n_lblocks, dim, W] and [batch * n_lblocks, dim], added up by the wrapper.
    b64, offs_d, t, md, prow = _bwd_tile(dim, n_dblocks, BLOCK_D, BLOCK_L)
    dx = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for j in tl.static_range(W):
        tj = t + j
        g = _act_grad(dy_ptr, x_ptr, w_ptr, bias_ptr, b64, offs_d, tj, md, L, s_xb, s_xd, s_xl, s_wd, s_wk,
                      s_gb, s_gd, s_gl, HAS_BIAS, SILU, W, BLOCK_D, BLOCK_L)
        wj = tl.load(w_ptr + offs_d * s_wd + (W - 1 - j) * s_wk, mask=md, other=0.0).to(tl.float32)
        dx += wj[:, None] * g
        if j == 0:  # g at t itself: the weight and bias gradients
            _store_param_grads(g, x_ptr, dw_ptr, dbias_ptr, prow, b64, offs_d, t, md, L, s_xb, s_xd, s_xl,
                               HAS_BIAS, W)
    tl.store(dx_ptr + b64 * s_dxb + offs_d[:, None] * s_dxd + t[None, :] * s_dxl, dx,
             mask=md[:, None] & (t < L)[None, :])


@triton.jit
def conv_update_kernel(x_ptr, state_ptr, w_ptr, bias_ptr, y_ptr, dim,
                       s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk, s_yb, s_yd,
                       HAS_BIAS: tl.constexpr, SILU: tl.constexpr, W: tl.constexpr, S: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    b64 = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    md = offs_d < dim
    sp = state_ptr + b64 * s_sb + offs_d * s_sd
    if HAS_BIAS:
        y = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    else:
        y = tl.zeros([BLOCK_D], dtype=tl.float32)
    # ascending k: slot k + 1 is read (iteration k) before it is overwritten (iteration k + 1)
    for k in tl.static_range(S):
        if k < S - 1:
            v = tl.load(sp + (k + 1) * s_sk, mask=md, other=0.0)
        else:
            v = tl.load(x_ptr + b64 * s_xb + offs_d * s_xd, mask=md, other=0.0)
        tl.store(sp + k * s_sk, v, mask=md)
        if k >= S - W:
            wk = tl.load(w_ptr + offs_d * s_wd + (k - (S - W)) * s_wk, mask=md, other=0.0).to(tl.float32)
            y += wk * v.to(tl.float32)
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(y_ptr + b64 * s_yb + offs_d * s_yd, y, mask=md)


# The backward in two passes (conv_bwd_grad_kernel, then conv_bwd_dx_kernel), an alternative to conv_bwd_kernel
# above: that one recomputes the pre-activation and its SiLU derivative at each of the W shifts of its tile (W x W
# loads of x and W sigmoids per element; 0.49 ms per call at the Table 1 shape on the H200, about 10x its memory
# floor). Here each element's g = dy * act'(pre) is computed once and written (fp32), then dx reads W shifts of g.
# Same fp32 arithmetic in the same order, and the same tiles for the dw / dbias partial sums.
@triton.jit
def conv_bwd_grad_kernel(x_ptr, w_ptr, bias_ptr, dy_ptr, g_ptr, dw_ptr, dbias_ptr, dim, L, n_dblocks,
                         s_xb, s_xd, s_xl, s_wd, s_wk, s_gb, s_gd, s_gl,
                         HAS_BIAS: tl.constexpr, SILU: tl.constexpr, W: tl.constexpr,
                         BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    # g (contiguous [batch, dim, L], fp32); dw, dbias partials per (batch, L block) as in conv_bwd_kernel.
    b64, offs_d, t, md, prow = _bwd_tile(dim, n_dblocks, BLOCK_D, BLOCK_L)
    g = _act_grad(dy_ptr, x_ptr, w_ptr, bias_ptr, b64, offs_d, t, md, L, s_xb, s_xd, s_xl, s_wd, s_wk,
                  s_gb, s_gd, s_gl, HAS_BIAS, SILU, W, BLOCK_D, BLOCK_L)
    tl.store(g_ptr + (b64 * dim + offs_d[:, None]) * L + t[None, :], g, mask=md[:, None] & (t < L)[None, :])
    _store_param_grads(g, x_ptr, dw_ptr, dbias_ptr, prow, b64, offs_d, t, md, L, s_xb, s_xd, s_xl, HAS_BIAS, W)


@triton.jit
def conv_bwd_dx_kernel(w_ptr, g_ptr, dx_ptr, dim, L, n_dblocks, s_wd, s_wk, s_dxb, s_dxd, s_dxl,
                       W: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    # dx_t = sum_j w[W-1-j] g_{t+j}, j ascending as in conv_bwd_kernel
    b64, offs_d, t, md, _ = _bwd_tile(dim, n_dblocks, BLOCK_D, BLOCK_L)
    dx = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for j in tl.static_range(W):
        tj = t + j
        g = tl.load(g_ptr + (b64 * dim + offs_d[:, None]) * L + tj[None, :], mask=md[:, None] & (tj < L)[None, :],
                    other=0.0)
        wj = tl.load(w_ptr + offs_d * s_wd + (W - 1 - j) * s_wk, mask=md, other=0.0).to(tl.float32)
        dx += wj[:, None] * g
    tl.store(dx_ptr + b64 * s_dxb + offs_d[:, None] * s_dxd + t[None, :] * s_dxl, dx,
             mask=md[:, None] & (t < L)[None, :])
