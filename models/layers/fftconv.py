"""The long causal convolution of S4 and Hyena, y = causal_conv(u, k) + D u, through the FFT over 2L (zero-padded,
so the circular convolution is the causal one), computed in float32 whatever u's dtype (float64 where k is: the
layers' float64 reference mode).

Two layouts, the same sums (SSMBENCH_FFTCONV, kernels/common/options.py; tests/models/test_fftconv.py):

    blh   rfft / irfft along the time axis of u [B, L, H] as it comes. cuFFT wants the transformed axis innermost,
          so PyTorch pads u to [B, 2L, H], copies it to [B, H, 2L], and copies the result back: H3's profiled
          step spent ~2.7 ms of its 14.4 in such copies (results/training/README.md, session 9).
    bhl   one copy casts and transposes u into a zero-padded [B, H, 2L] float32 buffer; the transforms run along
          its last axis with no further copy, and D u is added to the result read transposed in place.

`fft_causal_conv_rows` takes u as [B, H, L] rows instead, the layout of the Mamba block's channel-major path
(models/blocks.py, SSMBENCH_MAMBA_LTI=channel): the padding copy is then a plain copy, with no transpose.
`ChannelMajorConv` gives an LTI layer (S4, Hyena) that path's `forward_channel_major`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmbench.kernels.common.options import option


def fft_causal_conv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """u [B, L, H] (any float dtype), k [H, L], D [H] or None -> y [B, L, H] in float32 (float64 if k is float64);
    contiguous under bhl, while blh's result keeps the FFT's [B, H, L] memory order (a later op pays for that)."""
    _check_shapes("fft_causal_conv", "[B, L, H]", u, k, D, time_dim=1)
    dtype = _dtype(k)
    layout = option("SSMBENCH_FFTCONV")
    return (_bhl if layout == "bhl" else _blh)(u, k.to(dtype), None if D is None else D.to(dtype))


def _check_shapes(fn: str, layout: str, u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None, time_dim: int):
    """u 3-D in `layout` (time on `time_dim`, channels on the other of dims 1, 2), k [H, L], D [H] or None; else a
    ValueError naming the function and the shapes."""
    if u.dim() != 3 or k.dim() != 2 or k.shape != (u.shape[3 - time_dim], u.shape[time_dim]):
        raise ValueError(f"{fn}: u must be {layout} and k [H, L], got u {tuple(u.shape)} and k {tuple(k.shape)}")
    if D is not None and D.shape != (u.shape[3 - time_dim],):
        raise ValueError(f"{fn}: D must be [H] = [{u.shape[3 - time_dim]}], got {tuple(D.shape)}")


def _dtype(k: torch.Tensor) -> torch.dtype:
    """The convolution's precision: float32 whatever the inputs' dtype, float64 where k is (the reference mode)."""
    return torch.float64 if k.dtype == torch.float64 else torch.float32


def _blh(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    L = u.shape[1]
    uf = u.to(k.dtype)
    y = torch.fft.irfft(torch.fft.rfft(uf, n=2 * L, dim=1) * torch.fft.rfft(k.T, n=2 * L, dim=0),
                        n=2 * L, dim=1)[:, :L]
    return y if D is None else y + uf * D


def _conv_rows(u_rows: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """u_rows [B, H, L] (any strides, any float dtype), k [H, L] -> causal_conv(u, k) [B, H, L] in k's dtype, a view
    of the transform's [B, H, 2L] output. The only copy of u casts it into the first half of a zero buffer (the
    padding), transposing it on the way if its rows are not contiguous."""
    B, H, L = u_rows.shape
    padded = u_rows.new_zeros(B, H, 2 * L, dtype=k.dtype)
    padded[..., :L] = u_rows
    return torch.fft.irfft(torch.fft.rfft(padded) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]


def fft_causal_conv_rows(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """u [B, H, L] (rows along L, any strides: the channel-major view [B, E, L] of the Mamba block), k [H, L],
    D [H] or None -> y [B, H, L] = causal_conv(u, k) + D u in float32 (float64 if k is float64): fft_causal_conv's
    sums on the transposed layout."""
    _check_shapes("fft_causal_conv_rows", "[B, H, L]", u, k, D, time_dim=2)
    dtype = _dtype(k)
    y = _conv_rows(u, k.to(dtype))
    if D is None:
        return y
    # u * D first: the sum takes u's memory order (PyTorch follows the first operand), which for the bhl layout's
    # transposed view is [B, L, H]; a half-precision u is promoted inside the product, so it costs no cast of its own
    D = D.to(dtype)[:, None]
    ud = u * D if torch.promote_types(u.dtype, D.dtype) == D.dtype else u.to(D.dtype) * D
    return ud.add_(y)


class ChannelMajorConv:
    """For an LTI layer whose forward is y = fft_causal_conv(x, K, D) (S4, Hyena): the same map on the Mamba
    block's channel-major rows [B, H, L], gated there by silu(z), with the S6 layer's `forward_channel_major`
    signature, so that the block runs its channel-major path (the Triton conv, projections as GEMMs on
    [channels, B * L]) around it too. The layer supplies `conv_kernel_and_D(L)` and `dropout`."""

    def conv_kernel_and_D(self, L: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward_channel_major(self, x: torch.Tensor, z: torch.Tensor | None = None,
                              return_last_state: bool = False):
        """x, z: [B, H, L] -> (y [B, H, L] in x's dtype, gated by silu(z) when z is given; None). No last state: the
        block's prefill takes its token-major path for LTI layers."""
        if return_last_state:
            raise ValueError(f"{type(self).__name__}.forward_channel_major hands back no last state; prefill an LTI "
                             "layer through its token-major forward")
        L = x.shape[-1]
        with torch.autocast(device_type=x.device.type, enabled=False):
            k, D = self.conv_kernel_and_D(L)
            y = fft_causal_conv_rows(x, k, D)
        y = self.dropout(y).to(x.dtype)
        return (y if z is None else y * F.silu(z)), None


def _bhl(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    # the rows convolution on u's transposed view: its only copy of u casts and transposes in one kernel; with D the
    # result already has u's [B, L, H] order (contiguous() is then a no-op), without it one copy puts it there
    return fft_causal_conv_rows(u.transpose(1, 2), k, D).transpose(1, 2).contiguous()
