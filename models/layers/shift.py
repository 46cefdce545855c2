"""The shift SSM of H3 (Fu et al. 2023, Sec. 3.1), the first of H3's two SSMs.

Per channel, an SSM whose A is the N x N shift matrix (ones on the subdiagonal) and B = e_1: the state is the
last N inputs, h_t = [x_t, x_{t-1}, ..., x_{t-N+1}]. With a learned C and a D skip,

    y_t = sum_{k<N} C_k x_{t-k} + D x_t,

a short causal convolution of width N = d_state with kernel C. (C_0 and D both weigh x_t; kept as in H3.)
Forward runs it as a depthwise F.conv1d; step keeps the last N inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.kernels.common.options import option

from .base import ALL_ROWS, SequenceLayer, device_dtype


class ShiftSSM(SequenceLayer):
    """x [B, L, H] -> y [B, L, H]. Parameters C [H, N] (the kernel, C[:, k] multiplies x_{t-k}) and D [H],
    both SSM-group (fp32, no weight decay). State: float32 [batch, H, N], state[..., k] = x_{t-k}."""

    def __init__(self, d_model: int, d_state: int = 4):
        super().__init__()
        if d_state <= 0:
            raise ValueError(f"ShiftSSM d_state must be > 0, got {d_state}")
        self.d_model, self.d_state = d_model, d_state
        self.C = nn.Parameter(torch.randn(d_model, d_state) / d_state ** 0.5)
        self.D = nn.Parameter(torch.randn(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and option("SSMBENCH_SHIFT") == "triton":
            return self.forward_triton(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = x.float().transpose(1, 2)                               # [B, H, L]
            # conv1d is cross-correlation: flip C so that weight[..., -1 - k] multiplies x_{t-k}
            y = F.conv1d(F.pad(u, (self.d_state - 1, 0)), self.C.float().flip(-1)[:, None, :], groups=self.d_model)
            y = y + u * self.D.float()[:, None]
        return y.transpose(1, 2).to(x.dtype)

    def forward_triton(self, x: torch.Tensor) -> torch.Tensor:
        """forward through the Triton causal conv1d (SSMBENCH_SHIFT=triton, kernels/common/options.py): x read in
        place as [B, H, L] through its strides (no transpose or padded copy), fp32 arithmetic, one rounding to
        x's dtype; D folds into the tap of x_t (the same sum, rounded once more in fp32). PyTorch's depthwise
        conv kernels and the copies around them took ~1.5 ms of H3's 14.4 ms step (results/training/README.md)."""
        from ssmbench.kernels.causal_conv1d import causal_conv1d_fn
        flipped = self.C.float().flip(-1)  # weight[:, -1] multiplies x_t
        weight = torch.cat([flipped[:, :-1], (flipped[:, -1] + self.D.float())[:, None]], dim=1)
        y = causal_conv1d_fn(x.transpose(1, 2), weight, None, None, backend="triton")
        return y.transpose(1, 2)

    def allocate_cache(self, batch, max_len, device=None, dtype=None) -> torch.Tensor:
        device, _ = device_dtype(self, device, dtype)
        return torch.zeros(batch, self.d_model, self.d_state, device=device, dtype=torch.float32)

    def prefill(self, x: torch.Tensor, cache: torch.Tensor, rows: slice = ALL_ROWS) -> torch.Tensor:
        u = x.float().transpose(1, 2)                                    # [B, H, L]
        cache[rows] = F.pad(u, (self.d_state, 0))[..., -self.d_state:].flip(-1)  # x_{L-1-k}, zeros before x_0
        return self.forward(x)

    def step(self, x_t: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        u = x_t.float()
        h = torch.cat([u[:, :, None], cache[:, :, :-1]], dim=-1)       # h = A h + B x_t: shift in x_t
        cache.copy_(h)
        y = (h * self.C.float()).sum(-1) + self.D.float() * u
        return y.to(x_t.dtype)
