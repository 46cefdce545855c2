"""The Mamba block around an LTI layer (Table 1's Mamba-S4 and Mamba-Hyena rows) in its channel-major layout
(SSMBENCH_MAMBA_LTI=channel on CUDA; forced here with MambaBlock.layout): projections as GEMMs on [channels, B * L],
the Triton-table conv, the layer's FFT convolution on [B, E, L] rows (fft_causal_conv_rows), the gate in the layer.
It must compute the token-major path's function, values and gradients, and leave prefill on the token-major path."""

from __future__ import annotations

import pytest
import torch

from ssmbench.models.blocks import MambaBlock
from ssmbench.models.layers.fftconv import fft_causal_conv, fft_causal_conv_rows

from .test_mamba_layouts import assert_layouts_agree
from .test_zoo import VOCAB, build

LTI_LAYERS = [{"name": "s4", "d_state": 8, "init": "legs"}, {"name": "s4", "d_state": 8, "init": "real"},
              {"name": "hyena"}]


def _model(layer):
    model = build("mamba", layer=layer)
    blocks = [b for b in model.blocks if isinstance(b, MambaBlock)]
    assert blocks and not any(b.fuse_gate for b in blocks)
    return model, blocks


@pytest.mark.parametrize("layer", LTI_LAYERS, ids=lambda c: f"{c['name']}-{c.get('init', '')}")
@pytest.mark.parametrize("L", [1, 5, 33])
def test_channel_major_matches_token_major_around_an_lti_layer(layer, L):
    torch.manual_seed(0)
    model, blocks = _model(layer)
    assert_layouts_agree(model, blocks, torch.randint(0, VOCAB, (3, L)))


def test_auto_stays_token_major_on_the_cpu_and_the_option_is_checked(monkeypatch):
    model, blocks = _model(LTI_LAYERS[0])
    x = torch.randn(2, 4, blocks[0].d_inner // 2)
    monkeypatch.setenv("SSMBENCH_MAMBA_LTI", "channel")
    assert not blocks[0]._channel_major(x)  # channel-major LTI is a CUDA path (the Triton conv)
    blocks[0].layout = "channel"
    assert blocks[0]._channel_major(x)
    monkeypatch.setenv("SSMBENCH_MAMBA_LTI", "rows")
    blocks[0].layout = "auto"
    with pytest.raises(ValueError, match=r"SSMBENCH_MAMBA_LTI='rows' is not one of \('channel', 'token'\)"):
        blocks[0]._channel_major(x.cuda() if torch.cuda.is_available() else _FakeCuda(x))


class _FakeCuda:
    """Stands in for a CUDA tensor where the test only needs `is_cuda` (the option is read only on CUDA)."""

    is_cuda = True

    def __init__(self, x):
        self.x = x


def test_prefill_of_an_lti_mamba_block_keeps_the_token_major_path():
    # the channel-major LTI forward hands back no state; with the layout forced, prefill and steps still continue
    # the parallel forward exactly
    from .test_inference import prefill_and_steps, rel_err

    model, blocks = _model(LTI_LAYERS[0])
    for b in blocks:
        b.layout = "channel"
    x = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        full = model(x)[:, 6:]
    assert rel_err(prefill_and_steps(model, x, 7, 13, micro_batch=2), full) < 1e-5
    with pytest.raises(ValueError, match="no last state"):
        blocks[0].layer.forward_channel_major(torch.randn(2, blocks[0].d_inner, 5), return_last_state=True)


@pytest.mark.parametrize("with_D", [False, True])
def test_rows_convolution_is_the_token_major_one_transposed(with_D):
    torch.manual_seed(1)
    B, H, L = 2, 5, 19
    rows = torch.randn(H, B, L, dtype=torch.float64).transpose(0, 1)  # [B, H, L], the block's [E, B, L] memory order
    k, D = torch.randn(H, L, dtype=torch.float64), (torch.randn(H, dtype=torch.float64) if with_D else None)
    y = fft_causal_conv_rows(rows, k, D)
    assert y.shape == (B, H, L) and y.dtype == torch.float64
    torch.testing.assert_close(y, fft_causal_conv(rows.transpose(1, 2), k, D).transpose(1, 2))
    direct = torch.stack([sum(k[:, j] * rows[..., t - j] for j in range(t + 1)) for t in range(L)], dim=-1)
    torch.testing.assert_close(y, direct + (rows * D[:, None] if with_D else 0))
    half = fft_causal_conv_rows(rows.to(torch.bfloat16), k.float(), None if D is None else D.float())
    assert half.dtype == torch.float32


def test_rows_convolution_names_bad_shapes():
    with pytest.raises(ValueError, match=r"u must be \[B, H, L\] and k \[H, L\], got u \(2, 5, 7\) and k \(7, 5\)"):
        fft_causal_conv_rows(torch.randn(2, 5, 7), torch.randn(7, 5))
    with pytest.raises(ValueError, match=r"D must be \[H\] = \[5\], got \(7,\)"):
        fft_causal_conv_rows(torch.randn(2, 5, 7), torch.randn(5, 7), torch.randn(7))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model_name", ["mamba_s4", "mamba_hyena"])
def test_on_cuda_the_channel_major_lti_step_follows_the_token_major_one(model_name, monkeypatch):
    """The captured training step as Table 1 would run it under SSMBENCH_MAMBA_LTI=channel (the Triton conv, the
    rows FFT conv) against the token-major one: the same losses, step by step."""
    from ..ssmbench.helpers import train_losses

    runs = {}
    for layout in ("token", "channel"):
        monkeypatch.setenv("SSMBENCH_MAMBA_LTI", layout)
        losses, step = train_losses(model_name, "graphs", 20, device="cuda")
        assert step.mode == "graphs", step.reason
        runs[layout] = losses
    for a, b in zip(runs["token"], runs["channel"]):
        assert abs(a - b) <= 1e-3 * abs(a), runs
