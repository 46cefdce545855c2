"""The models' inference API: allocate_cache, prefill, step. A prompt prefilled in parallel and then continued
token by token gives the logits of the full parallel forward, for every model in conf/model/ and for every layer;
a step past the cache's capacity fails naming max_len; the graph-safe steps (device-side positions) agree with
the eager ones."""

from __future__ import annotations

import pytest
import torch

from ssmbench.models.layers.attention import Attention
from ssmbench.models.layers.hyena import HyenaFilterLayer
from ssmbench.models.layers.rnn import RNNLayer
from ssmbench.models.layers.s4 import INITS, S4Layer
from ssmbench.models.layers.s6 import S6Layer
from ssmbench.models.layers.shift import ShiftSSM

from .test_zoo import MODEL_NAMES, VOCAB, build


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@torch.no_grad()
def prefill_and_steps(model, x, prompt_len, max_len, micro_batch=None):
    """Logits [B, L - prompt_len + 1, V]: the prefill's (position prompt_len - 1), then one per step."""
    cache = model.allocate_cache(x.shape[0], max_len)
    out = [model.prefill(x[:, :prompt_len], cache, micro_batch)]
    assert cache.length == prompt_len
    for t in range(prompt_len, x.shape[1]):
        out.append(model.step(x[:, t], cache))
    assert cache.length == x.shape[1]
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("prompt_len", [1, 13])
def test_prefill_then_steps_match_forward(name, prompt_len):
    # mamba: a 1-token prompt is shorter than the conv (zeros before it) and H3's shift state
    model = build(name)
    x = torch.randint(0, VOCAB, (3, 29), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)[:, prompt_len - 1:]
    for max_len, micro_batch in [(29, None), (64, 2)]:  # a roomier cache; the prompt two rows at a time
        got = prefill_and_steps(model, x, prompt_len, max_len, micro_batch)
        assert rel_err(got, full) < 1e-5, f"{name}, max_len={max_len}: {rel_err(got, full):.2e}"


@pytest.mark.parametrize("name", ["mamba", "s4", "h3", "hyena", "transformer", "transformer_abs", "lstm"])
def test_step_past_capacity_names_max_len(name):
    model = build(name)
    x = torch.randint(0, VOCAB, (2, 6))
    cache = model.allocate_cache(2, 6)
    with torch.no_grad():
        model.prefill(x[:, :4], cache)
        model.step(x[:, 4], cache)
        model.step(x[:, 5], cache)
        with pytest.raises(ValueError, match="max_len=6"):
            model.step(x[:, 5], cache)
        with pytest.raises(ValueError, match="max_len=6"):
            model.prefill(torch.randint(0, VOCAB, (2, 7)), cache)


@pytest.mark.parametrize("name", ["transformer", "hyena"])
def test_block_cache_past_capacity_names_max_len(name):
    # the KV cache itself refuses, used through a block without the language model's check
    block = build(name).blocks[0]
    cache = block.allocate_cache(2, 3)
    with torch.no_grad():
        block.prefill(torch.randn(2, 3, 16), cache)
        with pytest.raises(ValueError, match="max_len=3"):
            block.step(torch.randn(2, 16), cache)


def layers():
    yield from (S4Layer(8, d_state=8, init=init) for init in INITS)
    yield from (RNNLayer(8, cell=cell, hidden=h) for cell, h in [("lstm", 0), ("gru", 6), ("elman", 0)])
    yield from (ShiftSSM(8, d_state=3), HyenaFilterLayer(8, filter_order=8), S6Layer(8, d_state=4),
                Attention(8, n_heads=2, pos="xpos"))


@pytest.mark.parametrize("layer", list(layers()), ids=lambda m: getattr(m, "init", getattr(m, "cell", "")) or
                         type(m).__name__)
def test_every_layer_prefill_then_steps_match_forward(layer):
    torch.manual_seed(0)
    layer.eval()
    x = torch.randn(2, 21, 8)
    with torch.no_grad():
        full = layer(x)
        cache = layer.allocate_cache(2, 32)
        ys = [layer.prefill(x[:, :9], cache)]
        ys += [layer.step(x[:, t], cache)[:, None] for t in range(9, 21)]
    assert rel_err(torch.cat(ys, dim=1), full) < 1e-5


@pytest.mark.parametrize("name", ["transformer", "transformer_xpos", "mamba", "lstm"])
def test_graph_safe_steps_equal_eager_steps(name):
    # the steps a CUDA graph captures (KV written at a device-side position, attention under a mask of the
    # filled part), run eagerly here; restore() rewinds the cache to the prefilled prompt for the second run
    model = build(name)
    x = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        cache = model.allocate_cache(2, 20)
        model.prefill(x[:, :5], cache)
        snap = cache.snapshot()
        runs = {}
        for graph_safe in (False, True):
            cache.restore(snap)
            cache.graph_safe = graph_safe
            runs[graph_safe] = torch.stack([model.step(x[:, t], cache) for t in range(5, 12)], dim=1)
    torch.testing.assert_close(runs[True], runs[False], rtol=1e-5, atol=1e-6)


def test_graph_safe_refuses_host_side_positions():
    model = build("transformer_abs")
    cache = model.allocate_cache(1, 4)
    cache.graph_safe = True
    with pytest.raises(ValueError, match="pos_emb"):
        model.step(torch.zeros(1, dtype=torch.long), cache)


def test_cache_bytes_and_defaults():
    model = build("transformer").to(torch.bfloat16)
    cache = model.allocate_cache(3, 10)
    kv = cache.blocks[0]
    assert kv.buffers[0].dtype == torch.bfloat16 and kv.buffers[0].shape == (3, 2, 10, 8)
    assert cache.nbytes() == 2 * 2 * (3 * 16 * 10) * 2  # 2 layers x (K, V) x [3, 16 channels, 10] x bf16
    mamba = build("mamba").to(torch.bfloat16)
    conv, ssm = mamba.allocate_cache(1, 10).blocks[0]
    assert conv.dtype == torch.bfloat16 and ssm.dtype == torch.float32  # the SSM state stays fp32


def test_channel_major_prefill_of_the_mamba_block():
    # the layout a CUDA prefill takes (the scan's own, handing back its last state), forced here on the CPU
    model = build("mamba", layer={"name": "s6", "d_state": 4, "scan_backend": "torch"})
    for b in model.blocks:
        b.layout = "channel"
    x = torch.randint(0, VOCAB, (3, 17))
    with torch.no_grad():
        full = model(x)[:, 8:]
    assert rel_err(prefill_and_steps(model, x, 9, 20, micro_batch=2), full) < 1e-5
