"""Mamba block benchmarks: one forward+backward of a MambaBlock in each layout ("token": activations [B, L, E]
transposed around the scan; "channel": projections as GEMMs on [channels, B * L], official Mamba's layout, the
CUDA default). The GPU size (width 1024, L 2048, bf16 autocast, the Triton kernels) is marked gpu, and also
times the inference forward that a generation prefill runs."""

from __future__ import annotations

import pytest
import torch

from ssmbench.models.blocks import MambaBlock

from .conftest import synced


def make_block(d_model, layout, device):
    torch.manual_seed(0)
    blk = MambaBlock(d_model, "s6", {"d_state": 16}).to(device)
    blk.layout = layout
    return blk


def fwdbwd(blk, x, autocast):
    def fn():
        blk.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            y = blk(x)
        y.float().square().mean().backward()
    return fn


@pytest.mark.parametrize("layout", ["token", "channel"])
def test_cpu_block_fwdbwd(benchmark, layout):
    blk = make_block(32, layout, "cpu")
    x = torch.randn(4, 128, 32, requires_grad=True)
    fn = fwdbwd(blk, x, autocast=False)
    fn()
    benchmark(fn)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["token", "channel"])
@pytest.mark.parametrize("pas", ["fwd_inference", "fwdbwd_autocast"])
def test_gpu_block(benchmark, layout, pas):
    blk = make_block(1024, layout, "cuda")
    if pas == "fwd_inference":
        blk = blk.to(torch.bfloat16).requires_grad_(False)
        x = torch.randn(8, 2048, 1024, device="cuda", dtype=torch.bfloat16)

        def fn():
            with torch.inference_mode():
                blk(x)
    else:
        x = torch.randn(8, 2048, 1024, device="cuda", requires_grad=True)
        fn = fwdbwd(blk, x, autocast=True)
    fn = synced(fn, "cuda")
    fn()
    benchmark(fn)
