"""Causal depthwise conv1d, the plain PyTorch ground truth.

    y = causal_conv1d_ref(x [batch, dim, L], weight [dim, W], bias [dim] or None, activation None | "silu")
    y_t = act(bias + sum_k weight[:, k] * x[:, :, t - (W - 1) + k])        (x before t = 0 counts as 0)

    y_t = causal_conv1d_update_ref(x_t [batch, dim], conv_state [batch, dim, S], weight, bias, activation)
conv_state holds the last S >= W inputs, oldest first; the step shifts it left by one, appends x_t (in place)
and applies the conv to its last W entries, so a sequence of updates equals causal_conv1d_ref.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _act(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation in (None, "identity"):
        return y
    if activation in ("silu", "swish"):
        return F.silu(y)
    raise ValueError(f"activation must be None or 'silu', got {activation!r}")


def causal_conv1d_ref(x, weight, bias=None, activation=None):
    dim, W = weight.shape
    L = x.shape[-1]
    y = F.conv1d(x, weight.to(x.dtype)[:, None, :], bias.to(x.dtype) if bias is not None else None,
                 padding=W - 1, groups=dim)[..., :L]
    return _act(y, activation)


def causal_conv1d_update_ref(x_t, conv_state, weight, bias=None, activation=None):
    W = weight.shape[1]
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x_t
    y = (conv_state[:, :, -W:].to(weight.dtype) * weight).sum(-1)
    if bias is not None:
        y = y + bias
    return _act(y, activation).to(x_t.dtype)
