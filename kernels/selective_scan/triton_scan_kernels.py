"""Triton kernels of the fused selective scan. Loaded through triton_util.load_kernels; see triton_scan.py
for the math, the layouts and the launch logic.

A program owns (batch b, channel d, segment s) and walks the segment's steps in blocks of BLOCK_L, carrying the
state (forward) or the adjoint (backward) from block to block, on [BLOCK_N states, BLOCK_L steps] tiles. With
one segment per channel (the default) a segment is the whole sequence; the long-sequence path cuts L into
several segments and stitches them with `carry_kernel`. All arithmetic is fp32; inputs are cast on load and
outputs cast on store.

One channel per program, 2-D tiles: the tiles inherit the layout of the B/C loads (consecutive steps of L
within a thread, warps along N). Triton gives 3-D tiles of several channels, which no load anchors, a default
layout that spreads L over all the program's threads, and their scans cost several times the shuffles. The
backward loads B and C as 4-step vectors, the width of its fp32 dB/dC atomics, so that all its tiles share one
layout (4 consecutive steps per thread), the one `_flip_steps` is written for. Measurements:
results/kernels/README.md.
"""

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 * (a1 * h + b1) + b2. With reverse=True the first pair is the later
    # (already accumulated) suffix, so the same function gives r_t = a_t * r_{t+1} + b_t.
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _combine_adjoint(f_l, k_l, g_l, f_e, k_e, g_e):
    # Reverse scan for the adjoint lam_t = x_t + a_{t+1} lam_{t+1}, which needs the decay one step *ahead*.
    # A segment [t..s] carries (f = a_t, k = a_{t+1} .. a_s, g = lam_t with lam_{s+1} = 0). Arguments: the
    # later segment (l) first, as reverse=True passes them, then the earlier one (e).
    t = k_e * f_l
    return f_e, t * k_l, g_e + t * g_l


@triton.jit
def _flip_steps(x, LANE_XOR: tl.constexpr):
    """An fp32 [BLOCK_N, BLOCK_L] tile reversed along L, for one layout only: 4 consecutive steps per thread, the
    steps of a row spread over LANE_XOR + 1 lanes of one warp in the low lane bits (checked for each compiled
    kernel by triton_scan._flip_fits; 0 elsewhere, where the scan runs with reverse=True). Element j of a
    thread takes element 3 - j of lane ^ LANE_XOR: one shuffle per element. Triton 3.6 lowers a reverse scan as
    flip, scan, flip with a 5-stage butterfly per element: 960 of the backward's ~1260 shuffles per block."""
    return tl.inline_asm_elementwise(
        asm="""
        shfl.sync.bfly.b32 $0, $7, $8, 0x1f, 0xffffffff;
        shfl.sync.bfly.b32 $1, $6, $8, 0x1f, 0xffffffff;
        shfl.sync.bfly.b32 $2, $5, $8, 0x1f, 0xffffffff;
        shfl.sync.bfly.b32 $3, $4, $8, 0x1f, 0xffffffff;
        """,
        constraints="=r,=r,=r,=r,r,r,r,r,r,r,r,r", args=[x, tl.full(x.shape, LANE_XOR, tl.int32)],
        dtype=tl.float32, is_pure=True, pack=4)


@triton.jit
def _softplus(x):
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


