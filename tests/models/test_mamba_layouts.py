"""The Mamba block's two layouts compute the same function: token-major (activations [B, L, E], transposed
around the scan; the CPU default) and channel-major (batched GEMMs into [B, E, L], official Mamba's; the CUDA
default, and the prefill of generation everywhere)."""

from __future__ import annotations

import pytest
import torch

from ssmbench.models.blocks import MambaBlock

from .test_zoo import VOCAB, build


def _pair(backend="torch"):
    model = build("mamba", layer={"name": "s6", "d_state": 4, "scan_backend": backend})
    blocks = [b for b in model.blocks if isinstance(b, MambaBlock)]
    assert blocks and all(b.fuse_gate for b in blocks)
    return model, blocks


def assert_layouts_agree(model, blocks, tokens):
    """The model's output and every parameter gradient with its Mamba blocks token-major, then channel-major: the
    same within float rounding."""
    outs, grads = {}, {}
    for layout in ("token", "channel"):
        for b in blocks:
            b.layout = layout
        model.zero_grad()
        y = model(tokens)
        y.float().pow(2).mean().backward()
        outs[layout] = y.detach()
        grads[layout] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(outs["channel"], outs["token"], rtol=1e-5, atol=1e-5)
    assert grads["channel"].keys() == grads["token"].keys() and grads["token"]
    for n in grads["token"]:
        torch.testing.assert_close(grads["channel"][n], grads["token"][n], rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("L,backend", [(1, "torch"), (3, "torch"), (37, "torch"), (37, "triton")])
def test_channel_major_matches_token_major(L, backend):
    # "triton": the fused scan (the interpreter on a CPU) reading B and C as strided views of the projection
    model, blocks = _pair(backend)
    assert_layouts_agree(model, blocks, torch.randint(0, VOCAB, (2, L)))


def test_channel_major_states_continue_the_recurrence():
    # the states mix_channel_major hands back are those a step-by-step run ends in
    model, blocks = _pair("reference")
    blk = blocks[0]
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        _, (conv_tail, last) = blk.mix_channel_major(x, return_state=True)
        state = blk.allocate_cache(2, 5, x.device)
        for t in range(5):
            blk.mix_step(x[:, t], state)
    torch.testing.assert_close(conv_tail, state[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(last, state[1], rtol=1e-5, atol=1e-6)


def test_channel_major_under_autocast_and_bad_layout():
    model, blocks = _pair()
    tokens = torch.randint(0, VOCAB, (2, 9))
    for b in blocks:
        b.layout = "channel"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(tokens)
    assert torch.isfinite(y.float()).all()
    blocks[0].layout = "rows"
    with pytest.raises(ValueError, match="layout"):
        model(tokens)
