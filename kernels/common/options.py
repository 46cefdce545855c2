"""Implementation choices of a training step that do not change what is computed, only how fast: read from
environment variables so that they never enter a run's config (or its run id: a run paused under one choice
continues under another), and recorded in every row (`kernel_options`) so a timing is never read without them.

    SSMBENCH_CONV_BWD = two_pass | fused     the causal conv1d backward (kernels/causal_conv1d/triton_conv1d.py)
    SSMBENCH_RMSNORM  = triton | torch       the blocks' RMSNorm on CUDA (models/blocks.py; kernels/rmsnorm/)
    SSMBENCH_EMBED    = onehot | gather      the token embedding: a one-hot GEMM whose backward is a GEMM too, or
                                             nn.Embedding (models/lm.py; the one-hot path for small vocabularies)
    SSMBENCH_SHIFT    = triton | torch       H3's shift SSM on CUDA: the Triton causal conv1d on x in place, or
                                             F.conv1d on a padded copy (models/layers/shift.py)
    SSMBENCH_FFTCONV  = bhl | blh            S4's and Hyena's FFT convolution: on one transposed, zero-padded
                                             [B, H, 2L] copy, or along the time axis of [B, L, H] as it comes
                                             (models/layers/fftconv.py)
    SSMBENCH_MAMBA_LTI = channel | token     the Mamba block around an LTI layer (S4, Hyena) on CUDA: channel-major
                                             as around S6 (projections as GEMMs on [channels, B * L], the Triton
                                             conv, the FFT conv on [B, E, L] rows; models/blocks.py) or token-major
                                             (PyTorch's depthwise conv, the layer on [B, L, E])

The first value of each is the default: the faster path inside the graphed Table 1 step on the H200 (stage
step_options of `gpu_profile_all.sh`: session 9 for the first four, session 10 for the FFT layout, session 11 for
the Mamba block's layout around LTI layers; the times are in results/training/README.md). LEGACY is what every run
trained with before session 9. Every choice gives the same numbers within float rounding
(tests/kernels/test_causal_conv1d.py, tests/models/test_kernel_options.py, tests/models/test_fftconv.py,
tests/models/test_mamba_lti_layout.py).
"""

from __future__ import annotations

import os

OPTIONS = {
    "SSMBENCH_CONV_BWD": ("two_pass", "fused"),
    "SSMBENCH_RMSNORM": ("triton", "torch"),
    "SSMBENCH_EMBED": ("onehot", "gather"),
    "SSMBENCH_SHIFT": ("triton", "torch"),
    "SSMBENCH_FFTCONV": ("bhl", "blh"),
    "SSMBENCH_MAMBA_LTI": ("channel", "token"),
}
# What every training call before session 9 used (and what a checkpoint without the field trained under).
_LEGACY = {"SSMBENCH_CONV_BWD": "fused", "SSMBENCH_RMSNORM": "torch", "SSMBENCH_EMBED": "gather",
           "SSMBENCH_SHIFT": "torch", "SSMBENCH_FFTCONV": "blh", "SSMBENCH_MAMBA_LTI": "token"}


def option(name: str) -> str:
    """The chosen value of one option (its first value by default); a ValueError names a bad one."""
    allowed = OPTIONS[name]
    value = os.environ.get(name, allowed[0])
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")
    return value


def describe() -> str:
    """All options as one row field: 'conv_bwd=two_pass,rmsnorm=triton,embed=onehot,shift=triton,fftconv=bhl,
    mamba_lti=channel'."""
    return _describe({name: option(name) for name in OPTIONS})


def _describe(chosen: dict[str, str]) -> str:
    return ",".join(f"{name.removeprefix('SSMBENCH_').lower()}={value}" for name, value in chosen.items())


def same(a: str, b: str) -> bool:
    """Whether two descriptions name the same choices, an option missing from one (recorded before it existed)
    counting as its legacy path."""
    return _parse(a) == _parse(b)


def _parse(description: str) -> dict[str, str]:
    chosen = {name.removeprefix("SSMBENCH_").lower(): value for name, value in _LEGACY.items()}
    chosen.update(item.split("=", 1) for item in description.split(",") if "=" in item)
    return chosen


DEFAULT = _describe({name: values[0] for name, values in OPTIONS.items()})
LEGACY = _describe(_LEGACY)
