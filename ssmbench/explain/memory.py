"""Figure family 3, memory: what a recurrent model carries from token to token (the size of its state, read after
every step() from an empty cache), and what attention does instead (re-reads every earlier token: the attention maps
of a Transformer on an induction-heads sequence, one panel per head of the last layer)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from ssmbench.plots import model_colour, save_figure  # noqa: E402

from .common import Drawn, Setting, catch_call, mark_data, token_strip  # noqa: E402

STATE_ROLES = ("lstm", "s4", "mamba")
TRIGGER_MARK, ANSWER_MARK = "#00bcd4", "#76ff03"  # not model colours: they mark positions


# ---------------------------------------------------------------------------------------------------------------
# Recurrent state over time

def layer_state(model, block: int, cache) -> list[torch.Tensor]:
    """The sequence layer's own state inside the block's cache (the mamba block adds its conv inputs, H3 its
    shift SSM: both left out), as a list of tensors."""
    s = cache.blocks[block]
    if model.cfg.arch in ("mamba", "h3"):
        s = s[1]
    return [t for t in (s if isinstance(s, (tuple, list)) else (s,)) if torch.is_tensor(t)]


@torch.no_grad()
def state_trace(model, block: int, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray, int]:
    """Step the model through one sequence from an empty cache. Returns (||h_t|| [L], ||h_t - h_(t-1)|| / ||h_(t-1)||
    [L], numbers in the state); h is the layer's state after token t, complex entries counted by modulus."""
    cache = model.allocate_cache(1, inputs.shape[0], inputs.device)
    norms, changes, prev = [], [], None
    for t in range(inputs.shape[0]):
        model.step(inputs[t:t + 1], cache)
        # (a copy: the cache is advanced in place, and h_(t-1) is compared with h_t)
        h = torch.cat([x.reshape(-1) for x in layer_state(model, block, cache)])
        norms.append(float(h.abs().square().sum().sqrt()))
        prev_norm = float(prev.abs().square().sum().sqrt()) if prev is not None else 0.0
        changes.append(float((h - prev).abs().square().sum().sqrt()) / prev_norm if prev_norm > 0 else math.nan)
        prev = h
    return np.array(norms), np.array(changes), int(h.numel())


STATE_WHAT = {"lstm": "(h, c) of the LSTM", "s4": "the S4 modes (complex, by modulus)",
              "mamba": "the S6 state [d_inner, N] (the block's conv inputs left out)"}


def state_norms_figure(setting: Setting, out: Path) -> Drawn:
    block, task, inputs = setting.cfg.block, setting.copy_task, setting.copy_inputs
    traces = {role: state_trace(setting.models[role].model, block, inputs) for role in STATE_ROLES}
    L = inputs.shape[0]
    fig = plt.figure(figsize=(12, 6.8))
    gs = fig.add_gridspec(3, 1, height_ratios=[0.2, 1.6, 1.6], hspace=0.12)
    ax_tok = fig.add_subplot(gs[0])
    ax_n = fig.add_subplot(gs[1], sharex=ax_tok)
    ax_c = fig.add_subplot(gs[2], sharex=ax_tok)
    token_strip(ax_tok, task, inputs)
    ax_tok.set_title(f"The state of block {block}'s layer, read after every step()", loc="left")
    pos = np.arange(L)
    stats = []
    for role, (norms, changes, size) in traces.items():
        m = setting.models[role]
        label = f"{m.name} ({'trained' if m.trained else 'fresh'}; {size} numbers)"
        ax_n.semilogy(pos, norms, color=model_colour(m.name), lw=1.8, label=label)
        ax_c.semilogy(pos, changes, color=model_colour(m.name), lw=1.8, label=label)
        stats.append(f"{m.name}: state norm {norms[-1]:.3g} at the last token (max {norms.max():.3g}), median "
                     f"relative change per token {np.nanmedian(changes):.3g}")
    mark_data(ax_n, task, inputs)
    mark_data(ax_c, task, inputs, label=False)
    ax_n.set_ylabel("state norm $\\|h_t\\|_2$\n(log scale)")
    ax_n.tick_params(axis="x", labelbottom=False)
    ax_n.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    ax_c.set(xlabel="position in the sequence (token index)",
             ylabel="rewrite per token\n$\\|h_t - h_{t-1}\\| / \\|h_{t-1}\\|$ (log)")
    png = save_figure(fig, out / "3a_state_norms.png")
    fresh = [setting.models[r].name for r in STATE_ROLES if not setting.models[r].trained]
    caveat = (f" For the fresh models ({', '.join(fresh)}), the jumps at the data tokens come only from those tokens "
              "differing from the repeated noise (a repeated input drives each state towards a fixed point), not "
              "from a learned choice." if fresh else "")
    caption = ("Each model steps through the selective-copying sequence of figure 2 one token at a time from "
               "an empty cache (the step() contract); after every token we read the state of the sequence layer of "
               f"block {block}: " + "; ".join(f"{STATE_WHAT[r]}" for r in STATE_ROLES) + ". Top: its norm. Bottom: "
               "how much of it the token rewrote. A fixed-size state is all a recurrent model keeps between tokens; "
               "the LSTM's gates and Mamba's Delta depend on the token, S4's decay per step does not (figure 1c)."
               + caveat + " Computed: " + "; ".join(stats) + ". Models: "
               + "; ".join(f"{setting.models[r].name}: {setting.models[r].provenance}" for r in STATE_ROLES) + ".")
    return Drawn("3a_state_norms", "Memory: the recurrent state, token by token", caption, png)


