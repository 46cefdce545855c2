"""S6: the selective state space layer of Mamba (Gu & Dao 2023, Algorithm 2).

What makes it selective: the step size Delta, and the matrices B and C, are functions of the input x_t, so the
layer can choose per token what to write into its state (large Delta: reset and take the token; small Delta:
keep the state, ignore the token). A stays input-independent, A = -exp(A_log) with the S4D-Real init
A_n = -(n + 1), and D is a skip connection.

    Delta_t = softplus(W_dt (W_r x_t) + dt_bias)     (low-rank projection, rank dt_rank)
    B_t, C_t = W_B x_t, W_C x_t                       ([N] each, shared by all channels)
    h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t x_t,   y_t = C_t h_t + D x_t

The scan runs through ssmbench.kernels.selective_scan (backend chosen by `scan_backend`, a row of its SCAN_TABLE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ssmbench.kernels.selective_scan import SCAN_TABLE, selective_scan, selective_state_update

from .base import ALL_ROWS, SequenceLayer, device_dtype


@dataclass
class S6Options:
    d_state: int = 16
    dt_rank: int = 0  # 0 means ceil(d_model / 16), as in Mamba
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    scan_backend: str = "auto"  # auto or a row of SCAN_TABLE: reference | torch | triton | mamba_ssm


def decode_backend(scan_backend: str) -> str:
    """The decode-step backend that goes with a scan backend: its SCAN_TABLE row's `step` (the fused Triton step
    for "triton"; for "auto"/"mamba_ssm" "auto", Triton wherever it can run (CUDA); the plain reference step for
    "reference" and "torch")."""
    return "auto" if scan_backend == "auto" else SCAN_TABLE.row(scan_backend).step


def rows_as_batched(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """[C, batch * L] (a GEMM's output, channels first) -> the [batch, C, L] view the kernels read: rows
    contiguous in L, memory order [C, batch, L]; no copy."""
    C, BL = rows.shape
    return rows.view(C, batch, BL // batch).transpose(0, 1)


class S6Layer(SequenceLayer):
    fuses_gate = True  # forward(x, z) and step(x_t, state, z_t) apply the block's SiLU(z) gate in the scan
    def __init__(self, d_model: int, d_state: int = 16, dt_rank: int = 0, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, scan_backend: str = "auto"):
        super().__init__()
        if d_state <= 0:
            raise ValueError(f"model.layer.d_state must be > 0, got {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"model.layer.dt_min/dt_max must satisfy 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        if scan_backend not in SCAN_TABLE.choices():
            raise ValueError(f"model.layer.scan_backend={scan_backend!r} is not one of {SCAN_TABLE.choices()}")
        self.d_model, self.d_state = d_model, d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.scan_backend = scan_backend
        self.x_proj = nn.Linear(d_model, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_model, bias=False)
        # dt_proj's init keeps Delta near its target range at the start (as in Mamba): the weight small, and the
        # bias the inverse softplus of Delta drawn log-uniformly in [dt_min, dt_max].
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_model, 1))
        self.D = nn.Parameter(torch.ones(d_model))

    def _ssm_inputs(self, x: torch.Tensor):
        """x: [..., d_model] -> delta (pre-bias, pre-softplus) [..., d_model], B, C [..., N]."""
        dt_low, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return self.dt_proj(dt_low), B, C

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, D]. z (optional, [B, L, D]) is a gate fused into the scan: out = y * silu(z)."""
        return self._scan(x, z)

    def _scan(self, x, z, return_last_state: bool = False):
        delta, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        out = selective_scan(
            x.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2).unsqueeze(1), C.transpose(1, 2).unsqueeze(1),
            D=self.D.float(), z=None if z is None else z.transpose(1, 2), delta_bias=self.dt_bias.float(),
            delta_softplus=True, return_last_state=return_last_state, backend=self.scan_backend)
        return (out[0].transpose(1, 2), out[1]) if return_last_state else out.transpose(1, 2)

    def forward_channel_major(self, x: torch.Tensor, z: torch.Tensor | None = None,
                              return_last_state: bool = False):
        """x, z: [B, D, L] (rows contiguous in L, ideally in [D, B, L] memory order) -> (y [B, D, L] in x's order,
        last state [B, D, N] or None). The projections are single GEMMs on x as [D, B * L] and write delta
        [B, D, L] and B, C [B, N, L] as views in the scan's layout (no transposes)."""
        Bsz, D, L = x.shape
        x2 = x.transpose(0, 1).reshape(D, Bsz * L)  # a view in [D, B, L] order, else one copy
        x_dbl = self.x_proj.weight @ x2  # [R + 2N, B * L]
        dt_low, Bm, Cm = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=0)
        delta = rows_as_batched(self.dt_proj.weight @ dt_low, Bsz)
        out = selective_scan(x, delta, -torch.exp(self.A_log.float()), rows_as_batched(Bm, Bsz),
                             rows_as_batched(Cm, Bsz), D=self.D.float(), z=z, delta_bias=self.dt_bias.float(),
                             delta_softplus=True, return_last_state=return_last_state, backend=self.scan_backend)
        return out if return_last_state else (out, None)

    def allocate_cache(self, batch, max_len, device=None, dtype=None):
        # The SSM state stays fp32 whatever the activations' dtype, as in the fused kernels.
        device, _ = device_dtype(self, device, dtype)
        return torch.zeros(batch, self.d_model, self.d_state, device=device, dtype=torch.float32)

    def prefill(self, x: torch.Tensor, cache, rows: slice = ALL_ROWS, z: torch.Tensor | None = None):
        """forward(x, z), keeping the scan's last state in the cache."""
        y, last = self._scan(x, z, return_last_state=True)
        cache[rows] = last
        return y

    def step(self, x_t: torch.Tensor, cache, z_t: torch.Tensor | None = None):
        """One token: x_t, z_t [B, D] -> y_t [B, D], advancing the state [B, D, N] (fp32) in place, through the
        fused decode kernel (selective_state_update, Triton) on CUDA."""
        delta, B, C = self._ssm_inputs(x_t)
        A = -torch.exp(self.A_log.float())
        y, _ = selective_state_update(cache, x_t, delta, A, B, C, D=self.D.float(), z=z_t,
                                      dt_bias=self.dt_bias.float(), dt_softplus=True,
                                      backend=decode_backend(self.scan_backend))
        return y
