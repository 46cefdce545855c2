"""Causal depthwise conv1d (width <= 4 in Mamba; any width works), optional SiLU: reference and Triton.

    y = causal_conv1d_fn(x [batch, dim, L], weight [dim, W], bias [dim] or None, activation=None | "silu",
                         backend="auto" | "reference" | "triton")
    y_t = causal_conv1d_update(x_t [batch, dim], conv_state [batch, dim, W], weight, bias, activation, backend)

conv_state holds the last W inputs (oldest first) and is updated in place. "auto" takes Triton on CUDA and the
reference elsewhere; asking for "triton" where it cannot run raises BackendUnavailable with the reason.
"""

from __future__ import annotations

import torch

from ..selective_scan.backends import BackendUnavailable, resolve_kernel_backend
from .reference import causal_conv1d_ref, causal_conv1d_update_ref

CONV_BACKENDS = ("reference", "triton")


def resolve_conv_backend(backend: str, device: torch.device | str) -> str:
    return resolve_kernel_backend("causal conv1d", backend, device)


def causal_conv1d_fn(x, weight, bias=None, activation=None, backend="auto"):
    if resolve_conv_backend(backend, x.device) == "triton":
        from .triton_conv1d import causal_conv1d_triton
        return causal_conv1d_triton(x, weight, bias, activation)
    return causal_conv1d_ref(x, weight, bias, activation)


def causal_conv1d_update(x_t, conv_state, weight, bias=None, activation=None, backend="auto"):
    if resolve_conv_backend(backend, x_t.device) == "triton":
        from .triton_conv1d import causal_conv1d_update_triton
        return causal_conv1d_update_triton(x_t, conv_state, weight, bias, activation)
    return causal_conv1d_update_ref(x_t, conv_state, weight, bias, activation)


__all__ = ["BackendUnavailable", "CONV_BACKENDS", "causal_conv1d_fn", "causal_conv1d_ref", "causal_conv1d_update",
           "causal_conv1d_update_ref", "resolve_conv_backend"]
