"""S4 / S4D: the linear time-invariant (LTI) structured state space layer (Gu et al. 2022a, 2022b).

Each of the H = d_model channels is its own single-input single-output continuous-time SSM

    h'(t) = A h(t) + B x(t),    y(t) = C h(t) + D x(t)

with a learnable step size Delta = exp(log_dt) (one per channel). Every call discretises it with the zero-order
hold (ZOH), dA = exp(Delta A), dB = (dA - I) A^{-1} B, which gives two views of the same map:

    recurrent (step):      h_t = dA h_{t-1} + dB x_t,   y_t = Re(C h_t) + D x_t
    convolutional (forward): K_l = Re(C dA^l dB) for l < L,  y = causal_conv(x, K) + D x   (FFT, padded to 2L)

The layer is linear: no activation, no gate. The blocks around it (no-gate, H3, Mamba) add those.

Parametrisations of A (option `init`):
  "legs"  S4D-LegS: A diagonal = the eigenvalues of the normal part of HiPPO-LegS (see `nplr_legs`),
          B = V^* B_legs (HiPPO's B in the eigenbasis). Real parts are all -1/2.
  "lin"   S4D-Lin:  A_n = -1/2 + i pi n,                   B = 1.
  "inv"   S4D-Inv:  A_n = -1/2 + i N/pi (N/(2n+1) - 1),    B = 1.
  "real"  S4D-Real: A_n = -(n + 1), a real diagonal system with N = d_state real states, B = 1.
  "nplr"  S4: normal plus low rank, A = V (Lambda - P P^*) V^*, with Lambda, P learned and initialised from
          HiPPO-LegS so that A == HiPPO-LegS exactly at init. See "The NPLR route" below.

The complex diagonal ones ("legs", "lin", "inv") keep N/2 = d_state // 2 complex modes: the other half are
their complex conjugates (the system is real), whose contribution equals that of the kept half, so the output
is 2 Re(sum_n C_n h_n). `recurrent_params()` folds that factor 2 into the C it returns.

The NPLR route. The official S4 evaluates the NPLR kernel with the Cauchy kernel and the Woodbury identity at
roots of unity. At our sizes (d_state <= 64) it is simpler, and exact, to materialise the dense real N x N
matrix and discretise it with one matrix exponential per channel:

    A = V diag(Lambda) V^* - (V P)(V P)^*    with V = [V_h, conj(V_h)], Lambda = [L_h, conj(L_h)], P = [P_h, conj(P_h)]
      = 2 Re(V_h diag(L_h) V_h^*) - p p^T,   p = 2 Re(V_h P_h)

which is real for any learned L_h, P_h (the conjugate pairs are kept implicit), and stable whenever
Re(L_h) < 0 (its symmetric part is negative definite). V_h is a fixed buffer from the eigendecomposition at
init. The state is then real, [N] per channel, in the original (HiPPO) basis. The kernel is built by repeated
squaring (dA^(2^k)), log2(L) batched matmuls. Cost: O(H N^3 log L) time and an [H, N, L] intermediate per
forward, fine for N <= 64 and L in the thousands; prefer the diagonal inits for very long L. (The official
code keeps only the N/2 complex coordinates with the low-rank term restricted to them, which is not exactly
the real system; materialising the real matrix keeps A == HiPPO-LegS at init, checked in the tests.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .base import ALL_ROWS, SequenceLayer, device_dtype
from .fftconv import ChannelMajorConv, fft_causal_conv

INITS = ("legs", "lin", "inv", "real", "nplr")


@dataclass
class S4Options:
    d_state: int = 64
    init: str = "legs"  # legs | lin | inv | real | nplr
    dt_min: float = 0.001
    dt_max: float = 0.1
    lr_ssm: float = 0.001  # informational: tagged on A, B, P, log_dt as param._optim["lr"] (as in S4)
    dropout: float = 0.0


# ----------------------------------------------------------------------------------------------------------------
# HiPPO-LegS and its normal-plus-low-rank (NPLR) form

def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO-LegS matrices (Gu et al. 2020), float64:

        A_nk = -sqrt(2n+1) sqrt(2k+1)  if n > k,   -(n+1)  if n == k,   0  if n < k;      B_n = sqrt(2n+1).
    """
    r = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    A = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(torch.arange(N, dtype=torch.float64) + 1)
    return A, r.clone()


