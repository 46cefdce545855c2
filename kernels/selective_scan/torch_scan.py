"""The selective scan as a chunked scan in plain PyTorch: any device, differentiable by autograd.

Same signature, layouts and semantics as `reference.selective_scan_ref` (see there), plus `chunk_size` and
`inner_scan`. The recurrence, per (batch, dim, n):
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,    y_t = <C_t, h_t> + D * u_t,    out = y * silu(z)

How it is computed:
- Everything is rearranged once into a time-major layout [L, batch, groups, N, dim/groups] (channels innermost,
  so the broadcasts against A [groups, N, dim/groups] and B/C [.., N, 1] vectorise over 128-wide rows).
- The sequence is cut into chunks of T steps. Per chunk, the decays exp(delta*A) and the inputs delta*u*B are
  built for all T steps at once ([T, batch, dim, N], the largest tensor ever made), the state is scanned through
  the chunk, y = <C, h> is one batched contraction, and the last state is carried into the next chunk. The whole
  [batch, dim, N, L] state sequence never exists in the forward (autograd does keep each chunk's tensors for the
  backward, as any autograd formulation must).
- Inside a chunk, two scans: "sequential" (two small ops on [batch, dim, N] per step: least work, and the
  fastest on the CPU, where the cores are already busy with the batch*dim*N parallelism) and "doubling"
  (Hillis-Steele, log2(T) whole-chunk steps: more work but few kernel launches, for GPUs).
- Only exp(delta*A) is ever exponentiated, never a difference or a negative cumulative sum, so nothing overflows
  for any A <= 0 (the factorised form exp(S_t) * cumsum(exp(-S_s) x_s), S = cumsum(delta*A), overflows fp32 as
  soon as a chunk's total decay passes e^88, e.g. 16 steps of delta 0.5 with A = -16), and no gradient meets
  an inf * 0. The quadratic ("attention-like") chunk form is not used: A is [dim, N], so the decays
  exp(S_t - S_s) differ per state and would need [batch, dim, N, T, T] per chunk, T times the work of a scan.

Defaults, from timings of every variant on a 2-core CPU and an H200 (numbers in results/kernels/README.md):
"sequential" with short chunks on the CPU, "doubling" with longer ones on GPUs. Plain autograd: a hand-written
backward (a reverse scan, with or without recomputing chunks) was no faster. The floor is memory traffic: every
elementwise pass reads and writes all batch*dim*N*L states and forward + backward makes ~20 of them, so chunks
sized to stay in cache matter, and only a fused kernel (the Triton backend) avoids the passes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import check_scan_args
from .reference import compute_dtype, prepare_delta

INNER_SCANS = ("sequential", "doubling")


def _default_inner_scan(device: torch.device) -> str:
    return "sequential" if device.type == "cpu" else "doubling"


def _default_chunk_size(inner_scan: str, states_per_step: int, L: int) -> int:
    """Chunk length from the number of states a step updates (batch * dim * N), from the timings in
    results/kernels/README.md.
    Sequential (CPU): ~2**19 states a chunk (2 MiB of fp32, about one core's L2), 8 to 256 steps; small
    batch*dim*N (very long L) gets long chunks, so fewer Python iterations outside the step loop.
    Doubling (GPU): ~2**23 states a chunk, 64 to 512 steps: long chunks mean fewer launches, which is what
    small problems are bound by; big ones are bound by memory traffic, which grows with log2(T)."""
    if inner_scan == "doubling":
        T = 1 << max(6, min(9, (2 ** 23 // max(states_per_step, 1)).bit_length() - 1))
    else:
        T = max(8, min(256, 2 ** 19 // max(states_per_step, 1)))
    return max(1, min(T, L))


def _groups(X: torch.Tensor) -> int:
    return X.shape[1] if X.dim() == 4 else 1


def _time_major_bc(X: torch.Tensor, g: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    """B or C in any accepted layout -> [L, batch, g, N, 1], or [1, 1, g, N, dim/g] when fixed over time."""
    X = X.to(dtype)
    if X.dim() == 2:  # [dim, N]
        n = X.shape[1]
        return X.reshape(g, d // g, n).transpose(1, 2).contiguous()[None, None]
    if X.dim() == 3:  # [batch, N, L]: shared by all groups
        return X.permute(2, 0, 1).contiguous()[:, :, None, :, None]
    gx = X.shape[1]  # [batch, gx, N, L]; g is a multiple of gx
    X = X.permute(3, 0, 1, 2)
    if gx != g:
        X = X.repeat_interleave(g // gx, dim=2)
    return X.contiguous()[..., None]


def _scan_sequential(dA: torch.Tensor, dtu: torch.Tensor, B: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """H_t = dA_t * H_{t-1} + dtu_t * B_t over dim 0, H_{-1} = h. The input term is formed inside the step
    (two ops a step) rather than as a [T, batch, dim, N] tensor first: one pass less, here ~10-20% faster."""
    hs = []
    B_steps = B.unbind(0) if B.shape[0] > 1 else [B[0]] * dA.shape[0]
    for a_t, x_t, b_t in zip(dA.unbind(0), dtu.unbind(0), B_steps):
        h = torch.addcmul(a_t * h, x_t, b_t)
        hs.append(h)
    return torch.stack(hs)


def _scan_doubling(dA: torch.Tensor, dtu: torch.Tensor, B: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The same recurrence as a Hillis-Steele scan: after the step with offset k, (a_t, x_t) is the composition
    of the 2k steps ending at t. The carried state is folded into the first input, so `a` is needed only while
    there are levels left."""
    X = dtu * B
    T = X.shape[0]
    x = torch.cat([torch.addcmul(X[:1], dA[:1], h[None]), X[1:]])
    a = dA
    k = 1
    while k < T:
        x = torch.cat([x[:k], torch.addcmul(x[k:], a[k:], x[:-k])])
        if 2 * k < T:
            a = torch.cat([a[:k], a[k:] * a[:-k]])
        k *= 2
    return x


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, initial_state=None, chunk_size=None, inner_scan=None):
    """Chunked selective scan. Layouts as the reference: u, delta, z [batch, dim, L]; A [dim, N];
    B, C [dim, N], [batch, N, L] or [batch, groups, N, L]; D, delta_bias [dim]; initial_state [batch, dim, N].
    Output in u's dtype; arithmetic in float32, or float64 when any input is float64; the last state
    ([batch, dim, N], in that arithmetic dtype) is returned too when return_last_state.
    chunk_size: steps per chunk (default: see `_default_chunk_size`). inner_scan: "sequential" or "doubling"
    (default: sequential on the CPU, doubling elsewhere)."""
    check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state, backend="torch")
    return scan_torch_unchecked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                initial_state, chunk_size, inner_scan)


