"""Fused selective scan in Triton: forward, backward with recomputation, and a long-sequence path.

    y = selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                              return_last_state=False)

Same signature and layouts as the reference (and mamba_ssm's selective_scan_fn): u, delta, z [batch, dim, L]
in fp32/bf16/fp16; A [dim, N] fp32; B, C [dim, N], [batch, N, L] or [batch, groups, N, L]; D, delta_bias [dim].

Forward, per block of BLOCK_L steps, all in registers: dt = softplus(delta + bias); a = exp(dt A);
x = dt u B; the pairs (a, x) are scanned along L with (a1, b1) o (a2, b2) = (a1 a2, b1 a2 + b2) and the carried
state h folded in as h_t = (prod a) h + (scanned x); y = <C, h> + D u, times silu(z). Only y leaves the chip,
plus one fp32 state checkpoint every CHUNK steps ([batch, dim, ceil(L/CHUNK), N]: 4N bytes per CHUNK steps, a
third of the bytes of bf16 u, delta, z at CHUNK=32, N=16); the [batch, dim, L, N] states never exist in memory.

Backward, per block from last to first: recompute the block's states from its checkpoint, then a reverse
scan (on a GPU: a forward scan of the block reversed in registers, see _flip_steps) gives the state adjoint
lam_t = C_t gy_t + a_{t+1} lam_{t+1} (gy = dout silu(z)), and from it
    dB_t = sum_d lam_t dt_t u_t        dC_t = sum_d gy_t h_t        dA = sum_t lam_t a_t h_{t-1} dt_t
    d(dt)_t = sum_n lam_t (a_t h_{t-1} A + u_t B_t)      du_t = dt_t sum_n lam_t B_t + D gy_t
with a_t h_{t-1} = h_t - x_t. dB/dC of shared (time-varying) B/C are summed over channels with fp32 atomics;
dA, dD, d(delta_bias) and fixed dB/dC are per-(batch, channel) partial sums added up afterwards.

Long sequences: when batch * dim blocks cannot fill the GPU, L is cut into S segments and the scan runs in
three launches: (1) every segment from a zero state gives its end state and sum(dt) (so its total decay is
exp(A sum dt)); (2) a small sequential pass over the S segments gives each segment's true start state;
(3) the full forward from those start states. The backward does the same for the adjoint, right to left.
`long_sequence=None` decides by a heuristic on programs vs SMs; True/False force it (tests, benchmarks).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from ..common import triton_util as tu
from .checks import check_scan_args

_KERNELS = Path(__file__).with_name("triton_scan_kernels.py")

# What the last call launched ({"fwd_segments": S, "bwd_segments": S, ...}): lets tests and benchmarks check
# which path ran.
LAST_LAUNCH: dict = {}


@dataclasses.dataclass(frozen=True)
class ScanConfig:
    """Launch parameters. chunk = checkpoint interval = the backward's block length. The forward block
    length must divide chunk or be a multiple of it. Defaults: the best of the sweeps in
    scripts/scan_sweeps.py on an H200 (numbers in results/kernels/README.md): one warp per program wins, since
    a program's tile then needs no cross-warp barriers and many programs share an SM. chunk 32: since the
    backward's reverse scan runs through register flips, its [N, 32] tiles fit in the registers without spills
    (more warps per SM than at chunk 64), and the backward is faster for it. The price: twice the checkpoints,
    4N bytes per channel every 32 steps."""
    block_l_fwd: int = 128
    warps_fwd: int = 1
    chunk: int = 32
    warps_bwd: int = 1
    min_seg_len: int = 4096  # long path: shortest segment (steps)
    split_below_warps_per_sm: int = 4  # long path: taken when one segment per channel gives fewer warps per SM
    target_warps_per_sm: int = 128  # long path: split until this many warps per SM are resident
    # A forward without autograd stores no checkpoints, only (when asked) the final state. Which of the two
    # compiled variants is faster depends on the grid, a code-generation effect measured on an H200
    # (results/kernels/breakdown/fwd_variants.md): storing the final state was faster on grids of few programs
    # per SM, so below this many programs per SM it is stored even when nobody asked for it.
    nograd_store_last_below_programs_per_sm: int = 64
    # Caps on registers per thread (ptxas maxrregcount; None: the compiler's choice). Timed on an H200
    # (`scripts/scan_sweeps.py --sections regs,regs_bwd`, results/kernels/regs/, summed up in
    # results/kernels/README.md): no cap won anywhere but by noise; capped below what the compiler takes, both
    # kernels spill and slow down.
    maxnreg_fwd: int | None = None
    maxnreg_bwd: int | None = None
    # Copies of the backward's fp32 dB/dC accumulators (None: the memory-capped rule of _n_copies). Fixed counts
    # are for sweeps: at Table 1's training shape (batch 64, dim 128, L 4128) the rule leaves one copy, which all
    # 128 channels of a batch element add into at once.
    acc_copies: int | None = None


DEFAULT_CONFIG = ScanConfig()
INTERPRETER_CONFIG = ScanConfig(block_l_fwd=64, chunk=64, min_seg_len=128)


def _k():
    return tu.load_kernels(_KERNELS)


def _n_segments(force: bool | None, programs: int, warps: int, n_iters: int, block_l: int,
                cfg: ScanConfig, device: torch.device) -> int:
    """How many segments to cut each channel's sequence into (1 = no long-sequence path). Split only when
    one segment per channel leaves the GPU nearly empty (fewer than split_below_warps_per_sm warps per SM),
    then aim for target_warps_per_sm; a segment is at least min_seg_len steps unless forced."""
    if force is False or n_iters <= 1:
        return 1
    sms = tu.num_sms(device)
    min_iters = max(1, cfg.min_seg_len // block_l)
    if force is None:
        if programs * warps >= sms * cfg.split_below_warps_per_sm or n_iters < 2 * min_iters:
            return 1
    else:
        min_iters = 1
    seg = max(2, -(-sms * cfg.target_warps_per_sm // (programs * warps)))
    seg = min(seg, max(1, n_iters // min_iters))
    return max(1, min(seg, n_iters))


def _bc_layout(X: torch.Tensor, batch: int, dim: int, L: int):
    """-> (tensor, variable?, groups, strides s0, s1, s2) with the last dim contiguous."""
    if X.dim() == 2:
        assert X.shape[0] == dim, f"fixed B/C must be [dim, N], got {tuple(X.shape)}"
        return X, False, 1, (X.stride(0), X.stride(1), 0)
    if X.dim() == 3:
        X = X.unsqueeze(1)
    assert X.dim() == 4 and X.shape[0] == batch and X.shape[-1] == L, f"bad B/C shape {tuple(X.shape)}"
    if X.stride(-1) != 1:
        X = X.contiguous()
    return X, True, X.shape[1], (X.stride(0), X.stride(1), X.stride(2))


def _bc_layouts(B, C, batch: int, dim: int, L: int):
    """Both B and C in kernel layout, and the number of channel groups they share (checked here once, for the
    forward and the backward alike)."""
    b, c = _bc_layout(B, batch, dim, L), _bc_layout(C, batch, dim, L)
    (_, b_var, gB, _), (_, c_var, gC, _) = b, c
    groups = max(gB, gC)
    assert dim % groups == 0 and (not b_var or not c_var or gB == gC)
    return b, c, groups


def _maxnreg(cap: int | None) -> dict:
    # the interpreter takes no compile options
    return {} if cap is None or tu.interpreting() else {"maxnreg": cap}


def _lastdim_contig(x):
    return x if x is None or x.stride(-1) == 1 else x.contiguous()


def _fwd(u, delta, A, B, C, D, z, delta_bias, softplus, cfg, long_sequence, store_ckpt, store_last=False):
    """-> (y, checkpoints [batch, dim, n_chunks, N] fp32 or None, last state [batch, dim, N] fp32 or None).
    store_ckpt: every CHUNK-th state (the backward's; the last of them is the final state); store_last without
    store_ckpt: the final state alone."""
    batch, dim, L = u.shape
    N = A.shape[1]
    dev = u.device
    (Bt, b_var, gB, sB), (Ct, c_var, gC, sC), groups = _bc_layouts(B, C, batch, dim, L)
    BL, CH = cfg.block_l_fwd, cfg.chunk
    assert BL % CH == 0 or CH % BL == 0, "block_l_fwd must divide chunk or be a multiple of it"
    n_chunks = -(-L // CH)
    n_iters = -(-L // BL)
    S = _n_segments(long_sequence, batch * dim, cfg.warps_fwd, n_iters, BL, cfg, dev)
    seg_iters = -(-n_iters // S)
    S = -(-n_iters // seg_iters)
    LAST_LAUNCH.update(fwd_segments=S, fwd_checkpoints=store_ckpt, fwd_last_state=store_last and not store_ckpt)
    out = tu.alloc_like(u)  # u's memory order (kernel writes through out's strides)
    ckpt = tu.alloc((batch, dim, n_chunks, N), torch.float32, dev) if store_ckpt else None
    BN = max(2, tu.next_pow2(N))
    zz = z if z is not None else u
    dummy = ckpt if ckpt is not None else out
    common = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                  B_VAR=b_var, C_VAR=c_var, STORE_CKPT=store_ckpt, STORE_LAST=store_last and not store_ckpt,
                  BLOCK_N=BN, BLOCK_L=BL, CHUNK=CH,
                  num_warps=cfg.warps_fwd, **_maxnreg(cfg.maxnreg_fwd))
    args = (u, delta, A, Bt, Ct, D if D is not None else A, zz, delta_bias if delta_bias is not None else A)
    strides = (dim, L, N, dim // groups, n_chunks, seg_iters,
               u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), zz.stride(0), zz.stride(1),
               out.stride(0), out.stride(1), A.stride(0), A.stride(1), *sB, *sC)
    K = _k()
    hinit = None
    if S > 1:
        hloc = tu.alloc((batch, dim, S, N), torch.float32, dev)
        dsum = tu.alloc((batch, dim, S), torch.float32, dev)
        K.scan_fwd_kernel[(batch * dim, S)](*args, out, dummy, dummy, hloc, dsum, *strides,
                                            LOCAL=True, HAS_INIT=False, **common)
        hinit = tu.alloc((batch, dim, S, N), torch.float32, dev)
        _carry(K, hloc, dsum, A, None, hinit, reverse=False)
    last = tu.alloc((batch, dim, N), torch.float32, dev) if store_last and not store_ckpt else None
    K.scan_fwd_kernel[(batch * dim, S)](*args, out, dummy, hinit if hinit is not None else dummy,
                                        last if last is not None else dummy, dummy,
                                        *strides, LOCAL=False, HAS_INIT=hinit is not None, **common)
    if store_last and last is None:
        last = ckpt[:, :, -1].clone()
    return out, ckpt, last


def _carry(K, loc, dsum, A, init, out, reverse):
    batch, dim, S, N = loc.shape
    bd = min(16, tu.next_pow2(dim))
    grid = (batch * (-(-dim // bd)),)
    K.carry_kernel[grid](loc, dsum, A, init if init is not None else loc, out, dim, N, S, A.stride(0), A.stride(1),
                         REVERSE=reverse, HAS_INIT=init is not None, BLOCK_D=bd, BLOCK_N=max(2, tu.next_pow2(N)),
                         num_warps=1)


def _n_copies(one_bytes: int, dims_per_group: int, u: torch.Tensor) -> int:
    """Copies of the fp32 dB/dC accumulators for the atomics. With one copy, the channels of a group, which
    run side by side, add into the same few addresses at the same moment, and at short L this contention
    dominated the backward. Up to 16 copies, within max(8 MiB, 4% of u's bytes) of extra memory so the
    peak-memory target (1.2x) holds at long L: at L = 2^16 in the paper config one copy is 8 MiB, and a second
    copy would pass the budget. Measurements: results/kernels/README.md."""
    budget = max(8 * 2**20, u.numel() * u.element_size() // 25)
    return int(max(1, min(16, dims_per_group, budget // max(one_bytes, 1))))


def accumulator_copies(cfg: "ScanConfig", n_var: int, var_numel: int, dims_per_group: int, u: torch.Tensor) -> int:
    """How many copies of the fp32 dB/dC accumulators the backward uses: cfg.acc_copies when set (capped at the
    channels per group: more copies would stay zero), else the memory-capped rule of _n_copies. n_var: how many of
    B and C are time-varying; var_numel: elements of one of them."""
    if cfg.acc_copies is not None:
        return max(1, min(cfg.acc_copies, dims_per_group))
    return _n_copies(n_var * var_numel * 4, dims_per_group, u)


# Verdicts on compiled backward kernels (CompiledKernel.hash -> bool): does the tile layout fit _flip_steps?
_FLIP_OK: dict = {}
# Launch keys (_flip_key) whose compiled backward did not fit: later calls go straight to reverse=True.
_FLIP_MISFITS: set = set()
_BLOCKED = re.compile(r"^(#\w+) = #ttg\.blocked<\{sizePerThread = \[(.*?)\], threadsPerWarp = \[(.*?)\], "
                      r"warpsPerCTA = \[(.*?)\], order = \[(.*?)\]", re.M)
_INLINE_ASM = re.compile(r"tt\.elementwise_inline_asm .*-> tensor<\d+x(\d+)xf32, (#\w+)>")


def _flip_lane_xor(block_l: int) -> int:
    """The lane mask _flip_steps needs for a [*, block_l] tile of 4 steps per thread (0: not applicable)."""
    if tu.interpreting() or torch.version.hip or block_l < 8 or block_l > 128:  # PTX shuffles: NVIDIA only
        return 0
    return block_l // 4 - 1


def _flip_fits(kernel, block_l: int) -> bool:
    """Whether every tile that a compiled backward reverses with _flip_steps has the layout that function assumes:
    4 consecutive steps per thread, block_l / 4 lanes along L in the low lane bits, one warp along L. Read from
    the kernel's TTGIR once per compiled kernel."""
    key = getattr(kernel, "hash", None)
    if key is None or key not in _FLIP_OK:
        ttgir = kernel.asm["ttgir"] if kernel is not None else ""
        layouts = {m[0]: [[int(v) for v in g.split(",")] for g in m[1:]] for m in _BLOCKED.findall(ttgir)}
        uses = _INLINE_ASM.findall(ttgir)
        ok = bool(uses) and all(int(width) == block_l and layouts.get(alias) is not None
                                and layouts[alias][0] == [1, 4] and layouts[alias][1][1] == block_l // 4
                                and layouts[alias][2][1] == 1 and layouts[alias][3] == [1, 0]
                                for width, alias in uses)
        if key is None:
            return ok
        _FLIP_OK[key] = ok
    return _FLIP_OK[key]


def _flip_key(tensors, L: int, cfg: "ScanConfig") -> tuple:
    """What decides the backward's tile layout, as far as a launch can tell before compiling: the launch
    parameters, the dtypes and ranks, and which strides, lengths and addresses are multiples of 16 (Triton
    specialises on those, and they decide how wide its vector loads can be)."""
    return (cfg.chunk, cfg.warps_bwd, cfg.maxnreg_bwd, L % 16 == 0) + tuple(
        (t.dtype, t.dim(), t.data_ptr() % 16 == 0, tuple(st % 16 == 0 for st in t.stride())) if t is not None
        else None for t in tensors)


def _bwd(dout, dlast, u, delta, A, B, C, D, z, delta_bias, ckpt, softplus, cfg, long_sequence):
    """-> (du, d(delta), dA, dB, dC, dD, dz, d(delta_bias)). Reverse scans use _flip_steps where the compiled
    kernel's layout fits it (checked on its first launch; otherwise the work is redone with reverse=True, and
    launches of the same key go to reverse=True from then on)."""
    flip = _flip_lane_xor(cfg.chunk)
    key = _flip_key((u, delta, B, C, z, dout), u.shape[-1], cfg) if flip else None
    if flip and key not in _FLIP_MISFITS:
        grads, kernels = _bwd_launch(dout, dlast, u, delta, A, B, C, D, z, delta_bias, ckpt, softplus, cfg,
                                     long_sequence, flip)
        if all(_flip_fits(k, cfg.chunk) for k in kernels):
            LAST_LAUNCH.update(bwd_reverse="flip")
            return grads
        _FLIP_MISFITS.add(key)
    LAST_LAUNCH.update(bwd_reverse="reverse scan")
    return _bwd_launch(dout, dlast, u, delta, A, B, C, D, z, delta_bias, ckpt, softplus, cfg, long_sequence, 0)[0]


def _bwd_launch(dout, dlast, u, delta, A, B, C, D, z, delta_bias, ckpt, softplus, cfg, long_sequence, flip):
    """The backward's launches with the given FLIP_XOR -> (gradients, the compiled scan_bwd kernels launched)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    dev = u.device
    (Bt, b_var, gB, sB), (Ct, c_var, gC, sC), groups = _bc_layouts(B, C, batch, dim, L)
    CH = cfg.chunk
    n_chunks = -(-L // CH)
    S = _n_segments(long_sequence, batch * dim, cfg.warps_bwd, n_chunks, CH, cfg, dev)
    seg_iters = -(-n_chunks // S)
    S = -(-n_chunks // seg_iters)
    LAST_LAUNCH.update(bwd_segments=S)
    BN = max(2, tu.next_pow2(N))
    f32 = torch.float32
    du = tu.alloc(u.shape, u.dtype, dev)
    ddelta = tu.alloc(delta.shape, delta.dtype, dev)
    dz = tu.alloc(z.shape, z.dtype, dev) if z is not None else None
    # Time-varying B/C: fp32 atomics from every channel of a group into P copies (see _n_copies); both in
    # one buffer [P, 2 or 1, batch, groups, N, L], zeroed and summed over the copies in one op each.
    var_shape = tuple(Bt.shape) if b_var else tuple(Ct.shape)
    n_var = b_var + c_var
    P = accumulator_copies(cfg, n_var, Bt.numel() if b_var else Ct.numel(), dim // groups, u) if n_var else 1
    acc = torch.zeros((P, n_var) + var_shape, dtype=f32, device=dev) if n_var else None
    dB = acc[:, 0] if b_var else None
    dC = acc[:, n_var - 1] if c_var else None
    # Per-(batch x segment, channel) partial sums, one row each: [dA | fixed dB | fixed dC | dD | d(bias)]
    width = N * (1 + (not b_var) + (not c_var)) + (D is not None) + (delta_bias is not None)
    part = tu.alloc((batch * S, dim, width), f32, dev)
    zz = z if z is not None else u
    dzz = dz if dz is not None else du
    sdB = (dB.stride(0), dB.stride(1), dB.stride(2), dB.stride(3)) if b_var else (0, 0, 0, 0)
    sdC = (dC.stride(0), dC.stride(1), dC.stride(2), dC.stride(3)) if c_var else (0, 0, 0, 0)
    common = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                  B_VAR=b_var, C_VAR=c_var, BLOCK_N=BN, BLOCK_L=CH, FLIP_XOR=flip, num_warps=cfg.warps_bwd,
                  **_maxnreg(cfg.maxnreg_bwd))
    ins = (u, delta, A, Bt, Ct, D if D is not None else A, zz, delta_bias if delta_bias is not None else A, dout, ckpt)
    sizes = (dim, L, N, dim // groups, n_chunks, seg_iters, P, width,
             u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), zz.stride(0), zz.stride(1),
             dout.stride(0), dout.stride(1), A.stride(0), A.stride(1), *sB, *sC, *sdB, *sdC)
    dBp = dB if b_var else part
    dCp = dC if c_var else part
    K = _k()
    grid = (batch * dim, S)
    carry = None
    kernels = []
    if dlast is not None:
        dlast = dlast.to(f32).contiguous()
    if S > 1:
        muloc = tu.alloc((batch, dim, S, N), f32, dev)
        dsum = tu.alloc((batch, dim, S), f32, dev)
        kernels.append(K.scan_bwd_kernel[grid](*ins, ckpt, du, ddelta, dzz, dBp, dCp, part, muloc, dsum, *sizes,
                                               LOCAL=True, HAS_CARRY=False, **common))
        carry = tu.alloc((batch, dim, S, N), f32, dev)
        _carry(K, muloc, dsum, A, dlast, carry, reverse=True)
    elif dlast is not None:
        carry = dlast.view(batch, dim, 1, N)
    kernels.append(K.scan_bwd_kernel[grid](*ins, carry if carry is not None else ckpt, du, ddelta, dzz, dBp, dCp,
                                           part, part, part, *sizes, LOCAL=False, HAS_CARRY=carry is not None,
                                           **common))
    part = part.sum(0)
    cols = iter(part.split([N] * (1 + (not b_var) + (not c_var)) + [1] * ((D is not None) + (delta_bias is not None)),
                           dim=1))
    dA = next(cols)
    dBf = next(cols) if not b_var else None
    dCf = next(cols) if not c_var else None
    dD = next(cols).squeeze(1) if D is not None else None
    dbias = next(cols).squeeze(1) if delta_bias is not None else None
    if n_var:
        acc = acc.sum(0) if P > 1 else acc[0]
        if b_var and c_var and B.dtype == C.dtype:
            acc = acc.to(B.dtype)  # one conversion for both
    dB = acc[0] if b_var else dBf
    dC = acc[n_var - 1] if c_var else dCf
    return (du, ddelta, dA, dB, dC, dD, dz, dbias), kernels


class SelectiveScanTriton(torch.autograd.Function):
    """The scan with its fused backward. Takes u, delta, z contiguous in L and A, D, delta_bias in fp32 (the
    caller casts them: as autograd ops, so gradients flow back to the original dtypes and layouts). Returns
    (y, last state, checkpoints); the checkpoints are an output only so that setup_context can save them (the
    form torch.func needs), and take no gradient.

    vmap: the member (vmapped) dimension folds into the channels. A, D and delta_bias are per channel, so k
    members' channels concatenate to k * dim; B and C are per (batch, group), so each member's groups become k
    groups of the folded scan (member m's group g is group m * groups + g, the group of its channels). One
    launch then serves all k members (e.g. an ensemble's, ssmbench.ensemble)."""

    @staticmethod
    def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cfg, long_sequence):
        out, ckpt, _ = _fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cfg, long_sequence, True)
        return out, ckpt[:, :, -1].clone(), ckpt

    @staticmethod
    def setup_context(ctx, inputs, output):
        u, delta, A, B, C, D, z, bias, softplus, cfg, long_sequence = inputs
        ckpt = output[2]
        ctx.save_for_backward(u, delta, A, B, C, D, z, bias, ckpt)
        ctx.mark_non_differentiable(ckpt)
        ctx.set_materialize_grads(False)  # an unused last state gives no gradient, not a zero one to scan back
        ctx.cfg, ctx.long_sequence, ctx.softplus = cfg, long_sequence, softplus

    @staticmethod
    def backward(ctx, dout, dlast, _dckpt):
        u, delta, A, B, C, D, z, bias, ckpt = ctx.saved_tensors
        if dout is None:  # only the last state is used
            dout = torch.zeros_like(u)
        dout = _lastdim_contig(dout)
        if dout.stride(0) == 0 or dout.stride(1) == 0:  # expanded grads (e.g. from .sum()) -> real strides
            dout = dout.contiguous()
        du, ddelta, dA, dB, dC, dD, dz, dbias = _bwd(dout, dlast, u, delta, A, B, C, D, z, bias, ckpt,
                                                     ctx.softplus, ctx.cfg, ctx.long_sequence)
        dB = dB.reshape(B.shape).to(B.dtype)
        dC = dC.reshape(C.shape).to(C.dtype)
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None, None

    @staticmethod
    def vmap(info, in_dims, u, delta, A, B, C, D, z, delta_bias, delta_softplus, cfg, long_sequence):
        k = info.batch_size
        u_d, delta_d, A_d, B_d, C_d, D_d, z_d, bias_d = in_dims[:8]
        u, delta, z = (_members_first(x, d, k) for x, d in ((u, u_d), (delta, delta_d), (z, z_d)))
        batch, dim, L = u.shape[1:]
        N = A.shape[-1]
        folded = SelectiveScanTriton.apply(
            _fold_channels(u), _fold_channels(delta),
            _members_first(A, A_d, k).reshape(k * dim, N), _fold_bc(B, B_d, k), _fold_bc(C, C_d, k),
            _fold_per_channel(D, D_d, k), _fold_channels(z), _fold_per_channel(delta_bias, bias_d, k),
            delta_softplus, cfg, long_sequence)
        out, last, ckpt = folded
        return ((out.view(batch, k, dim, L), last.view(batch, k, dim, N),
                 ckpt.view(batch, k, dim, *ckpt.shape[2:])), (1, 1, 1))


def _members_first(x, in_dim, k):
    """A vmapped argument with the member dimension in front (an unbatched one expanded to k members)."""
    if x is None:
        return None
    return x.expand(k, *x.shape) if in_dim is None else x.movedim(in_dim, 0)


def _fold_channels(x):
    """[k, batch, dim, L] -> [batch, k * dim, L] (member m's channel c at m * dim + c), rows contiguous in L."""
    if x is None:
        return None
    k, batch, dim, L = x.shape
    return _lastdim_contig(x.transpose(0, 1).reshape(batch, k * dim, L))


def _fold_per_channel(x, in_dim, k):
    """[dim] per member -> [k * dim]."""
    return None if x is None else _members_first(x, in_dim, k).reshape(-1)


def _fold_bc(X, in_dim, k):
    """B or C per member -> the folded scan's: fixed [dim, N] -> [k * dim, N]; time-varying [batch, N, L] or
    [batch, groups, N, L] -> [batch, k * groups, N, L] (member m's group g is group m * groups + g)."""
    X = _members_first(X, in_dim, k)
    if X.dim() == 3:  # fixed over time
        return X.reshape(k * X.shape[1], X.shape[2])
    if X.dim() == 4:
        X = X.unsqueeze(2)
    _, batch, groups, N, L = X.shape
    return _lastdim_contig(X.transpose(0, 1).reshape(batch, k * groups, N, L))


def _is_functorch_wrapped(*xs) -> bool:
    return any(x is not None and torch._C._functorch.is_functorch_wrapped_tensor(x) for x in xs)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, *, long_sequence: bool | None = None,
                          config: ScanConfig | None = None):
    """Fused selective scan (see the module docstring). `long_sequence`: None = heuristic, True/False = force
    the segmented long-sequence path on or off. `config`: launch parameters (defaults tuned on an H200)."""
    check_scan_args(u, delta, A, B, C, D, z, delta_bias, backend="triton")
    return scan_triton_unchecked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                 long_sequence=long_sequence, config=config)


