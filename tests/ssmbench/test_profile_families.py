"""scripts/profile_train_step.py sorts kernels into families; names as the H200's profiler printed them (session 8)."""

import pytest

from .helpers import load_script


@pytest.fixture(scope="module")
def family():
    return load_script("profile_train_step").family


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


def test_an_eager_op_and_the_kernel_it_launched_count_once():
    """In an eager step the aten op that launched a kernel reports that kernel's time as its own self device time
    too; summing both doubled the step (session 9's eager H3 profile: 28.6 ms for a 14.4 ms step)."""
    from types import SimpleNamespace

    import torch
    mod = load_script("profile_train_step")
    cpu, gpu = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    events = [SimpleNamespace(key="aten::copy_", count=2, device_type=cpu, self_device_time_total=300.0),
              SimpleNamespace(key="memcpy128", count=2, device_type=gpu, self_device_time_total=300.0),
              SimpleNamespace(key="scan_fwd_kernel", count=2, device_type=gpu, self_device_time_total=100.0)]
    prof = SimpleNamespace(key_averages=lambda: events)
    rows, families = mod.summarise(prof, cuda=True, steps=2)
    assert [r[0] for r in rows] == ["memcpy128", "scan_fwd_kernel"]
    assert sum(families.values()) == pytest.approx(0.2)  # (300 + 100) us over 2 steps
