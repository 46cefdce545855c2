"""Triton kernels of RMSNorm (loaded through common.triton_util.load_kernels). Rows are [n_rows, d] with a row
stride and contiguous columns; a tile is [BLOCK_ROWS rows, BLOCK_D >= d columns], so a row's statistics never
leave the program and many narrow rows (d = 64) share one. Arithmetic in fp32."""

import triton
import triton.language as tl


@triton.jit
def rmsnorm_fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, n_rows, d, s_x, s_y, eps,
                       HAS_WEIGHT: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_D)
    mr, mc = rows < n_rows, cols < d
    m = mr[:, None] & mc[None, :]
    x = tl.load(x_ptr + rows[:, None] * s_x + cols[None, :], mask=m, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / d + eps)  # masked columns are 0: the sum is over d columns
    y = x * rstd[:, None]
    if HAS_WEIGHT:
        y = y * tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * s_y + cols[None, :], y, mask=m)
    tl.store(rstd_ptr + rows, rstd, mask=mr)


@triton.jit
def rmsnorm_bwd_kernel(x_ptr, w_ptr, dy_ptr, rstd_ptr, dx_ptr, dw_ptr, n_rows, d, n_blocks, s_x, s_dy, s_dx,
                       HAS_WEIGHT: tl.constexpr, HAS_DW: tl.constexpr,
                       BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    # xhat = x * rstd, g = dy * w:  dx = rstd * (g - xhat * mean(g * xhat)),  dw = sum over rows of dy * xhat.
    # rstd comes from the forward, so x is read once. Persistent: program p takes row blocks p, p + P, ... and
    # writes its dw partial sum to row p of dw [P, d] (the wrapper adds them up: deterministic, no atomics), so
    # the partial sums stay small next to x even when a block is a single wide row.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mc = cols < d
    if HAS_WEIGHT:
        w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_D], dtype=tl.float32)
    for blk in range(pid, n_blocks, tl.num_programs(0)):
        rows = blk * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS).to(tl.int64)  # int64: rows * stride may pass 2 ** 31
        mr = rows < n_rows
        m = mr[:, None] & mc[None, :]
        x = tl.load(x_ptr + rows[:, None] * s_x + cols[None, :], mask=m, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + rows[:, None] * s_dy + cols[None, :], mask=m, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=mr, other=0.0)
        xhat = x * rstd[:, None]
        if HAS_WEIGHT:
            g = dy * w[None, :]
        else:
            g = dy
        c = tl.sum(g * xhat, axis=1) / d
        tl.store(dx_ptr + rows[:, None] * s_dx + cols[None, :], (g - xhat * c[:, None]) * rstd[:, None], mask=m)
        if HAS_DW:
            dw += tl.sum(dy * xhat, axis=0)
    if HAS_DW:
        tl.store(dw_ptr + pid * d + cols, dw, mask=mc)