def nplr_legs(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """NPLR form of HiPPO-LegS (S4, Gu et al. 2022a, Theorem 1): A = V diag(Lambda) V^* - P P^T.

    Adding P P^T with P_n = sqrt(n + 1/2) makes A normal: A + P P^T = -1/2 I + S with S skew-symmetric,
    so its eigenvalues are -1/2 + i w, with V unitary from the Hermitian eigenproblem of -i S.
    Returns (Lambda [N] complex128, P [N] float64, B [N] float64, V [N, N] complex128). N must be even; the
    columns are ordered so that Lambda[N/2:] = conj(Lambda[:N/2]) and V[:, N/2:] = conj(V[:, :N/2]),
    with Im Lambda[:N/2] > 0 ascending. (For even N, S has no zero eigenvalue, so the pairs are clean.)
    """
    if N % 2:
        raise ValueError(f"nplr_legs needs an even N (conjugate pairs), got {N}")
    A, B = hippo_legs(N)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    normal = A + P[:, None] * P[None, :]
    skew = normal + 0.5 * torch.eye(N, dtype=torch.float64)
    w, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))   # skew V = V diag(i w)
    half = torch.argsort(w)[N // 2:]                              # the N/2 positive frequencies, ascending
    w_h, V_h = w[half], V[:, half]
    Lambda_h = torch.complex(torch.full_like(w_h, -0.5), w_h)
    return torch.cat([Lambda_h, Lambda_h.conj()]), P, B, torch.cat([V_h, V_h.conj()], dim=1)


def s4d_init(init: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal (A, B) for the S4D inits. Complex ones return N//2 modes (complex128); "real" returns N (float64)."""
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "legs":
        Lambda, _, B, V = nplr_legs(N)
        return Lambda[: N // 2], V[:, : N // 2].conj().T @ B.to(torch.complex128)
    if init == "lin":
        return torch.complex(torch.full_like(n, -0.5), math.pi * n), torch.ones(N // 2, dtype=torch.complex128)
    if init == "inv":
        imag = N / math.pi * (N / (2 * n + 1) - 1)
        return torch.complex(torch.full_like(n, -0.5), imag), torch.ones(N // 2, dtype=torch.complex128)
    if init == "real":
        return -(torch.arange(N, dtype=torch.float64) + 1), torch.ones(N, dtype=torch.float64)
    raise ValueError(f"model.layer.init={init!r} is not a diagonal init; allowed: {INITS[:-1]}")


# ----------------------------------------------------------------------------------------------------------------
# Zero-order-hold discretisation

def zoh_diagonal(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A, B: [H, N] (real or complex), dt: [H]. dA = exp(dt A), dB = (dA - 1) / A * B, elementwise."""
    dA = torch.exp(dt[:, None] * A)
    return dA, (dA - 1) / A * B


def zoh_dense(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A: [H, N, N], B: [H, N], dt: [H]. Returns dA = exp(dt A) [H, N, N], dB = (dA - I) A^{-1} B [H, N].

    Both come from one exponential of the augmented matrix: exp(dt [[A, B], [0, 0]]) = [[dA, dB], [0, 1]],
    which equals the textbook formula without inverting A (Van Loan 1978)."""
    H, N, _ = A.shape
    M = A.new_zeros(H, N + 1, N + 1)
    M[:, :N, :N] = A
    M[:, :N, N] = B
    E = torch.linalg.matrix_exp(dt[:, None, None] * M)
    return E[:, :N, :N], E[:, :N, N]


def dense_powers(dA: torch.Tensor, dB: torch.Tensor, L: int) -> torch.Tensor:
    """W [H, N, L] with W[:, :, l] = dA^l dB, built by doubling, W <- [W, dA^(2^k) W]: log2(L) batched matmuls."""
    W, Ak = dB[:, :, None], dA
    while W.shape[-1] < L:
        W = torch.cat([W, Ak @ W], dim=-1)
        if W.shape[-1] < L:
            Ak = Ak @ Ak
    return W[:, :, :L]


# ----------------------------------------------------------------------------------------------------------------

class S4Layer(ChannelMajorConv, SequenceLayer):
    """LTI S4/S4D layer: x [B, L, H] -> y [B, L, H], channel-wise, causal, linear.

    Parameters (all fp32, all named from base.SSM_PARAM_NAMES):
      log_A_real [H, M], A_imag [H, M]   A = -exp(log_A_real) + i A_imag   (M = N/2 modes; "real": no A_imag)
                                          for "nplr" these are the diagonal Lambda_h of the NPLR form
      P [H, N/2, 2]                       "nplr" only: low-rank factor in the eigenbasis (complex as real pairs)
      B, C                                complex as real pairs [H, N/2, 2] (legs/lin/inv) or real [H, N]
      D [H], log_dt [H]
    State (allocate_cache / step): [batch, H, N/2] complex64 for legs/lin/inv, [batch, H, N] float32 for real/nplr
    (the dtype follows the parameters, not the activations: fp32 even under bf16 autocast).
    """

    def __init__(self, d_model: int, d_state: int = 64, init: str = "legs", dt_min: float = 0.001,
                 dt_max: float = 0.1, lr_ssm: float = 0.001, dropout: float = 0.0):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"model.layer.init={init!r} is not a known S4 init; allowed values for option "
                             f"'init': {list(INITS)}")
        if d_state <= 0 or (init != "real" and d_state % 2):
            raise ValueError(f"model.layer.d_state={d_state}: must be > 0, and even for init={init!r} "
                             "(complex modes come in conjugate pairs)")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"model.layer.dt_min/dt_max must satisfy 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        if not 0 <= dropout < 1:
            raise ValueError(f"model.layer.dropout must be in [0, 1), got {dropout}")
        H, N = d_model, d_state
        self.d_model, self.d_state, self.init = d_model, d_state, init
        self.lr_ssm = lr_ssm
        self.is_complex = init in ("legs", "lin", "inv")   # diagonal complex modes, complex state
        self.is_dense = init == "nplr"                     # dense real A, real state

        if init == "nplr":
            Lambda, P, B, V = nplr_legs(N)
            self.register_buffer("V_h", V[:, : N // 2], persistent=False)  # complex128; cast on use
            A0 = Lambda[: N // 2]
            P_h = V[:, : N // 2].conj().T @ P.to(V.dtype)                   # P in the eigenbasis, kept half
            self.P = nn.Parameter(torch.view_as_real(P_h).float().repeat(H, 1, 1))
            self.B = nn.Parameter(B.float().repeat(H, 1))
            self.C = nn.Parameter(torch.randn(H, N))
        else:
            A0, B = s4d_init(init, N)
            if self.is_complex:
                self.B = nn.Parameter(torch.view_as_real(B).float().repeat(H, 1, 1))
                # C ~ CN(0, 1): real and imaginary parts N(0, 1/2), as in S4D
                self.C = nn.Parameter(torch.randn(H, N // 2, 2) * 0.5 ** 0.5)
            else:
                self.B = nn.Parameter(B.float().repeat(H, 1))
                self.C = nn.Parameter(torch.randn(H, N))
        self.log_A_real = nn.Parameter(torch.log(-A0.real).float().repeat(H, 1))
        if init != "real":
            self.A_imag = nn.Parameter(A0.imag.float().repeat(H, 1))
        self.D = nn.Parameter(torch.randn(H))
        self.log_dt = nn.Parameter(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        # As in S4: the SSM's A, B, P and step size train with their own learning rate and no weight decay.
        for name in ("log_A_real", "A_imag", "B", "P", "log_dt"):
            if hasattr(self, name):
                getattr(self, name)._optim = {"lr": lr_ssm, "weight_decay": 0.0}
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._step_cache = None

    # -- continuous and discrete parameters ---------------------------------------------------------------------

    @property
    def _dtype(self) -> torch.dtype:
        """The precision the SSM is computed in: float64 if the parameters are, else float32 (even for
        half-precision parameters or under autocast)."""
        return torch.float64 if self.log_dt.dtype == torch.float64 else torch.float32

    def _f(self, p: torch.Tensor) -> torch.Tensor:
        return p.to(self._dtype)

    def _diag_A(self) -> torch.Tensor:
        """The diagonal A (or NPLR's Lambda_h): [H, M], complex unless init == "real"."""
        re = -torch.exp(self._f(self.log_A_real))
        return re if self.init == "real" else torch.complex(re, self._f(self.A_imag))

    def continuous_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, B, C) of the continuous system. A: [H, M] diagonal, or [H, N, N] dense for "nplr";
        C without the conjugate-pair factor 2."""
        if self.is_complex:
            return self._diag_A(), torch.view_as_complex(self._f(self.B)), torch.view_as_complex(self._f(self.C))
        if not self.is_dense:
            return self._diag_A(), self._f(self.B), self._f(self.C)
        # NPLR: A = 2 Re(V_h diag(Lambda_h) V_h^*) - p p^T, p = 2 Re(V_h P_h)  (module docstring)
        Lam = self._diag_A()
        V_h = self.V_h.to(Lam.dtype)
        normal = 2 * torch.einsum("nk,hk,mk->hnm", V_h, Lam, V_h.conj()).real
        p = 2 * torch.einsum("nk,hk->hn", V_h, torch.view_as_complex(self._f(self.P))).real
        return normal - p[:, :, None] * p[:, None, :], self._f(self.B), self._f(self.C)

    def recurrent_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dA, dB, C) of the discrete system h_t = dA h_{t-1} + dB x_t, y_t = Re(sum_n C_n h_t,n) + D x_t.

        Diagonal inits: dA, dB, C are [H, M] (dA acts elementwise); C already includes the factor 2 of the
        conjugate pairs. "nplr": dA [H, N, N] (dA @ h), dB and C [H, N], all real."""
        A, B, C = self.continuous_params()
        dt = torch.exp(self._f(self.log_dt))
        dA, dB = (zoh_dense if self.is_dense else zoh_diagonal)(A, B, dt)
        return dA, dB, (2 * C if self.is_complex else C)

    def kernel(self, L: int) -> torch.Tensor:
        """The convolution kernel K [H, L] (real): K_l = Re(C dA^l dB)."""
        dA, dB, C = self.recurrent_params()
        if not self.is_dense:
            # Vandermonde: dA^l = exp(l * Delta A) for diagonal A (log(dA) = Delta A up to multiples of 2 pi i,
            # which integer powers do not see)
            # Chunked over l so that a very long kernel (length extrapolation) never holds all of [H, M, L].
            log_dA, CdB, pos = torch.log(dA)[:, :, None], C * dB, torch.arange(L, device=dA.device)
            chunk = max(1, 2 ** 24 // dA.numel())
            K = torch.cat([torch.einsum("hn,hnl->hl", CdB, torch.exp(log_dA * pos[s:s + chunk]))
                           for s in range(0, L, chunk)], dim=-1)
            return K.real if K.is_complex() else K
        return torch.einsum("hn,hnl->hl", C, dense_powers(dA, dB, L))

    def last_state(self, x: torch.Tensor) -> torch.Tensor:
        """The state after reading x [B, L, H] from zeros, h_(L-1) = sum_l dA^(L-1-l) dB x_l, in closed form
        ([B, H, M] like the cache): what prefill leaves for the steps to continue from."""
        dA, dB, _ = self.recurrent_params()
        u, L = x.to(self._dtype), x.shape[1]
        if self.is_dense:
            return torch.einsum("hnl,blh->bhn", dense_powers(dA, dB, L), u.flip(1))
        # dA^(L-1-l) through the Vandermonde as in kernel(), chunked over l likewise
        log_dA, age = torch.log(dA)[:, :, None], torch.arange(L - 1, -1, -1, device=dA.device)
        chunk = max(1, 2 ** 24 // dA.numel())
        h = sum(torch.einsum("hml,blh->bhm", torch.exp(log_dA * age[s:s + chunk]), u[:, s:s + chunk].to(dA.dtype))
                for s in range(0, L, chunk))
        return h * dB

    # -- the two views ------------------------------------------------------------------------------------------

    def conv_kernel_and_D(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution view's kernel K [H, L] and skip D [H], in the SSM's precision (call outside autocast)."""
        return self.kernel(L), self._f(self.D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, H] -> y [B, L, H]: y = causal_conv(x, K) + D x, FFT over 2L (no circular wrap-around)."""
        L = x.shape[1]
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = fft_causal_conv(x, *self.conv_kernel_and_D(L))
        return self.dropout(y).to(x.dtype)

    def allocate_cache(self, batch, max_len, device=None, dtype=None) -> torch.Tensor:
        """Zeros [batch, H, N/2] complex (legs/lin/inv) or [batch, H, N] real (real/nplr), in the parameters'
        precision (fp32 -> complex64 / float32) whatever `dtype` the activations have."""
        device, _ = device_dtype(self, device, dtype)
        real = self._dtype
        M = self.d_state // 2 if self.is_complex else self.d_state
        return torch.zeros(batch, self.d_model, M, device=device,
                           dtype=(torch.complex128 if real == torch.float64 else torch.complex64)
                           if self.is_complex else real)

    def prefill(self, x: torch.Tensor, cache: torch.Tensor, rows: slice = ALL_ROWS) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            cache[rows] = self.last_state(x)
        return self.forward(x)

    def _cached_recurrent_params(self):
        """recurrent_params(), memoised while gradients are off (decoding): the NPLR route costs a matrix
        exponential per channel, which would otherwise be paid on every token. The key holds each parameter's
        storage and version counter, so an optimizer step or .to() invalidates it."""
        if torch.is_grad_enabled():
            return self.recurrent_params()
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if self._step_cache is None or self._step_cache[0] != key:
            self._step_cache = (key, self.recurrent_params())
        return self._step_cache[1]

    def step(self, x_t: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        """x_t: [B, H] -> y_t [B, H], advancing the state in place. h = dA h + dB x_t; y = Re(C h) + D x_t."""
        dA, dB, C = self._cached_recurrent_params()
        u = x_t.to(self._dtype)
        if self.is_dense:
            h = (dA @ cache[..., None])[..., 0] + dB * u[:, :, None]
        else:
            h = dA * cache + dB * u[:, :, None]
        cache.copy_(h)
        y = (C * h).sum(-1)
        y = (y.real if y.is_complex() else y) + self.D.to(u.dtype) * u
        return self.dropout(y).to(x_t.dtype)
