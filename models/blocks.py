"""Residual blocks around a sequence layer. Each is x + f(norm(x)) and follows the layer contract.

Table 1 of the Mamba paper crosses the block ("arch") with its inner layer ("layer"):
- NoGateBlock: the layer alone, then GELU and an output projection (the original S4 block).
- H3Block: q, k, v projections; k through a shift SSM; the inner layer mixes k*v along the sequence; the output
  is gated by q (Fu et al. 2023). With an S4 layer this is H3; with a Hyena filter it is order-2 Hyena.
- MambaBlock: expand to (x, z); causal depthwise conv; SiLU; inner layer; gate by SiLU(z); project back.
- TransformerBlock: the layer (attention, or an RNN for the RNN baselines) then an MLP, each pre-normed.

Each block follows the layer contract of layers/base.py, inference included: allocate_cache(batch, max_len)
returns its inner layer's cache (with the Mamba block's conv inputs, the H3 block's shift state), which
prefill(x, cache) fills from a parallel forward and step(x_t, cache) advances in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.kernels.causal_conv1d import causal_conv1d_fn, causal_conv1d_update
from ssmbench.kernels.common.options import option

from .layer_registry import build_layer
from .layers.base import ALL_ROWS, SequenceLayer, device_dtype
from .layers.s6 import decode_backend, rows_as_batched
from .layers.shift import ShiftSSM

NORMS = ("rmsnorm", "layernorm")


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (same parameters, same state_dict), computed by the Triton kernel (kernels/rmsnorm/) on CUDA when
    SSMBENCH_RMSNORM=triton, the default (kernels/common/options.py): PyTorch's kernel is built for wide rows and
    took 0.2 ms a call on Table 1's 64-wide ones (results/training/README.md). Not under torch.func.vmap (the
    batched ensemble): the Triton Function has no vmap rule, so there it is PyTorch's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and option("SSMBENCH_RMSNORM") == "triton" and not torch._C._functorch.is_batchedtensor(x):
            from ssmbench.kernels.rmsnorm import rms_norm
            return rms_norm(x, self.weight, self.eps, backend="triton")
        return super().forward(x)


def make_norm(kind: str, d: int) -> nn.Module:
    if kind == "rmsnorm":
        return RMSNorm(d, eps=1e-5)
    if kind == "layernorm":
        return nn.LayerNorm(d)
    raise ValueError(f"model.norm={kind!r} is not one of {NORMS}")


class Block(SequenceLayer):
    """x + mix(norm(x)); subclasses define mix, allocate_cache, mix_prefill and mix_step."""

    def __init__(self, d_model: int, norm: str):
        super().__init__()
        self.norm = make_norm(norm, d_model)

    def forward(self, x):
        return x + self.mix(self.norm(x))

    def prefill(self, x, cache, rows: slice = ALL_ROWS):
        return x + self.mix_prefill(self.norm(x), cache, rows)

    def step(self, x_t, cache):
        return x_t + self.mix_step(self.norm(x_t), cache)


class NoGateBlock(Block):
    def __init__(self, d_model, layer, layer_options, norm="rmsnorm", **_):
        super().__init__(d_model, norm)
        self.layer = build_layer(layer, d_model, layer_options)
        self.out = nn.Linear(d_model, d_model)

    def mix(self, x):
        return self.out(F.gelu(self.layer(x)))

    def allocate_cache(self, batch, max_len, device=None, dtype=None):
        return self.layer.allocate_cache(batch, max_len, *device_dtype(self, device, dtype))

    def mix_prefill(self, x, cache, rows=ALL_ROWS):
        return self.out(F.gelu(self.layer.prefill(x, cache, rows)))

    def mix_step(self, x_t, cache):
        return self.out(F.gelu(self.layer.step(x_t, cache)))


class H3Block(Block):
    def __init__(self, d_model, layer, layer_options, norm="rmsnorm", shift_d_state=4, **_):
        super().__init__(d_model, norm)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.shift = ShiftSSM(d_model, d_state=shift_d_state)
        self.layer = build_layer(layer, d_model, layer_options)
        self.out = nn.Linear(d_model, d_model)

    def mix(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(q * self.layer(self.shift(k) * v))

    def allocate_cache(self, batch, max_len, device=None, dtype=None):
        device, dtype = device_dtype(self, device, dtype)
        return (self.shift.allocate_cache(batch, max_len, device, dtype),
                self.layer.allocate_cache(batch, max_len, device, dtype))

    def mix_prefill(self, x, cache, rows=ALL_ROWS):
        shift_cache, layer_cache = cache
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(q * self.layer.prefill(self.shift.prefill(k, shift_cache, rows) * v, layer_cache, rows))

    def mix_step(self, x_t, cache):
        shift_cache, layer_cache = cache
        q, k, v = self.qkv(x_t).chunk(3, dim=-1)
        return self.out(q * self.layer.step(self.shift.step(k, shift_cache) * v, layer_cache))


class MambaBlock(Block):
    def __init__(self, d_model, layer, layer_options, norm="rmsnorm", expand=2, d_conv=4, **_):
        super().__init__(d_model, norm)
        self.d_inner = expand * d_model
        self.d_conv = d_conv
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.layer = build_layer(layer, self.d_inner, layer_options)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # S6 takes the gate inside its scan (fused: one pass over y); other layers are gated here.
        self.fuse_gate = getattr(self.layer, "fuses_gate", False)

    # "auto": the channel-major path (mix_channel_major) on CUDA for S6, and for an LTI layer (S4, Hyena) when
    # SSMBENCH_MAMBA_LTI=channel (kernels/common/options.py); the token-major one elsewhere. "channel"/"token"
    # force one (tests compare them).
    layout: str = "auto"

    def _conv(self, x):
        """x: [B, L, E] -> silu(causal depthwise conv(x)), [B, L, E]."""
        L = x.shape[1]
        return F.silu(self.conv(x.transpose(1, 2))[..., :L].transpose(1, 2))

    def _channel_major(self, x) -> bool:
        if self.layout not in ("auto", "channel", "token"):
            raise ValueError(f"MambaBlock.layout={self.layout!r} is not one of ('auto', 'channel', 'token')")
        if self.layout == "token" or not hasattr(self.layer, "forward_channel_major"):
            return False
        if self.layout == "channel":
            return True
        if self.fuse_gate:
            return x.is_cuda
        # An LTI layer: PyTorch's depthwise conv and the transposes around it are slow on CUDA at Table 1's shape;
        # the Triton conv of the channel-major path has no vmap rule, so not under the batched ensemble.
        return (x.is_cuda and option("SSMBENCH_MAMBA_LTI") == "channel"
                and not torch._C._functorch.is_batchedtensor(x))

    def mix(self, x):
        if self._channel_major(x):
            return self.mix_channel_major(x)[0]
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = self._conv(x)
        y = self.layer(x, z=z) if self.fuse_gate else self.layer(x) * F.silu(z)
        return self.out_proj(y)

    def mix_channel_major(self, x, return_state: bool = False):
        """x [B, L, d] -> (out [B, L, d], (conv inputs of the last d_conv steps [B, E, d_conv], last SSM state
        [B, E, N]) or None). Official Mamba's layout: every projection is one GEMM against the activations as
        [channels, B * L] (x [B, L, d] read as a transposed operand), so the conv, the SSM projections and the scan
        see [B, E, L] views whose rows are contiguous in L (memory order [E, B, L]), and out_proj reads y back as a
        transposed operand. The weight gradients stay single GEMMs. The token-major path instead transposes x, z,
        delta, B, C and y around the scan; in an H200 prefill those strided copies took as long as the scan
        itself (results/generation/prefill_profile*.md)."""
        Bsz, L, d = x.shape
        E = self.d_inner
        xz = self.in_proj.weight @ x.reshape(Bsz * L, d).t()  # [2E, B * L]
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None].to(xz.dtype)
        xi, z = rows_as_batched(xz[:E], Bsz), rows_as_batched(xz[E:], Bsz)  # [B, E, L] views
        # the conv follows the scan: its table row's step backend (Triton for "triton", "auto": Triton on CUDA)
        xc = causal_conv1d_fn(xi, self.conv.weight[:, 0], self.conv.bias, "silu",
                              backend=decode_backend(getattr(self.layer, "scan_backend", "auto")))
        y, last = self.layer.forward_channel_major(xc, z, return_last_state=return_state)
        y2 = y.transpose(0, 1).reshape(E, Bsz * L)  # a view when y kept xc's [E, B, L] order
        out = F.linear(y2.t(), self.out_proj.weight, self.out_proj.bias).view(Bsz, L, -1)
        if not return_state:
            return out, None
        return out, (self._conv_tail(xi), last)

    def _conv_tail(self, xi):
        """The conv's inputs [B, E, L] -> the conv state a step continues from: the last d_conv of them."""
        tail = xi[:, :, -self.d_conv:]
        if tail.shape[-1] < self.d_conv:  # a prompt shorter than the conv: zeros before it
            tail = F.pad(tail, (self.d_conv - tail.shape[-1], 0))
        return tail

    def allocate_cache(self, batch, max_len, device=None, dtype=None):
        """(conv state [batch, E, d_conv]: the conv's last inputs, oldest first; the inner layer's cache)."""
        device, dtype = device_dtype(self, device, dtype)
        conv_state = torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype)
        return (conv_state, self.layer.allocate_cache(batch, max_len, device, dtype))

    def mix_prefill(self, x, cache, rows=ALL_ROWS):
        conv_state, layer_cache = cache
        # the scan's own layout, and it hands back the state the steps continue from (S6 only: an LTI layer's
        # channel-major forward has no state to hand back)
        if self.fuse_gate and self._channel_major(x):
            y, (tail, last) = self.mix_channel_major(x, return_state=True)
            conv_state[rows] = tail
            layer_cache[rows] = last
            return y
        x, z = self.in_proj(x).chunk(2, dim=-1)
        conv_state[rows] = self._conv_tail(x.transpose(1, 2))
        x = self._conv(x)
        if self.fuse_gate:
            return self.out_proj(self.layer.prefill(x, layer_cache, rows, z=z))
        return self.out_proj(self.layer.prefill(x, layer_cache, rows) * F.silu(z))

    def mix_step(self, x_t, cache):
        """One token through the block's mixer, advancing the cache in place: the fused decode kernels on CUDA
        (causal_conv1d_update, and S6's selective_state_update), the plain PyTorch steps elsewhere."""
        conv_state, layer_cache = cache
        x, z = self.in_proj(x_t).chunk(2, dim=-1)
        # The conv state holds the last d_conv inputs, oldest first; the update shifts x in at the end. A scan whose
        # step is the plain reference ("reference", "torch") keeps it plain; otherwise the fastest that runs here.
        step = decode_backend(getattr(self.layer, "scan_backend", "auto"))
        backend = "reference" if step == "reference" else "auto"
        x = causal_conv1d_update(x, conv_state, self.conv.weight[:, 0], self.conv.bias, "silu", backend=backend)
        if self.fuse_gate:
            return self.out_proj(self.layer.step(x, layer_cache, z_t=z))
        return self.out_proj(self.layer.step(x, layer_cache) * F.silu(z))


