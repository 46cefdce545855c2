"""The contract every sequence layer (and every block built from one) follows.

    y = layer(x)                                     # x, y: [batch, L, d_model]; causal
    cache = layer.allocate_cache(batch, max_len)     # inference state for up to max_len tokens, preallocated
    y = layer.prefill(x, cache)                      # forward(x), leaving in cache what stepping through x would
    y_t = layer.step(x_t, cache)                     # x_t, y_t: [batch, d_model]; one token; agrees with forward()

A cache is a tensor, a tuple of caches, or a KVCache (attention's keys and values, Hyena's past inputs), and
prefill() and step() write it in place: decoding allocates nothing per token, and a step can be captured in a
CUDA graph. prefill() starts the sequences over (what the cache held before is replaced); its `rows` says which
batch rows of the cache x is (a prompt prefilled a few rows at a time bounds the activations' memory).

Each layer also names the parameters that belong to the SSM (A, A_log, D, dt bias, S4's B/C/log_dt): they are
kept in fp32 and trained without weight decay, in their own optimizer group (see `ssm_parameter_names`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

State = Any

# Parameters whose attribute name is in this set, on any module, go to the "ssm" optimizer group: no weight
# decay, kept fp32 under autocast (autocast only casts activations; parameters stay in their own dtype).
SSM_PARAM_NAMES = frozenset({"A", "A_log", "A_real", "A_imag", "log_A_real", "D", "dt_bias", "log_dt",
                             "B", "C", "P", "Lambda_re", "Lambda_im", "inv_dt"})


ALL_ROWS = slice(None)


class SequenceLayer(nn.Module):
    """Base class: subclasses implement forward, allocate_cache, prefill and step."""

    def allocate_cache(self, batch: int, max_len: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> State:
        """device and dtype default to those of the module's parameters (the activations' dtype)."""
        return None

    def prefill(self, x: torch.Tensor, cache: State, rows: slice = ALL_ROWS) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement prefill()")

    def step(self, x_t: torch.Tensor, cache: State) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")


def device_dtype(module: nn.Module, device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """allocate_cache's defaults: the device and dtype of the module's first parameter."""
    p = next(module.parameters())
    return (p.device if device is None else torch.device(device)), (p.dtype if dtype is None else dtype)


class KVCache:
    """Per-position buffers preallocated for max_len positions and written in place, with a length counter: an
    attention layer's keys and values ([batch, heads, max_len, head_dim] each), or Hyena's past inputs
    ([batch, H, max_len]); the position is the third axis. Preallocating means a decode step neither copies nor
    regrows the cache, and that the memory it takes is known at allocation.

    Under a CUDA graph a step cannot use the host-side `length` (every replay would write where the captured step
    did): a language model decoding with `graph_safe` sets `device_pos` (Long[1], the position the next token
    goes to) and `device_mask` (Bool[1, 1, 1, max_len], the positions filled once it is written), shared by all
    its caches, and advances them on the device once per token."""

    def __init__(self, *buffers: torch.Tensor):
        self.buffers = buffers
        self.max_len = buffers[0].shape[2]
        self.length = 0
        self.positions = torch.arange(self.max_len, device=buffers[0].device)  # sliced for rotary positions
        self.device_pos: torch.Tensor | None = None
        self.device_mask: torch.Tensor | None = None

    def _check(self, n: int) -> None:
        if self.length + n > self.max_len:
            raise ValueError(f"cache full: {self.length} positions filled, {n} more exceed max_len={self.max_len}; "
                             "allocate the cache with a larger max_len")

    def fill(self, rows: slice, *xs: torch.Tensor) -> None:
        """Prefill: xs[i] ([rows, C, T, ...]) become positions [0, T) of rows `rows`; length becomes T."""
        self.length = 0
        self._check(xs[0].shape[2])
        for buf, x in zip(self.buffers, xs):
            buf[rows, :, : x.shape[2]] = x
        self.length = xs[0].shape[2]

    def append(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One position (xs[i]: [batch, C, 1, ...]) written at `length`; returns the filled part of each buffer,
        this position included."""
        self._check(1)
        t = self.length
        for buf, x in zip(self.buffers, xs):
            buf[:, :, t] = x[:, :, 0]
        self.length = t + 1
        return tuple(buf[:, :, : t + 1] for buf in self.buffers)

    def append_at_device_pos(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """append() at `device_pos`, for a step captured in a CUDA graph; returns the whole buffers (attend under
        `device_mask`). `length` still counts the calls, but not the replays."""
        for buf, x in zip(self.buffers, xs):
            buf.index_copy_(2, self.device_pos, x.to(buf.dtype))
        self.length += 1
        return self.buffers

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers)


def ssm_parameter_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that belong to the SSM group (no weight decay, fp32)."""
    names = set()
    for full_name, _ in model.named_parameters():
        if full_name.rsplit(".", 1)[-1] in SSM_PARAM_NAMES or getattr(_, "_ssm_param", False):
            names.add(full_name)
    return names


def mark_ssm(param: nn.Parameter) -> nn.Parameter:
    """Tag a parameter with another name as an SSM parameter."""
    param._ssm_param = True
    return param
