"""The backends of the causal depthwise conv1d: one row each (see kernels/common/dispatch.py for the fields). Two
entries per backend: "fn" (the whole sequence, with autograd) and "update" (one decode step, in place)."""

from __future__ import annotations

from ..common.dispatch import Backend, BackendTable, triton_reason

# "auto": Triton on CUDA, the reference elsewhere. The profiler's rows call the reference "torch" (F.conv1d).
CONV_TABLE = BackendTable("causal conv1d", __package__, {
    "reference": Backend({"fn": ".reference:causal_conv1d_ref", "update": ".reference:causal_conv1d_update_ref"},
                         auto={"cuda": 1, "*": 0}, profile_rank=80, profile_name="torch"),
    "triton": Backend({"fn": ".triton_conv1d:causal_conv1d_triton",
                       "update": ".triton_conv1d:causal_conv1d_update_triton"},
                      triton_reason, auto={"cuda": 0}, profile_rank=70),
})
