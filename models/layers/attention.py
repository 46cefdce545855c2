"""Causal multi-head self-attention with rotary (RoPE) or xPos positions and a preallocated KV cache for step().

The attention itself goes through `flash_attn` when it is importable and the inputs are CUDA fp16/bf16, else
through PyTorch's scaled_dot_product_attention with a selectable backend (flash = FlashAttention-2, cudnn,
efficient, math; "auto" lets PyTorch choose). Absolute positions (the paper's MHA-Abs) are added at the
embedding by the language model (`model.pos_emb`), so this layer takes pos="none" for them.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import ALL_ROWS, KVCache, SequenceLayer, device_dtype

POSITIONS = ("none", "rope", "xpos")
SDPA_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")


@dataclass
class AttentionOptions:
    n_heads: int = 4
    pos: str = "rope"  # none | rope | xpos
    rope_base: float = 10000.0
    xpos_scale_base: float = 512.0
    sdpa_backend: str = "auto"  # auto | flash | cudnn | efficient | math
    use_flash_attn: bool = True  # the flash_attn package, when importable and the inputs allow it
    dropout: float = 0.0


def _flash_attn_func():
    try:
        from flash_attn import flash_attn_func
        return flash_attn_func
    except Exception:
        return None


def sdpa_context(backend: str):
    if backend == "auto":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if backend == "auto_without_cudnn":  # (internal: the batched ensemble's choice on CUDA, Attention._attend)
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    kind = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[backend]
    return sdpa_kernel([kind])


class Rotary(nn.Module):
    """RoPE, and xPos (RoPE times a per-frequency exponential decay of the query-key distance)."""

    def __init__(self, head_dim: int, base: float, xpos: bool, scale_base: float):
        super().__init__()
        self.register_buffer("inv_freq", base ** (-torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)
        self.xpos = xpos
        self.scale_base = scale_base
        # xPos: zeta_i in (0, 1); q is scaled by zeta^(n / scale_base), k by zeta^(-n / scale_base), so q.k decays
        # as zeta^((m - n) / scale_base) with the distance.
        self.register_buffer("zeta", (torch.arange(0, head_dim, 2).float() + 0.4 * head_dim) / (1.4 * head_dim),
                             persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        """q, k: [B, H, T, hd]; positions: Long[T]."""
        angles = positions.float()[:, None] * self.inv_freq[None]  # [T, hd/2]
        cos, sin = angles.cos(), angles.sin()
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if self.xpos:
            # Exponents grow with |n|; fp32 holds zeta^(-n/512) up to n ~ 36k, past which xPos itself is undefined.
            scale = self.zeta[None] ** (positions.float()[:, None] / self.scale_base)  # [T, hd/2]
            scale = torch.cat([scale, scale], dim=-1)
            q, k = q * scale.to(q.dtype), k / scale.to(k.dtype)
        return q, k


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


class Attention(SequenceLayer):
    def __init__(self, d_model: int, n_heads: int = 4, pos: str = "rope", rope_base: float = 10000.0,
                 xpos_scale_base: float = 512.0, sdpa_backend: str = "auto", use_flash_attn: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if n_heads <= 0 or d_model % n_heads:
            raise ValueError(f"model.layer.n_heads={n_heads} must be positive and divide model.d_model={d_model}")
        if pos not in POSITIONS:
            raise ValueError(f"model.layer.pos={pos!r} is not one of {POSITIONS}")
        if sdpa_backend not in SDPA_BACKENDS:
            raise ValueError(f"model.layer.sdpa_backend={sdpa_backend!r} is not one of {SDPA_BACKENDS}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        if pos != "none" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim; d_model/n_heads = {self.head_dim}")
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.rotary = None if pos == "none" else Rotary(self.head_dim, rope_base, pos == "xpos", xpos_scale_base)
        self.sdpa_backend = sdpa_backend
        self.use_flash_attn = use_flash_attn
        self.dropout = dropout

    def _heads(self, x: torch.Tensor):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v  # each [B, H, T, hd]

    def uses_flash_attn(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether attention runs through the flash_attn package for activations of this device and dtype."""
        return (self.use_flash_attn and torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16)
                and _flash_attn_func() is not None)

    def _attend(self, q, k, v, causal: bool):
        p = self.dropout if self.training else 0.0
        if self.uses_flash_attn(q.device, q.dtype):
            o = _flash_attn_func()(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=p, causal=causal)
            return o.transpose(1, 2)
        backend = self.sdpa_backend
        if backend == "auto" and q.is_cuda and torch._C._functorch.is_batchedtensor(q):
            # Under torch.func.vmap (the batched ensemble) on the H200 every Transformer member's loss went
            # non-finite (trainbench, c0e240b) where the same members alone, and the ensemble on the CPU, train.
            # cuDNN attention, PyTorch's default there, is the suspect (its backward has known NaN bugs on
            # H100/H200 in torch 2.11, pytorch#196678), so the batched path leaves it out; a GPU test
            # (test_ensemble.py) checks the members against their solo runs.
            backend = "auto_without_cudnn"
        with sdpa_context(backend):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x, None)

    def allocate_cache(self, batch, max_len, device=None, dtype=None) -> KVCache:
        device, dtype = device_dtype(self, device, dtype)
        shape = (batch, self.n_heads, max_len, self.head_dim)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def prefill(self, x: torch.Tensor, cache: KVCache | None, rows: slice = ALL_ROWS) -> torch.Tensor:
        """forward(x), writing K (after the positions) and V into the cache (forward itself passes none)."""
        B, T, D = x.shape
        q, k, v = self._heads(x)
        if self.rotary is not None:
            q, k = self.rotary(q, k, torch.arange(T, device=x.device))
        if cache is not None:
            cache.fill(rows, k, v)
        o = self._attend(q, k, v, causal=True)
        return self.out(o.transpose(1, 2).reshape(B, T, D))

    def step(self, x_t: torch.Tensor, cache: KVCache) -> torch.Tensor:
        B, D = x_t.shape
        q, k, v = self._heads(x_t[:, None])
        graphed = cache.device_pos is not None
        pos = cache.device_pos if graphed else cache.positions[cache.length: cache.length + 1]
        if self.rotary is not None:
            q, k = self.rotary(q, k, pos)
        if graphed:
            kc, vc = cache.append_at_device_pos(k, v)
            # The whole cache under the mask of its filled part (flash kernels take no mask, so plain SDPA).
            o = F.scaled_dot_product_attention(q, kc, vc, attn_mask=cache.device_mask)
        else:
            kc, vc = cache.append(k, v)
            # The query attends to every filled position (all are in its past): no causal mask, so SDPA may take
            # its flash kernel.
            o = self._attend(q, kc.to(q.dtype), vc.to(q.dtype), causal=False)
        return self.out(o.reshape(B, D))
