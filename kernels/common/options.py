"""Implementation choices of a training step that do not change what is computed, only how fast: read from
environment variables so that they never enter a run's config (or its run id: a run paused under one choice
continues under another), and recorded in every row (`kernel_options`) so a timing is never read without them.

    SSMBENCH_CONV_BWD = fused | two_pass     the causal conv1d backward (kernels/causal_conv1d/triton_conv1d.py)
    SSMBENCH_RMSNORM  = torch | triton       the blocks' RMSNorm on CUDA (models/blocks.py; kernels/rmsnorm/)
    SSMBENCH_EMBED    = gather | onehot      the token embedding: nn.Embedding, or a one-hot GEMM whose backward
                                             is a GEMM too (models/lm.py; for small vocabularies)
    SSMBENCH_SHIFT    = torch | triton       H3's shift SSM on CUDA: F.conv1d on a padded copy, or the Triton causal
                                             conv1d on x in place (models/layers/shift.py)

The defaults are the paths measured on the H200 so far. The alternatives give the same numbers within float
rounding (tests/kernels/test_causal_conv1d.py, tests/models/test_kernel_options.py); `gpu_profile_all.sh`'s
stage step_options times them inside the real step.
"""

from __future__ import annotations

import os

OPTIONS = {
    "SSMBENCH_CONV_BWD": ("fused", "two_pass"),
    "SSMBENCH_RMSNORM": ("torch", "triton"),
    "SSMBENCH_EMBED": ("gather", "onehot"),
    "SSMBENCH_SHIFT": ("torch", "triton"),
}


def option(name: str) -> str:
    """The chosen value of one option (its first value by default); a ValueError names a bad one."""
    allowed = OPTIONS[name]
    value = os.environ.get(name, allowed[0])
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")
    return value


def describe() -> str:
    """All options as one row field: 'conv_bwd=fused,rmsnorm=torch,embed=gather,shift=torch'."""
    return _describe({name: option(name) for name in OPTIONS})


def _describe(chosen: dict[str, str]) -> str:
    return ",".join(f"{name.removeprefix('SSMBENCH_').lower()}={value}" for name, value in chosen.items())


DEFAULT = _describe({name: values[0] for name, values in OPTIONS.items()})  # what every run before them used