# ---------------------------------------------------------------------------------------------------------------
# Attention maps

@torch.no_grad()
def attention_maps(model, inputs: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Attention weights [heads, L, L] (query, key) of the last block's attention layer on one sequence, computed
    from the layer's own projections and positions; and the max abs difference between the output they give and
    the layer's own output (so the maps are the ones the model used)."""
    layer = model.blocks[-1].layer
    with catch_call(layer) as store:
        model(inputs[None])
    x, y = store["args"][0], store["out"]
    T = x.shape[1]
    q, k, v = layer._heads(x)
    if layer.rotary is not None:
        q, k = layer.rotary(q, k, torch.arange(T, device=x.device))
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(layer.head_dim)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    w = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    again = layer.out((w @ v.float()).transpose(1, 2).reshape(1, T, -1).to(x.dtype))
    return w[0], float((again - y).abs().max())


def attention_figure(setting: Setting, out: Path) -> Drawn:
    m = setting.models["transformer"]
    task, inputs = setting.induction_task, setting.induction_inputs
    w, check = attention_maps(m.model, inputs)
    H, L = w.shape[0], w.shape[1]
    trig = int((inputs == task.trigger).nonzero()[0])  # the earlier trigger; the last token is the other one
    answer = trig + 1
    fig, axes = plt.subplots(2, H, figsize=(3.6 * H + 1.6, 6.6), squeeze=False, layout="constrained",
                             sharey="row", gridspec_kw={"height_ratios": [3, 1.1]})
    norm = LogNorm(vmin=1e-3, vmax=1.0)
    c = model_colour(m.name)
    last = w[:, -1]  # [H, L]: where the final trigger (the scored position) looks
    for h in range(H):
        ax, ax_b = axes[0, h], axes[1, h]
        im = ax.imshow(w[h].clamp_min(1e-3).numpy(), cmap="magma", norm=norm, interpolation="nearest")
        ax.axvline(trig, color=TRIGGER_MARK, lw=1.2, ls="--", label=f"earlier trigger (key {trig})")
        ax.axvline(answer, color=ANSWER_MARK, lw=1.5, ls=":", label=f"the token after it, the answer (key {answer})")
        ax.set(title=f"head {h}: last query's weight\n{float(last[h, answer]):.2f} on the answer, "
                     f"{float(last[h, trig]):.2f} on the trigger", xlabel="key position")
        ax_b.bar(np.arange(L), last[h].numpy(), color=c, width=0.8, label="weights of the last query")
        ax_b.axvline(trig, color=TRIGGER_MARK, lw=1.5, ls="--")
        ax_b.axvline(answer, color=ANSWER_MARK, lw=1.8, ls=":")
        ax_b.set(xlabel="key position", ylim=(0, 1), xlim=(-0.5, L - 0.5))
    axes[0, 0].set_ylabel("query position")
    axes[1, 0].set_ylabel("weight from the\nlast query")
    fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.9, label="attention weight (log scale)")
    handles = axes[0, 0].get_legend_handles_labels()[0] + axes[1, 0].get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle(f"{m.name} ({'trained' if m.trained else 'fresh, untrained'}): attention of the last layer on "
                 f"an induction-heads sequence (L = {L})")
    png = save_figure(fig, out / "3b_attention.png")
    per_head = "; ".join(f"head {h}: {float(last[h, answer]):.3f} on the answer, {float(last[h, trig]):.3f} on "
                         f"the trigger, uniform would be {1 / L:.3f}" for h in range(H))
    caption = (f"{m.name}: {m.provenance}. An induction-heads sequence of {L} tokens: the trigger (token "
               f"{task.trigger}) at position {trig}, the answer after it at {answer}, and the trigger again at the "
               f"last position, whose target is the answer. Top: the causal attention weights of each head of the "
               f"last layer (query rows, key columns; log colour scale), computed from the layer's own q, k and "
               f"positions (they rebuild the layer's output to {check:.1e}). Bottom: the last query's row. "
               f"Attention keeps every earlier token and re-reads them all at every step, so no choice of what to "
               f"keep is needed, at a cost that grows with the length (the KV cache). An induction head puts its "
               f"weight on the token after the earlier trigger. Weights from the last query: {per_head}.")
    return Drawn("3b_attention", "Memory without a state: attention on an induction-heads input", caption, png)
