"""Figure family 2, selectivity: on one selective-copying sequence, Mamba's step size Delta per position and
channel, and the size of its input-dependent B and C per position; beside them S4's convolution kernel K, which
is the same whatever the input.

Delta, B and C are the S6 layer's own: the layer's input is caught with a forward hook and passed to
S6Layer._ssm_inputs, then Delta = softplus(dt_proj(x_proj(x)) + dt_bias), as in the scan."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from ssmbench.plots import LINE_STYLES, model_colour, save_figure  # noqa: E402

from .common import Drawn, Setting, layer_io, mark_data, token_classes, token_strip  # noqa: E402


@torch.no_grad()
def selection(model, block: int, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Delta [L, D], B and C [L, N] of the S6 layer of `block` on one sequence (Long[L])."""
    layer = model.blocks[block].layer
    x = layer_io(model, block, inputs)["args"][0][0]  # [L, D]: what the scan reads (after the block's conv, SiLU)
    delta_pre, B, C = layer._ssm_inputs(x)
    delta = F.softplus(delta_pre.float() + layer.dt_bias.float())
    return {"delta": delta, "B": B.float(), "C": C.float()}


def _ratio(v: torch.Tensor, on: torch.Tensor, off: torch.Tensor) -> tuple[float, float]:
    return float(v[on].mean()) if len(on) else float("nan"), float(v[off].mean()) if len(off) else float("nan")


