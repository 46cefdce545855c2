"""The backends of RMSNorm: one row each (see kernels/common/dispatch.py for the fields)."""

from __future__ import annotations

from ..common.dispatch import Backend, BackendTable, triton_reason

# "auto" is the reference (torch) everywhere, CUDA included, for now: the Triton kernel is written for the many
# narrow rows of the Mamba models (d_model 64, where torch's norm kernels sit far above the memory floor) but has
# not been measured on a GPU yet (scripts/bench_rmsnorm.py). Give it a "cuda" priority below 0 once it wins there.
# Until then it is used only when asked for by name.
RMSNORM_TABLE = BackendTable("rms norm", __package__, {
    "reference": Backend(".reference:rms_norm_ref", auto={"*": 0}, profile_name="torch"),
    "triton": Backend(".triton_rmsnorm:rms_norm_triton", triton_reason, auto={}, fp32_only=True),
})
