"""The long causal convolution of S4 and Hyena, y = causal_conv(u, k) + D u, through the FFT over 2L (zero-padded,
so the circular convolution is the causal one), computed in float32 whatever u's dtype (float64 where k is: the
layers' float64 reference mode).

Two layouts, the same sums (SSMBENCH_FFTCONV, kernels/common/options.py; tests/models/test_fftconv.py):

    blh   rfft / irfft along the time axis of u [B, L, H] as it comes. cuFFT wants the transformed axis innermost,
          so PyTorch pads u to [B, 2L, H], copies it to [B, H, 2L], and copies the result back: H3's profiled
          step spent ~2.7 ms of its 14.4 in such copies (results/training/README.md, session 9).
    bhl   one copy casts and transposes u into a zero-padded [B, H, 2L] float32 buffer; the transforms run along
          its last axis with no further copy, and D u is added to the result read transposed in place.
"""

from __future__ import annotations

import torch

from ssmbench.kernels.common.options import option


def fft_causal_conv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """u [B, L, H] (any float dtype), k [H, L], D [H] or None -> y [B, L, H] in float32 (float64 if k is float64);
    contiguous under bhl, while blh's result keeps the FFT's [B, H, L] memory order (a later op pays for that)."""
    if u.dim() != 3 or k.dim() != 2 or k.shape != (u.shape[2], u.shape[1]):
        raise ValueError(f"fft_causal_conv: u must be [B, L, H] and k [H, L], got u {tuple(u.shape)} and "
                         f"k {tuple(k.shape)}")
    if D is not None and D.shape != (u.shape[2],):
        raise ValueError(f"fft_causal_conv: D must be [H] = [{u.shape[2]}], got {tuple(D.shape)}")
    dtype = torch.float64 if k.dtype == torch.float64 else torch.float32
    layout = option("SSMBENCH_FFTCONV")
    return (_bhl if layout == "bhl" else _blh)(u, k.to(dtype), None if D is None else D.to(dtype))


def _blh(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    L = u.shape[1]
    uf = u.to(k.dtype)
    y = torch.fft.irfft(torch.fft.rfft(uf, n=2 * L, dim=1) * torch.fft.rfft(k.T, n=2 * L, dim=0),
                        n=2 * L, dim=1)[:, :L]
    return y if D is None else y + uf * D


def _bhl(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    B, L, H = u.shape
    # the only copy of u: cast and transpose in one kernel, into the first half of a zero buffer (the padding)
    padded = u.new_zeros(B, H, 2 * L, dtype=k.dtype)
    padded[..., :L] = u.transpose(1, 2)
    y = torch.fft.irfft(torch.fft.rfft(padded) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L].transpose(1, 2)
    if D is None:
        return y.contiguous()
    # u * D first: its [B, L, H] layout is the one the sum's output takes (PyTorch follows the first operand);
    # a half-precision u is promoted inside the product, so it costs no cast of its own
    ud = u * D if torch.promote_types(u.dtype, D.dtype) == D.dtype else u.to(D.dtype) * D
    return ud.add_(y)