def scan_triton_unchecked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, *, long_sequence: bool | None = None,
                          config: ScanConfig | None = None):
    """selective_scan_triton without the argument check (for callers that have just made it)."""
    if config is None:
        config = INTERPRETER_CONFIG if tu.interpreting() and u.device.type == "cpu" else DEFAULT_CONFIG
    if u.shape[-1] == 0:
        from .reference import scan_ref_unchecked
        return scan_ref_unchecked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    ins = (u, delta, A, B, C, D, z, delta_bias)
    vmapped = _is_functorch_wrapped(*ins)  # under torch.func: through the Function, whose vmap rule handles it
    if not vmapped and (not torch.is_grad_enabled() or not any(x is not None and x.requires_grad for x in ins)):
        # inference (e.g. a prefill): no autograd node, no checkpoints; the final state where it is asked for or
        # where the variant that stores it runs faster (see ScanConfig)
        u, delta, z = _lastdim_contig(u), _lastdim_contig(delta), _lastdim_contig(z)
        few = u.shape[0] * u.shape[1] < config.nograd_store_last_below_programs_per_sm * tu.num_sms(u.device)
        out, _, last = _fwd(u, delta, A.float(), B, C, D.float() if D is not None else None, z,
                            delta_bias.float() if delta_bias is not None else None, delta_softplus, config,
                            long_sequence, False, return_last_state or few)
        return (out, last) if return_last_state else out
    # (a vmapped tensor has no strides to ask for: the vmap rule lays out its folded arguments itself)
    contig = (lambda x: x) if vmapped else _lastdim_contig
    out, last, _ = SelectiveScanTriton.apply(
        contig(u), contig(delta), A.float(), B, C, D.float() if D is not None else None, contig(z),
        delta_bias.float() if delta_bias is not None else None, delta_softplus, config, long_sequence)
    return (out, last) if return_last_state else out