class MLP(nn.Module):
    def __init__(self, d_model, ratio):
        super().__init__()
        self.up = nn.Linear(d_model, ratio * d_model)
        self.down = nn.Linear(ratio * d_model, d_model)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class TransformerBlock(SequenceLayer):
    """x + layer(norm(x)), then x + MLP(norm(x)). The layer is attention, or an RNN for the RNN baseline."""

    def __init__(self, d_model, layer, layer_options, norm="rmsnorm", mlp_ratio=4, **_):
        super().__init__()
        self.norm1, self.norm2 = make_norm(norm, d_model), make_norm(norm, d_model)
        self.layer = build_layer(layer, d_model, layer_options)
        self.mlp = MLP(d_model, mlp_ratio) if mlp_ratio > 0 else None

    def forward(self, x):
        return self._mlp(x + self.layer(self.norm1(x)))

    def allocate_cache(self, batch, max_len, device=None, dtype=None):
        return self.layer.allocate_cache(batch, max_len, *device_dtype(self, device, dtype))

    def _mlp(self, x):
        return x if self.mlp is None else x + self.mlp(self.norm2(x))

    def prefill(self, x, cache, rows: slice = ALL_ROWS):
        return self._mlp(x + self.layer.prefill(self.norm1(x), cache, rows))

    def step(self, x_t, cache):
        return self._mlp(x_t + self.layer.step(self.norm1(x_t), cache))
