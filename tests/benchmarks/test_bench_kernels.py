"""Kernel benchmarks: the profiler's ops (ssmbench.perf.kernels.OPS) at fixed shapes. CPU sizes run everywhere;
the GPU sizes (the Mamba paper's Figure 8 setting, batch 1, dim 1024, N 16, bf16) are marked gpu."""

from __future__ import annotations

import pytest
import torch

from ssmbench.perf import kernels as prof
from ssmbench.perf.timing import clear_grads

from .conftest import synced


def make_case(op, backend, batch, dim, L, N, dtype, device, head_dim=64):
    shape = prof.Shape(batch, dim, L, N, dtype, head_dim, 4, True)
    dev = torch.device(device)
    return prof.OPS[op].build(backend, shape, dev, torch.Generator(device=dev).manual_seed(0))


def run(benchmark, case, pas, device):
    if pas == "fwd":
        fn = case.fwd
    else:
        def fn():
            clear_grads(case.grads)
            case.fwdbwd()
    fn()  # compile / warm up outside the measurement
    benchmark(synced(fn, device))


CPU_CASES = [
    ("selective_scan", "torch", 2, 32, 256, 8),
    ("selective_scan", "reference", 2, 32, 64, 8),
    ("causal_conv1d", "torch", 2, 64, 1024, 0),
    ("s4_fft_conv", "torch_fft", 2, 64, 1024, 0),
    ("attention", "sdpa_math", 2, 64, 256, 0),
]


@pytest.mark.parametrize("pas", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("op, backend, batch, dim, L, N", CPU_CASES, ids=[f"{c[0]}-{c[1]}" for c in CPU_CASES])
def test_cpu(benchmark, op, backend, batch, dim, L, N, pas):
    run(benchmark, make_case(op, backend, batch, dim, L, max(N, 1), torch.float32, "cpu", head_dim=16), pas, "cpu")


def test_cpu_decode_step(benchmark):
    from ssmbench.kernels.selective_scan import selective_state_update
    B, D, N = 8, 256, 16
    g = torch.Generator().manual_seed(0)
    state = torch.randn(B, D, N, generator=g)
    x, dt, z = (torch.randn(B, D, generator=g) for _ in range(3))
    A = -torch.rand(D, N, generator=g)
    Bm, Cm = (torch.randn(B, N, generator=g) for _ in range(2))
    benchmark(lambda: selective_state_update(state, x, dt, A, Bm, Cm, torch.ones(D), z, torch.zeros(D), True,
                                             backend="reference"))


GPU_CASES = [
    ("selective_scan", "triton", 1, 1024, 4096),
    ("selective_scan", "triton", 1, 1024, 65536),
    ("selective_scan", "triton", 8, 1536, 4096),
    ("selective_scan", "torch", 1, 1024, 4096),
    ("causal_conv1d", "triton", 1, 2048, 65536),
    ("causal_conv1d", "torch", 1, 2048, 65536),
    ("s4_fft_conv", "torch_fft", 1, 1024, 65536),
    ("attention", "sdpa_flash", 1, 1024, 4096),
    ("attention", "sdpa_cudnn", 1, 1024, 4096),
]


@pytest.mark.gpu
@pytest.mark.parametrize("pas", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("op, backend, batch, dim, L", GPU_CASES,
                         ids=[f"{c[0]}-{c[1]}-B{c[2]}-D{c[3]}-L{c[4]}" for c in GPU_CASES])
def test_gpu(benchmark, op, backend, batch, dim, L, pas):
    reason = prof.OPS[op].unavailable(backend, prof.Shape(batch, dim, L, 16, torch.bfloat16), torch.device("cuda"))
    if reason:
        pytest.skip(reason)
    run(benchmark, make_case(op, backend, batch, dim, L, 16, torch.bfloat16, "cuda"), pas, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("batch", [1, 128])
def test_gpu_decode_step(benchmark, backend, batch):
    from ssmbench.kernels.selective_scan import selective_state_update
    D, N, dev = 2048, 16, "cuda"
    state = torch.randn(batch, D, N, device=dev)
    x, dt, z = (torch.randn(batch, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    A = -torch.rand(D, N, device=dev)
    Bm, Cm = (torch.randn(batch, N, device=dev, dtype=torch.bfloat16) for _ in range(2))
    Dv, bias = torch.ones(D, device=dev), torch.zeros(D, device=dev)
    fn = synced(lambda: selective_state_update(state, x, dt, A, Bm, Cm, Dv, z, bias, True, backend=backend), dev)
    fn()
    benchmark(fn)