@triton.jit
def _program_coords(dim, dims_per_group, N, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Where a program of either kernel works: grid (batch * dim, segments); program (b * dim + d, seg) owns
    channel d of batch b (in group g) over segment seg. Returns pid, seg, the number of segments, d, b (int64),
    g, the state and step offsets of a tile and the mask of real states."""
    pid = tl.program_id(0)
    seg = tl.program_id(1)
    d = pid % dim
    offs_n = tl.arange(0, BLOCK_N)
    return (pid, seg, tl.num_programs(1), d, (pid // dim).to(tl.int64), d // dims_per_group, offs_n,
            tl.arange(0, BLOCK_L), offs_n < N)


@triton.jit
def _segment_entry(ptr, row, n_seg, seg, N, offs_n, mn, GIVEN: tl.constexpr, BLOCK_N: tl.constexpr):
    """What enters segment seg of a channel (the state going forward, the adjoint carry going backward) from a
    [batch, dim, S, N] buffer whose channel starts at `row`, or zeros when none is given."""
    if GIVEN:
        return tl.load(ptr + row * n_seg + seg * N + offs_n, mask=mn, other=0.0)
    else:
        return tl.zeros([BLOCK_N], dtype=tl.float32)


@triton.jit
def scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    out_ptr, ckpt_ptr, hinit_ptr, hloc_ptr, dsum_ptr,
    dim, L, N, dims_per_group, n_chunks, seg_iters,
    s_ub, s_ud, s_db, s_dd, s_zb, s_zd, s_ob, s_od,
    s_Ad, s_An,
    s_B0, s_B1, s_B2,  # variable: batch, group, n ; fixed: dim, n, unused
    s_C0, s_C1, s_C2,
    LOCAL: tl.constexpr,  # True: pass 1 of the long path, only the segment's end state (zero start) and sum(dt)
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_VAR: tl.constexpr, C_VAR: tl.constexpr, HAS_INIT: tl.constexpr, STORE_CKPT: tl.constexpr,
    STORE_LAST: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, CHUNK: tl.constexpr,
):
    pid, seg, n_seg, d, b64, g, offs_n, offs_l, mn = _program_coords(dim, dims_per_group, N, BLOCK_N, BLOCK_L)
    _A, A2, bias, Dv, Bf, Cf = _channel_params(d, offs_n, mn, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, s_Ad, s_An,
                                               s_B0, s_B1, s_C0, s_C1, HAS_D, HAS_BIAS, B_VAR, C_VAR)

    # state buffers: [batch, dim, S or n_chunks, N] contiguous; `row` = start of (b, d) in units of one slot
    row = pid.to(tl.int64) * N
    h = _segment_entry(hinit_ptr, row, n_seg, seg, N, offs_n, mn, HAS_INIT, BLOCK_N)
    if LOCAL:
        dsum = 0.0

    u_base = u_ptr + b64 * s_ub + d * s_ud
    dl_base = delta_ptr + b64 * s_db + d * s_dd
    if B_VAR:
        B_base = B_ptr + b64 * s_B0 + g * s_B1 + offs_n[:, None] * s_B2
    if C_VAR:
        C_base = C_ptr + b64 * s_C0 + g * s_C1 + offs_n[:, None] * s_C2
    it0 = seg * seg_iters
    it1 = tl.minimum(it0 + seg_iters, tl.cdiv(L, BLOCK_L))
    for it in range(it0, it1):
        t = it * BLOCK_L + offs_l
        mt = t < L
        u = tl.load(u_base + t, mask=mt, other=0.0).to(tl.float32)
        dt = tl.load(dl_base + t, mask=mt, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(mt, dt, 0.0)  # padded steps: decay 1, input 0 -> identity
        a = tl.exp2(dt[None, :] * A2[:, None])
        if B_VAR:
            Bt = tl.load(B_base + t[None, :], mask=mn[:, None] & mt[None, :], other=0.0).to(tl.float32)
            x = (dt * u)[None, :] * Bt
        else:
            x = (dt * u)[None, :] * Bf[:, None]
        ac, xc = tl.associative_scan((a, x), axis=1, combine_fn=_combine)
        hs = ac * h[:, None] + xc  # state after every step of the block
        h = tl.sum(tl.where(offs_l[None, :] == BLOCK_L - 1, hs, 0.0), axis=1)
        if LOCAL:
            dsum += tl.sum(dt, axis=0)
        else:
            if C_VAR:
                Ct = tl.load(C_base + t[None, :], mask=mn[:, None] & mt[None, :], other=0.0).to(tl.float32)
                y = tl.sum(hs * Ct, axis=0)
            else:
                y = tl.sum(hs * Cf[:, None], axis=0)
            if HAS_D:
                y += u * Dv
            if HAS_Z:
                z = tl.load(z_ptr + b64 * s_zb + d * s_zd + t, mask=mt, other=0.0).to(tl.float32)
                y = y * (z * tl.sigmoid(z))
            tl.store(out_ptr + b64 * s_ob + d * s_od + t, y, mask=mt)
            if STORE_CKPT:  # state checkpoints, one per CHUNK steps (the last one is the final state)
                ck = ckpt_ptr + row * n_chunks + offs_n
                if BLOCK_L == CHUNK:
                    tl.store(ck + it * N, h, mask=mn)
                elif BLOCK_L > CHUNK:
                    sel = ((t % CHUNK) == CHUNK - 1) & (t < n_chunks * CHUNK)
                    tl.store(ck[:, None] + (t // CHUNK)[None, :] * N, hs, mask=mn[:, None] & sel[None, :])
                else:
                    t_end = it * BLOCK_L + BLOCK_L
                    if (t_end % CHUNK == 0) | (t_end >= L):
                        tl.store(ck + ((t_end - 1) // CHUNK) * N, h, mask=mn)
    if LOCAL:
        tl.store(hloc_ptr + row * n_seg + seg * N + offs_n, h, mask=mn)
        tl.store(dsum_ptr + pid.to(tl.int64) * n_seg + seg, dsum)
    elif STORE_LAST:  # the final state alone (inference without checkpoints): [batch, dim, N]
        if seg == n_seg - 1:
            tl.store(hloc_ptr + row + offs_n, h, mask=mn)


@triton.jit
def _bwd_channel_chunk(t, mt, offs_l, u_base, dl_base, z_base, go_base, du_base, ddt_base, dz_base,
                       A, A2, bias, Dv, Bx, Cx, h0, carry,
                       LOCAL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                       SOFTPLUS: tl.constexpr, BLOCK_L: tl.constexpr, FLIP_XOR: tl.constexpr):
    """One channel, one block of steps, last block first. Bx, Cx: [BLOCK_N, BLOCK_L] tiles (time-varying) or
    [BLOCK_N, 1] columns (fixed); h0: the state before the block (its checkpoint); carry = a_{t1} lam_{t1},
    what the steps after the block send back into its last state. Stores du, d(delta) and dz of the block.
    Returns (carry for the block before, lam dt u (for dB), h gy (for dC), dA part, dD part, d(bias) part);
    with LOCAL (pass 1 of the long path) only the carry and, in the dD slot, sum(dt)."""
    draw = tl.load(dl_base + t, mask=mt, other=0.0).to(tl.float32)
    if HAS_BIAS:
        draw = draw + bias
    if SOFTPLUS:
        dt = _softplus(draw)
    else:
        dt = draw
    dt = tl.where(mt, dt, 0.0)
    dout = tl.load(go_base + t, mask=mt, other=0.0).to(tl.float32)
    a = tl.exp2(dt[None, :] * A2[:, None])
    if HAS_Z:
        z = tl.load(z_base + t, mask=mt, other=0.0).to(tl.float32)
        sz = tl.sigmoid(z)
        gy = dout * z * sz
    else:
        gy = dout
    if not LOCAL:
        # recompute the states of this block from its checkpoint
        u = tl.load(u_base + t, mask=mt, other=0.0).to(tl.float32)
        dtu = dt * u
        x = dtu[None, :] * Bx
        ac, xc = tl.associative_scan((a, x), axis=1, combine_fn=_combine)
        hs = ac * h0[:, None] + xc
        if HAS_Z:
            y = tl.sum(hs * Cx, axis=0)
            if HAS_D:
                y += u * Dv
            dz = dout * y * sz * (1.0 + z * (1.0 - sz))
            tl.store(dz_base + t, dz, mask=mt)
    # adjoint of the state: lam_t = gy_t C_t + a_{t+1} lam_{t+1}
    ones = tl.full(a.shape, 1.0, tl.float32)
    if FLIP_XOR > 0:
        # the reverse scan as a forward scan of the reversed tile (same argument order); lam and the carry are
        # formed there, the carry from the last column (the block's first step), and only lam is turned back
        a_r = _flip_steps(a, FLIP_XOR)
        _f, kk, gg = tl.associative_scan((a_r, ones, _flip_steps(gy[None, :] * Cx, FLIP_XOR)), axis=1,
                                         combine_fn=_combine_adjoint)
        lam_r = gg + kk * carry[:, None]
        carry = tl.sum(tl.where(offs_l[None, :] == BLOCK_L - 1, a_r * lam_r, 0.0), axis=1)
        lam = _flip_steps(lam_r, FLIP_XOR)
    else:
        _f, kk, gg = tl.associative_scan((a, ones, gy[None, :] * Cx), axis=1, combine_fn=_combine_adjoint,
                                         reverse=True)
        lam = gg + kk * carry[:, None]
        carry = tl.sum(tl.where(offs_l[None, :] == 0, a * lam, 0.0), axis=1)
    if LOCAL:
        return carry, a, a, A, tl.sum(dt, axis=0), 0.0
    else:
        w = lam * (hs - x)  # = dL/da_t * a_t  (hs - x = a_t h_{t-1})
        s = tl.sum(lam * Bx, axis=0)  # dL/d(dt_t u_t)
        ddt = tl.sum(w * A[:, None], axis=0) + s * u
        du = s * dt
        dD_part = 0.0
        if HAS_D:
            du += gy * Dv
            dD_part = tl.sum(gy * u, axis=0)
        # dA leaves out the sequence's first step, whose term lam a_0 h_{-1} dt is exactly 0 (h_{-1} = 0) but
        # which hs - x does not give as 0 on a GPU: compiled with FP fusion (Triton's default on CUDA) the
        # subtraction becomes fma(-dtu, B, hs), the exact product taken from its own rounding hs = x, which
        # leaves the product's rounding error (~6e-8 of x). At L = 1 that noise was all of dA, whose true value
        # is 0 (issue 13). In d(delta) the same noise sits beside the O(1) term s u and is harmless. Cost: a
        # select on the [BLOCK_L] vector, 4 per thread and block in the default launch.
        dA_part = tl.sum(w * tl.where(t > 0, dt, 0.0)[None, :], axis=1)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(draw)
        ddt = tl.where(mt, ddt, 0.0)
        tl.store(du_base + t, du, mask=mt)
        tl.store(ddt_base + t, ddt, mask=mt)
        return carry, lam * dtu[None, :], hs * gy[None, :], dA_part, dD_part, tl.sum(ddt, axis=0)


@triton.jit
def _channel_params(d, offs_n, mn, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, s_Ad, s_An, s_B0, s_B1, s_C0, s_C1,
                    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, B_VAR: tl.constexpr, C_VAR: tl.constexpr):
    """A (and A log2 e) of channel d, its bias and D (0 when absent), its fixed B and C columns (A when
    time-varying: placeholders the caller does not use)."""
    A = tl.load(A_ptr + d * s_Ad + offs_n * s_An, mask=mn, other=0.0).to(tl.float32)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d).to(tl.float32)
    Dv = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + d).to(tl.float32)
    Bf = A
    if not B_VAR:
        Bf = tl.load(B_ptr + d * s_B0 + offs_n * s_B1, mask=mn, other=0.0).to(tl.float32)
    Cf = A
    if not C_VAR:
        Cf = tl.load(C_ptr + d * s_C0 + offs_n * s_C1, mask=mn, other=0.0).to(tl.float32)
    return A, A * LOG2E, bias, Dv, Bf, Cf


@triton.jit
def scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, ckpt_ptr, carry_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, part_ptr, muloc_ptr, dsum_ptr,
    dim, L, N, dims_per_group, n_chunks, seg_iters, n_copies, s_part,
    s_ub, s_ud, s_db, s_dd, s_zb, s_zd, s_gb, s_gd,
    s_Ad, s_An,
    s_B0, s_B1, s_B2,
    s_C0, s_C1, s_C2,
    s_dBc, s_dB0, s_dB1, s_dB2,  # variable: fp32 [n_copies, batch, groups, N, L] accumulated with atomics
    s_dCc, s_dC0, s_dC1, s_dC2,
    LOCAL: tl.constexpr,  # True: pass 1 of the long path, only the adjoint at the segment start and sum(dt)
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_VAR: tl.constexpr, C_VAR: tl.constexpr, HAS_CARRY: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
    FLIP_XOR: tl.constexpr,  # > 0: reverse scans through _flip_steps with this lane mask; 0: reverse=True
):
    # BLOCK_L is the checkpoint interval: block `it` starts from checkpoint it - 1.
    pid, seg, n_seg, d, b64, g, offs_n, offs_l, mn = _program_coords(dim, dims_per_group, N, BLOCK_N, BLOCK_L)
    A, A2, bias, Dv, Bf, Cf = _channel_params(d, offs_n, mn, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, s_Ad, s_An,
                                              s_B0, s_B1, s_C0, s_C1, HAS_D, HAS_BIAS, B_VAR, C_VAR)
    # state-sized buffers: [batch, dim, S or n_chunks, N] contiguous; `row` = start of (b, d) in N-slots
    row = pid.to(tl.int64) * N
    carry = _segment_entry(carry_ptr, row, n_seg, seg, N, offs_n, mn, HAS_CARRY, BLOCK_N)
    acc_n = tl.zeros([BLOCK_N], dtype=tl.float32)  # dA
    acc_B = tl.zeros([BLOCK_N], dtype=tl.float32)  # fixed dB
    acc_C = tl.zeros([BLOCK_N], dtype=tl.float32)  # fixed dC
    acc_D = 0.0  # dD (LOCAL: sum of dt)
    acc_b = 0.0  # d(delta_bias)

    off_u = b64 * s_ub + d * s_ud
    off_d = b64 * s_db + d * s_dd
    off_z = b64 * s_zb + d * s_zd
    off_g = b64 * s_gb + d * s_gd
    off_o = (b64 * dim + d) * L  # du, d(delta), dz: fresh contiguous [batch, dim, L], whatever the inputs' strides
    if B_VAR:
        B_base = B_ptr + b64 * s_B0 + g * s_B1 + offs_n[:, None] * s_B2
        # channel d adds into copy d % n_copies: neighbouring channels run at the same time and would
        # otherwise all hit the same addresses (summed over the copies afterwards)
        dB_base = dB_ptr + (d % n_copies) * s_dBc + b64 * s_dB0 + g * s_dB1 + offs_n[:, None] * s_dB2
    if C_VAR:
        C_base = C_ptr + b64 * s_C0 + g * s_C1 + offs_n[:, None] * s_C2
        dC_base = dC_ptr + (d % n_copies) * s_dCc + b64 * s_dC0 + g * s_dC1 + offs_n[:, None] * s_dC2
    it0 = seg * seg_iters
    it1 = tl.minimum(it0 + seg_iters, tl.cdiv(L, BLOCK_L))
    for j in range(0, it1 - it0):
        it = it1 - 1 - j
        t = it * BLOCK_L + offs_l
        mt = t < L
        mnt = mn[:, None] & mt[None, :]
        # B and C are read as 4-step vectors, the width of the fp32 dB/dC atomics: with 8-step (16-byte bf16)
        # vectors the tiles took two layouts, and Triton converted between them or computed the state scan twice
        t4 = t
        if BLOCK_L >= 4:
            t4 = tl.max_contiguous(tl.multiple_of(t, 4), 4)
        if B_VAR:
            Bx = tl.load(B_base + t4[None, :], mask=mnt, other=0.0).to(tl.float32)
        else:
            Bx = Bf[:, None]
        if C_VAR:
            Cx = tl.load(C_base + t4[None, :], mask=mnt, other=0.0).to(tl.float32)
        else:
            Cx = Cf[:, None]
        h0 = tl.load(ckpt_ptr + row * n_chunks + tl.maximum(it - 1, 0) * N + offs_n, mask=mn, other=0.0)
        h0 = tl.where(it > 0, h0, 0.0)
        carry, lx, hg, dA_p, dD_p, db_p = _bwd_channel_chunk(
            t, mt, offs_l, u_ptr + off_u, delta_ptr + off_d, z_ptr + off_z, dout_ptr + off_g,
            du_ptr + off_o, ddelta_ptr + off_o, dz_ptr + off_o, A, A2, bias, Dv, Bx, Cx, h0,
            carry, LOCAL, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_L, FLIP_XOR)
        acc_D += dD_p
        if not LOCAL:
            acc_n += dA_p
            acc_b += db_p
            if B_VAR:
                tl.atomic_add(dB_base + t[None, :], lx, mask=mnt, sem="relaxed")
            else:
                acc_B += tl.sum(lx, axis=1)
            if C_VAR:
                tl.atomic_add(dC_base + t[None, :], hg, mask=mnt, sem="relaxed")
            else:
                acc_C += tl.sum(hg, axis=1)
    _bwd_channel_out(b64, d, seg, n_seg, dim, N, row, offs_n, mn, carry, acc_n, acc_B, acc_C, acc_D, acc_b,
                     part_ptr, s_part, muloc_ptr, dsum_ptr, LOCAL, HAS_D, HAS_BIAS, B_VAR, C_VAR)


@triton.jit
def _bwd_channel_out(b64, d, seg, n_seg, dim, N, row, offs_n, mn, carry, acc_n, acc_B, acc_C, acc_D, acc_b,
                     part_ptr, s_part, muloc_ptr, dsum_ptr, LOCAL: tl.constexpr, HAS_D: tl.constexpr,
                     HAS_BIAS: tl.constexpr, B_VAR: tl.constexpr, C_VAR: tl.constexpr):
    """A channel's results. LOCAL: the adjoint entering its segment and the segment's sum(dt). Otherwise its
    partial sums, one row of `part` per (batch, segment, channel): [dA (N) | fixed dB (N) | fixed dC (N) | dD |
    d(bias)] (columns present only for what exists), summed over batch and segments by the wrapper."""
    if LOCAL:
        tl.store(muloc_ptr + row * n_seg + seg * N + offs_n, carry, mask=mn)
        tl.store(dsum_ptr + (b64 * dim + d) * n_seg + seg, acc_D)
    else:
        p = part_ptr + ((b64 * n_seg + seg) * dim + d) * s_part
        tl.store(p + offs_n, acc_n, mask=mn)
        col = N
        if not B_VAR:
            tl.store(p + col + offs_n, acc_B, mask=mn)
            col += N
        if not C_VAR:
            tl.store(p + col + offs_n, acc_C, mask=mn)
            col += N
        if HAS_D:
            tl.store(p + col, acc_D)
            col += 1
        if HAS_BIAS:
            tl.store(p + col, acc_b)


@triton.jit
def carry_kernel(loc_ptr, dsum_ptr, A_ptr, init_ptr, out_ptr, dim, N, n_seg, s_Ad, s_An,
                 REVERSE: tl.constexpr, HAS_INIT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Stitch segments: out[s] = what enters segment s. Forward: out[0] = 0, out[s+1] = P_s out[s] + loc[s];
    reverse: out[S-1] = init (dlast), out[s-1] = P_s out[s] + loc[s]; P_s = exp(A * sum of dt over s).
    loc, out: [batch, dim, S, N]; dsum: [batch, dim, S]; grid (batch * dim blocks,)."""
    pid = tl.program_id(0)
    n_dblocks = tl.cdiv(dim, BLOCK_D)
    b64 = (pid // n_dblocks).to(tl.int64)
    offs_d = (pid % n_dblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < dim
    mdn = md[:, None] & (offs_n < N)[None, :]
    A2 = tl.load(A_ptr + offs_d[:, None] * s_Ad + offs_n[None, :] * s_An, mask=mdn, other=0.0) * LOG2E
    row = (b64 * dim + offs_d) * N
    if HAS_INIT:
        c = tl.load(init_ptr + row[:, None] + offs_n[None, :], mask=mdn, other=0.0).to(tl.float32)
    else:
        c = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for j in range(0, n_seg):
        if REVERSE:
            s = n_seg - 1 - j
        else:
            s = j
        p = row[:, None] * n_seg + s * N + offs_n[None, :]
        tl.store(out_ptr + p, c, mask=mdn)
        ds = tl.load(dsum_ptr + (b64 * dim + offs_d) * n_seg + s, mask=md, other=0.0)
        c = tl.exp2(ds[:, None] * A2) * c + tl.load(loc_ptr + p, mask=mdn, other=0.0)
