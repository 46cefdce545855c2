"""scripts/profile_train_step.py sorts kernels into families; names as the H200's profiler printed them (session 8)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "profile_train_step.py"


@pytest.fixture(scope="module")
def family():
    spec = importlib.util.spec_from_file_location("profile_train_step", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.family


@pytest.mark.parametrize("name, expected", [
    ("scan_bwd_kernel", "selective scan (Triton)"),
    ("conv_bwd_kernel", "causal conv1d"),
    ("void at::native::(anonymous namespace)::conv_depthwise2d_backward_kernel<0, 1, float, i...", "causal conv1d"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float, true...",
     "norms (RMSNorm/LayerNorm)"),
    ("void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernelTemplate<float, floa...",
     "norms (RMSNorm/LayerNorm)"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<...FusedAdamMathFunctor...",
     "optimizer (AdamW, clipping)"),
    ("void at::native::(anonymous namespace)::krn_partial_segment_offset<long>(long*, long co...",
     "embedding backward (sort, segments)"),
    ("memcpy128", "layout copies / casts"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x64_1x4x1_cga1...", "attention (SDPA)"),
    ("nvjet_sm90_tst_192x128_64x5_1x2_h_bz_coopB_TNT", "GEMM (projections, head)"),
])
def test_kernels_land_in_their_family(family, name, expected):
    assert family(name) == expected