def selectivity_figure(setting: Setting, out: Path) -> Drawn:
    block = setting.cfg.block
    mamba, s4 = setting.models["mamba"], setting.models["s4"]
    task, inputs = setting.copy_task, setting.copy_inputs
    L = inputs.shape[0]
    sel = selection(mamba.model, block, inputs)
    delta = sel["delta"]  # [L, D]
    B_norm, C_norm = sel["B"].norm(dim=-1), sel["C"].norm(dim=-1)
    K = s4.model.blocks[block].layer.kernel(L).detach().float()  # [H, L]
    classes = token_classes(task, inputs)
    data, noise = classes["data"], classes["noise"]
    mean_delta = delta.mean(dim=1)

    fig = plt.figure(figsize=(15, 8.2))
    outer = fig.add_gridspec(1, 2, width_ratios=[1.55, 1], wspace=0.42)
    left = outer[0].subgridspec(4, 1, height_ratios=[0.22, 2.0, 1.0, 1.0], hspace=0.12)
    right = outer[1].subgridspec(3, 1, height_ratios=[0.22 + 2.0, 0.55, 2.0], hspace=0.0)
    ax_tok = fig.add_subplot(left[0])
    ax_d = fig.add_subplot(left[1], sharex=ax_tok)
    ax_m = fig.add_subplot(left[2], sharex=ax_tok)
    ax_bc = fig.add_subplot(left[3], sharex=ax_tok)
    ax_k = fig.add_subplot(right[0])
    ax_kl = fig.add_subplot(right[2])

    token_strip(ax_tok, task, inputs)
    ax_tok.set_title(f"{mamba.name} ({'trained' if mamba.trained else 'fresh, untrained'}), block {block}",
                     loc="left")
    d = delta.T.numpy()
    im = ax_d.imshow(d, aspect="auto", cmap="viridis", interpolation="nearest", origin="lower",
                     norm=LogNorm(vmin=max(float(d.min()), 1e-6), vmax=float(d.max())),
                     extent=(-0.5, L - 0.5, -0.5, d.shape[0] - 0.5))
    fig.colorbar(im, cax=ax_d.inset_axes([1.01, 0.0, 0.02, 1.0]), label="step size $\\Delta$ (log scale)")
    ax_d.set_ylabel("channel (d_inner)")
    data_ticks = data.tolist()
    ax_d.plot(data_ticks, [d.shape[0] - 0.5] * len(data_ticks), "v", color="white", mec="black", ms=6,
              clip_on=False, label="data token")
    ax_d.tick_params(axis="x", labelbottom=False)

    c = model_colour(mamba.name)
    ax_m.plot(np.arange(L), mean_delta.numpy(), color=c, lw=1.6, label="$\\Delta$, mean over channels")
    spread = float(mean_delta.max() / mean_delta.min().clamp_min(1e-12))
    if spread > 10:  # a log axis only where Delta spans decades (a trained model); else plain numbers
        ax_m.set_yscale("log")
    mark_data(ax_m, task, inputs)
    ax_m.set_ylabel("mean $\\Delta$" + (" (log)" if spread > 10 else ""))
    ax_m.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    ax_m.tick_params(axis="x", labelbottom=False)
    ax_bc.plot(np.arange(L), B_norm.numpy(), color=c, ls=LINE_STYLES[0], lw=1.6, label="$\\|B_t\\|_2$")
    ax_bc.plot(np.arange(L), C_norm.numpy(), color=c, ls=LINE_STYLES[1], lw=1.6, label="$\\|C_t\\|_2$")
    mark_data(ax_bc, task, inputs, label=False)
    ax_bc.set(xlabel="position in the sequence (token index)", ylabel="norm over the\nN states")
    ax_bc.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)

    k = K.numpy()
    lim = float(np.quantile(np.abs(k), 0.99)) or 1.0
    im = ax_k.imshow(k, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest", origin="lower",
                     extent=(-0.5, L - 0.5, -0.5, k.shape[0] - 0.5))
    fig.colorbar(im, cax=ax_k.inset_axes([1.02, 0.0, 0.03, 1.0]), label="$K_l$ (clipped at the 99th pct of |K|)",
                 extend="both")
    ax_k.set(ylabel="channel", xlabel="lag l (tokens back)",
             title=f"{s4.name} ({'trained' if s4.trained else 'fresh, untrained'}): S4 kernel K of block {block},\n"
                   "the same for every input", )
    for i, ch in enumerate(range(min(3, k.shape[0]))):
        ax_kl.plot(np.arange(L), k[ch], color=model_colour(s4.name), ls=LINE_STYLES[i], lw=1.4,
                   label=f"channel {ch}")
    ax_kl.set(xlabel="lag l (tokens back)", ylabel="$K_l$ (weight on the input l tokens back)")
    ax_kl.legend(frameon=False, fontsize=8)
    ax_kl.axhline(0, color="black", lw=0.6)
    png = save_figure(fig, out / "2_selectivity.png")

    # Delta at a position is computed from what the scan reads there, the causal conv's mix of that token and
    # the few before it: a selection may show on a data token or on the noise right after it, so both are
    # measured against the rest of the noise.
    after = data + 1
    after = after[torch.isin(after, noise)]
    rest = noise[~torch.isin(noise, after)]
    d_on, d_off = _ratio(mean_delta, data, rest)
    d_after, _ = _ratio(mean_delta, after, rest)
    b_on, b_off = _ratio(B_norm, data, noise)
    c_on, c_off = _ratio(C_norm, data, noise)
    state = ("a trained model: where it learned to select, Delta is large where a data token is written into the "
             "state and small on the noise (the state kept)" if mamba.trained else
             "a fresh, untrained model: Delta differs by channel (its dt_bias, drawn log-uniformly in "
             "[dt_min, dt_max]) but hardly by token, since nothing has taught it to select yet. A trained model "
             "should show large Delta at the data tokens and small Delta on noise (run with model_path=...)")
    caption = (f"{mamba.name}: {mamba.provenance}. {s4.name}: {s4.provenance}. One selective-copying sequence of "
               f"{L} tokens, {len(data)} data tokens (dotted lines, triangles) among noise, then {task.n_data} "
               f"markers (grey band). Top left: Mamba's step size Delta = softplus(dt_proj(x_proj(x)) + dt_bias) "
               f"per position and channel, log colour scale; below it, its mean over channels, and the norms of the "
               f"input-dependent B_t and C_t. This is {state}. Computed on this sequence: mean Delta {d_on:.4g} on "
               f"data tokens and {d_after:.4g} on the noise token right after one, vs {d_off:.4g} on the other "
               f"noise (ratios {d_on / d_off:.3g} and {d_after / d_off:.3g}); |B| {b_on:.3g} vs {b_off:.3g}; "
               f"|C| {c_on:.3g} vs {c_off:.3g}. Right: S4's convolution kernel K (a function of its parameters "
               f"only), so every token, data or noise, is weighted by its distance alone.")
    return Drawn("2_selectivity", "Selectivity: Mamba's input-dependent Delta, B, C vs S4's fixed kernel", caption,
                 png)