def scan_torch_unchecked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, initial_state=None, chunk_size=None, inner_scan=None):
    """selective_scan_torch without the argument check (for callers that have just made it)."""
    dtype_out = u.dtype
    ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, L = u.shape
    N = A.shape[1]
    gB, gC = _groups(B), _groups(C)
    g = gB * gC // math.gcd(gB, gC)
    if dim % g:
        raise ValueError(f"dim {dim} is not a multiple of the number of groups {g}")
    dg = dim // g
    inner_scan = inner_scan or _default_inner_scan(u.device)
    if inner_scan not in INNER_SCANS:
        raise ValueError(f"unknown inner_scan {inner_scan!r}; choose one of {INNER_SCANS}")
    scan = _scan_sequential if inner_scan == "sequential" else _scan_doubling
    T = chunk_size or _default_chunk_size(inner_scan, batch * dim * N, L)
    if T < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    uc = u.to(ct)
    dt = prepare_delta(delta, delta_bias, delta_softplus, ct)  # [batch, dim, L]
    # Time-major, channels innermost: [L, batch, g, 1, dg]. contiguous() matters: a permuted view would make
    # every per-step slice below strided and the per-step ops several times slower.
    dt_tm = dt.permute(2, 0, 1).contiguous().view(L, batch, g, 1, dg)
    dtu_tm = (dt * uc).permute(2, 0, 1).contiguous().view(L, batch, g, 1, dg)
    At = A.to(ct).reshape(g, dg, N).transpose(1, 2).contiguous()  # [g, N, dg]; a strided A would give dA
    # a transposed layout (elementwise ops copy their inputs' strides) and strided, slow per-step slices
    Bt = _time_major_bc(B, g, dim, ct)
    Ct = _time_major_bc(C, g, dim, ct)
    if initial_state is None:
        h = uc.new_zeros(batch, g, N, dg)
    else:
        h = initial_state.to(ct).reshape(batch, g, dg, N).transpose(-1, -2).contiguous()

    n_chunks = -(-L // T)  # 0 when L == 0: no chunks, y is empty and the state passes through

    def chunks(X, varying=True):  # split(), not slicing: its backward is one cat, not a zero-filled copy per chunk
        return X.split(T) if varying and L else [X] * n_chunks

    ys = []
    for dt_c, dtu_c, B_c, C_c in zip(chunks(dt_tm), chunks(dtu_tm), chunks(Bt, B.dim() > 2), chunks(Ct, C.dim() > 2)):
        dA = torch.exp(dt_c * At)  # [T, batch, g, N, dg], <= 1 for A <= 0
        H = scan(dA, dtu_c, B_c, h)
        h = H[-1]
        if C.dim() > 2:  # C varies over time, [T, batch, g or 1, N, 1]: a batched contraction over N
            ys.append(torch.einsum("tbgnd,tbgn->tbgd", H, C_c[..., 0].expand(-1, -1, g, -1)))
        else:  # fixed C [1, 1, g, N, dg]
            ys.append((H * C_c).sum(-2))
    y = torch.cat(ys) if ys else uc.new_zeros(0, batch, g, dg)
    y = y.reshape(L, batch, dim).permute(1, 2, 0).contiguous()
    if D is not None:
        y = y + uc * D.to(ct)[:, None]
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_out)
    if not return_last_state:
        return y
    last_state = h.transpose(-1, -2).reshape(batch, dim, N)
    return y, last_state
