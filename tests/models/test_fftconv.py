"""models/layers/fftconv.py: S4's and Hyena's FFT convolution computes the causal convolution plus D u, in both
layouts (SSMBENCH_FFTCONV), with the same values and gradients; bad shapes are errors that name them."""

from __future__ import annotations

import pytest
import torch

from ssmbench.models.layers.fftconv import fft_causal_conv


def _direct(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{s <= t} k_s u_{t-s} + D u_t, term by term in float64 (the definition, no FFT)."""
    u64, k64 = u.double(), k.double()
    L = u.shape[1]
    y = torch.zeros_like(u64)
    for s in range(L):
        y[:, s:] += u64[:, : L - s] * k64[:, s]
    return y + u64 * D.double()


@pytest.mark.parametrize("layout", ["blh", "bhl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_layout_is_the_causal_convolution(monkeypatch, layout, dtype):
    monkeypatch.setenv("SSMBENCH_FFTCONV", layout)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 37, 5, generator=g).to(dtype)
    k, D = torch.randn(5, 37, generator=g) / 6, torch.randn(5, generator=g)
    y = fft_causal_conv(u, k, D)
    assert y.dtype == torch.float32 and y.shape == u.shape
    # bhl hands on [B, L, H] as it is laid out; blh (the old path, kept as it was) leaves the FFT's [B, H, L] order
    assert y.is_contiguous() == (layout == "bhl")
    assert torch.allclose(y.double(), _direct(u, k, D), rtol=1e-4, atol=1e-5)
    assert torch.allclose(fft_causal_conv(u, k).double(), _direct(u, k, torch.zeros(5)), rtol=1e-4, atol=1e-5)


def test_the_layouts_agree_in_values_and_gradients_for_a_strided_input(monkeypatch):
    """u as H3 hands it over (a chunk of a wider projection, row stride 3H), gradients to u, k and D."""
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(3, 50, 12, generator=g)
    k0, D0 = torch.randn(4, 50, generator=g) / 7, torch.randn(4, generator=g)
    cot = torch.randn(3, 50, 4, generator=g)
    out = {}
    for layout in ("blh", "bhl"):
        monkeypatch.setenv("SSMBENCH_FFTCONV", layout)
        x, k, D = (t.clone().requires_grad_() for t in (qkv, k0, D0))
        y = fft_causal_conv(x.chunk(3, dim=-1)[2], k, D)
        out[layout] = (y.detach(), *torch.autograd.grad((y * cot).sum(), [x, k, D]))
    for a, b in zip(out["blh"], out["bhl"]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("layout", ["blh", "bhl"])
def test_float64_kernels_compute_in_float64(monkeypatch, layout):
    monkeypatch.setenv("SSMBENCH_FFTCONV", layout)
    g = torch.Generator().manual_seed(2)
    u, k, D = torch.randn(1, 20, 3, generator=g), torch.randn(3, 20, generator=g).double(), torch.randn(3).double()
    y = fft_causal_conv(u, k, D)
    assert y.dtype == torch.float64
    assert torch.allclose(y, _direct(u, k, D), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer", ["s4", "hyena"])
def test_the_layers_train_alike_in_both_layouts(monkeypatch, layer):
    from ssmbench.models.layers.hyena import HyenaFilterLayer
    from ssmbench.models.layers.s4 import S4Layer
    grads = {}
    for layout in ("blh", "bhl"):
        monkeypatch.setenv("SSMBENCH_FFTCONV", layout)
        torch.manual_seed(0)
        mod = S4Layer(8, d_state=16) if layer == "s4" else HyenaFilterLayer(8, filter_order=16, max_len=64)
        x = torch.randn(2, 33, 8, requires_grad=True)
        y = mod(x)
        loss = (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(3))).sum()
        params = [p for p in mod.parameters() if p.requires_grad]
        grads[layout] = (y.detach(), *torch.autograd.grad(loss, [x, *params]))
    for a, b in zip(grads["blh"], grads["bhl"]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("u_shape, k_shape, d_shape, match", [
    ((2, 10, 4), (4, 9), (4,), r"u must be \[B, L, H\] and k \[H, L\], got u \(2, 10, 4\) and k \(4, 9\)"),
    ((2, 10, 4), (10, 4), (4,), r"got u \(2, 10, 4\) and k \(10, 4\)"),
    ((10, 4), (4, 10), (4,), r"got u \(10, 4\)"),
    ((2, 10, 4), (4, 10), (5,), r"D must be \[H\] = \[4\], got \(5,\)"),
])
def test_bad_shapes_name_themselves(u_shape, k_shape, d_shape, match):
    with pytest.raises(ValueError, match=match):
        fft_causal_conv(torch.zeros(u_shape), torch.zeros(k_shape), torch.zeros(d_shape))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_cuda_the_layouts_agree_eager_and_captured(monkeypatch, dtype):
    """cuFFT in both layouts at Table 1's width, eager and replayed from a CUDA graph (as the training step runs
    it), against the float64 direct sum on the CPU."""
    g = torch.Generator().manual_seed(4)
    B, L, H = 3, 300, 64
    u = torch.randn(B, L, H, generator=g).to(dtype)
    k, D = torch.randn(H, L, generator=g) / 10, torch.randn(H, generator=g)
    want = _direct(u, k, D)
    for layout in ("blh", "bhl"):
        monkeypatch.setenv("SSMBENCH_FFTCONV", layout)
        uc, kc, Dc = u.cuda(), k.cuda(), D.cuda()
        eager = fft_causal_conv(uc, kc, Dc)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fft_causal_conv(uc, kc, Dc)  # warm-up (cuFFT plans) outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = fft_causal_conv(uc, kc, Dc)
        graph.replay()
        torch.cuda.synchronize()
        for y in (eager, captured):
            assert torch.allclose(y.double().cpu(), want, rtol=1e-4, atol=1e-4), (layout, (y.cpu() - want).abs().max())
