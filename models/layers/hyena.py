"""Hyena's implicit long-convolution filter (Poli et al. 2023, Sec. 3.3) as a channel-wise LTI inner layer.

The filter is not stored tap by tap: a small FFN maps positional features of each time step t to one value per
channel, and an exponential window makes it decay:

    h[:, t] = FFN(PositionalEmbedding(t)) * exp(-t_norm |delta_c|)        (ExponentialModulation)
    y = causal_conv(x, h) + D x                                            (FFT over 2L)

  PositionalEmbedding(t) = [t_norm, Re z, Im z] with t_norm = t / (max_len - 1), z_k = exp(-i f_k 2 pi t / max_len),
                           f_k = linspace(1e-4, bands - 1, bands), bands = (emb_dim - 1) // 2
  FFN = Linear(emb_dim, order) Sin [Linear(order, order) Sin] x 2  Linear(order, H, bias=False),
        with Sin(x) = sin(freq * x), freq learned (init w) and shared by the three activations, as in safari.
  delta_c = linspace(log(1e-2) / 1.5, log(1e-2) / 0.3, H): slow to fast decaying channels (fixed buffer).

Positions are computed on the fly from t, so the filter exists for any L: for L <= max_len it is the official
filter sliced to L, and beyond max_len it extrapolates (t_norm > 1, the window keeps decaying). The filter of
length L is a prefix of the filter of any longer length, which is what makes step() agree with forward().

The layer is linear (no gate): the Hyena operator's gates come from the block around it (H3 / Mamba / no-gate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .base import ALL_ROWS, KVCache, SequenceLayer, device_dtype, mark_ssm
from .fftconv import ChannelMajorConv, fft_causal_conv


@dataclass
class HyenaOptions:
    filter_order: int = 64
    emb_dim: int = 3
    max_len: int = 1024  # sets the frequency/time scale of the positional features; any L works
    w: float = 1.0       # initial frequency of the sin activations
    modulate: bool = True
    dropout: float = 0.0


class Sin(nn.Module):
    def __init__(self, dim: int, w: float = 1.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class PositionalEmbedding(nn.Module):
    """Features [t_norm, cos, -sin of `bands` frequencies] of positions 0..L-1, for any L."""

    def __init__(self, emb_dim: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        bands = (emb_dim - 1) // 2
        self.register_buffer("f", torch.linspace(1e-4, bands - 1, bands), persistent=False)

    def forward(self, L: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (t_norm [L, 1], z [L, emb_dim])."""
        pos = torch.arange(L, device=device or self.f.device, dtype=torch.float32)[:, None]
        t = pos / (self.max_len - 1)
        angle = self.f * (2 * math.pi * pos / self.max_len)          # [L, bands]
        return t, torch.cat([t, torch.cos(angle), -torch.sin(angle)], dim=-1)


class ExponentialModulation(nn.Module):
    """x * exp(-t |delta_c|): channel c's window reaches `target` at t_norm between fast_decay_pct and
    slow_decay_pct (of max_len)."""

    def __init__(self, d_model: int, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5,
                 target: float = 1e-2, shift: float = 0.0):
        super().__init__()
        max_decay, min_decay = math.log(target) / fast_decay_pct, math.log(target) / slow_decay_pct
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, d_model))
        self.shift = shift

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.exp(-t * self.deltas.abs()) + self.shift)


class HyenaFilterLayer(ChannelMajorConv, SequenceLayer):
    """x [B, L, H] -> y [B, L, H]: causal long convolution with the implicit Hyena filter, plus D x.

    Parameters: the filter FFN's weights, biases and sin frequency, and D [H]; all go to the SSM optimizer group
    (fp32, no weight decay; the FFN ones tagged with mark_ssm), as safari trains the filter with wd = 0.
    Cache (allocate_cache / prefill / step): the input history, a KVCache holding one float32 buffer
    [batch, H, max_len] of the past inputs. A long convolution has no finite state: step t costs O(H t) time,
    so decoding T tokens is O(H T^2). Under no_grad the filter is computed once for a
    power-of-two length and reused until the parameters change.
    """

    def __init__(self, d_model: int, filter_order: int = 64, emb_dim: int = 3, max_len: int = 1024,
                 w: float = 1.0, modulate: bool = True, dropout: float = 0.0):
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"model.layer.emb_dim={emb_dim}: must be odd and >= 3 (time, then cos/sin pairs)")
        if filter_order <= 0:
            raise ValueError(f"model.layer.filter_order={filter_order}: must be > 0")
        if max_len < 2:
            raise ValueError(f"model.layer.max_len={max_len}: must be >= 2")
        if not 0 <= dropout < 1:
            raise ValueError(f"model.layer.dropout must be in [0, 1), got {dropout}")
        self.d_model, self.modulate = d_model, modulate
        self.pos_emb = PositionalEmbedding(emb_dim, max_len)
        act = Sin(filter_order, w)
        self.implicit_filter = nn.Sequential(
            nn.Linear(emb_dim, filter_order), act,
            nn.Linear(filter_order, filter_order), act,
            nn.Linear(filter_order, filter_order), act,
            nn.Linear(filter_order, d_model, bias=False),
        )
        for p in self.implicit_filter.parameters():
            mark_ssm(p)
        self.modulation = ExponentialModulation(d_model)
        self.D = nn.Parameter(torch.randn(d_model))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._filter_cache = None

    def filter(self, L: int) -> torch.Tensor:
        """The implicit filter h [H, L] (float32)."""
        device = self.D.device
        with torch.autocast(device_type=device.type, enabled=False):
            t, z = self.pos_emb(L, device)
            h = self.implicit_filter(z.to(self.D.dtype))
            if self.modulate:
                h = self.modulation(t, h)
        return h.T.float()

    def conv_kernel_and_D(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The filter h [H, L] and skip D [H], float32 (call outside autocast)."""
        return self.filter(L), self.D.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = fft_causal_conv(x, *self.conv_kernel_and_D(L))
        return self.dropout(y).to(x.dtype)

    def allocate_cache(self, batch, max_len, device=None, dtype=None) -> KVCache:
        device, _ = device_dtype(self, device, dtype)
        return KVCache(torch.zeros(batch, self.d_model, max_len, device=device, dtype=torch.float32))

    def prefill(self, x: torch.Tensor, cache: KVCache, rows: slice = ALL_ROWS) -> torch.Tensor:
        cache.fill(rows, x.float().transpose(1, 2))
        return self.forward(x)

    def _step_filter(self, t: int) -> torch.Tensor:
        """filter(t), memoised (at a power-of-two length) while gradients are off."""
        if torch.is_grad_enabled():
            return self.filter(t)
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if self._filter_cache is None or self._filter_cache[0] != key or self._filter_cache[1].shape[-1] < t:
            self._filter_cache = (key, self.filter(max(64, 1 << (t - 1).bit_length())))
        return self._filter_cache[1][:, :t]

    def step(self, x_t: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """x_t [B, H] -> y_t = sum_s h_s x_{t-s} + D x_t; x_t joins the history."""
        if cache.device_pos is not None:
            raise ValueError("Hyena's step reads its history up to a host-side length: it cannot be graph-captured")
        u = x_t.float()
        hist, = cache.append(u[:, :, None])                         # [B, H, t+1], oldest first
        h = self._step_filter(hist.shape[-1])                      # [H, t+1]
        y = (hist * h.flip(-1)).sum(-1) + self.D.float() * u
        return self.dropout(y).to(x_t.dtype)
