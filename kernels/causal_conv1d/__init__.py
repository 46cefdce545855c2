"""Causal depthwise conv1d (width <= 4 in Mamba; any width works), optional SiLU: reference and Triton.

    y = causal_conv1d_fn(x [batch, dim, L], weight [dim, W], bias [dim] or None, activation=None | "silu",
                         backend="auto" | "reference" | "triton")
    y_t = causal_conv1d_update(x_t [batch, dim], conv_state [batch, dim, W], weight, bias, activation, backend)

conv_state holds the last W inputs (oldest first) and is updated in place. The backends are the rows of CONV_TABLE
(table.py): "auto" takes Triton on CUDA and the reference elsewhere; asking for "triton" where it cannot run raises
BackendUnavailable with the reason.
"""

from __future__ import annotations

import torch

from ..common.dispatch import BackendUnavailable
from .reference import causal_conv1d_ref, causal_conv1d_update_ref
from .table import CONV_TABLE


def __getattr__(name: str):
    if name == "CONV_BACKENDS":  # the table's names now (a row added at run time included)
        return CONV_TABLE.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_conv_backend(backend: str, device: torch.device | str) -> str:
    return CONV_TABLE.resolve(backend, device)


def causal_conv1d_fn(x, weight, bias=None, activation=None, backend="auto"):
    return CONV_TABLE.impl(resolve_conv_backend(backend, x.device), "fn")(x, weight, bias, activation)


def causal_conv1d_update(x_t, conv_state, weight, bias=None, activation=None, backend="auto"):
    impl = CONV_TABLE.impl(resolve_conv_backend(backend, x_t.device), "update")
    return impl(x_t, conv_state, weight, bias, activation)


__all__ = ["BackendUnavailable", "CONV_BACKENDS", "CONV_TABLE", "causal_conv1d_fn", "causal_conv1d_ref",
           "causal_conv1d_update", "causal_conv1d_update_ref", "resolve_conv_backend"]
