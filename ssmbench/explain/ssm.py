"""Figure family 1, the state space model itself: HiPPO-LegS (its A, and a signal rebuilt from its state), the
two views of one S4 layer (recurrence and convolution, same input, same output), and the zero-order-hold
discretisation A-bar = exp(dt A) at several step sizes."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from numpy.polynomial import legendre  # noqa: E402

from ssmbench.models.layers.s4 import hippo_legs  # noqa: E402
from ssmbench.plots import LINE_STYLES, model_colour, save_figure  # noqa: E402

from .common import Drawn, Setting, layer_io, mark_data  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
# HiPPO-LegS: online compression of a signal's whole history into N Legendre coefficients

def legs_online(signal: np.ndarray, N: int) -> np.ndarray:
    """Feed `signal` (one sample per step) through the HiPPO-LegS recurrence and return the final state [N].

    LegS projects the history f(s), s in [0, t], onto the scaled Legendre polynomials; its coefficients obey
    c'(t) = (1/t) A c(t) + (1/t) B f(t) with (A, B) = hippo_legs(N). At step k (t = k) the update is the bilinear
    discretisation with step 1/k, as in the HiPPO code: (I - A/2k) c_k = (I + A/2k) c_{k-1} + B f_k / k."""
    A, B = (m.numpy() for m in hippo_legs(N))
    eye, c = np.eye(N), np.zeros(N)
    for k, f in enumerate(signal, start=1):
        c = np.linalg.solve(eye - A / (2 * k), (eye + A / (2 * k)) @ c + B * f / k)
    return c


def legs_reconstruct(c: np.ndarray, length: int) -> np.ndarray:
    """The history the state c describes, at the `length` sample times: sum_n c_n sqrt(2n+1) P_n(2s/t - 1)."""
    x = 2 * (np.arange(length) + 0.5) / length - 1
    N = len(c)
    basis = np.stack([math.sqrt(2 * n + 1) * legendre.legval(x, np.eye(N)[n]) for n in range(N)], axis=1)
    return basis @ c


def example_signal(length: int) -> np.ndarray:
    """Two sines and a step: smooth parts and a jump, on t in [0, 1]."""
    t = np.linspace(0, 1, length)
    return np.sin(2 * np.pi * 3 * t) + 0.5 * np.sin(2 * np.pi * 7 * t + 1) + 0.8 * (t > 0.6)


def hippo_figure(setting: Setting, out: Path) -> Drawn:
    cfg = setting.cfg.ssm
    A, _ = hippo_legs(cfg.heatmap_n)
    f = example_signal(cfg.signal_len)
    recs = {N: legs_reconstruct(legs_online(f, N), len(f)) for N in (cfg.hippo_small_n, cfg.hippo_n)}
    rmse = {N: float(np.sqrt(np.mean((r - f) ** 2))) for N, r in recs.items()}

    fig, (ax_a, ax_r) = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained",
                                     gridspec_kw={"width_ratios": [1, 1.7]})
    im = ax_a.imshow(A.numpy(), cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax_a, label="$A_{nk}$ (1/time)", shrink=0.8)
    ticks = range(0, cfg.heatmap_n, max(1, cfg.heatmap_n // 8))
    ax_a.set_xticks(ticks)
    ax_a.set_yticks(ticks)
    ax_a.set(xlabel="column k (input coefficient)", ylabel="row n (output coefficient)",
             title=f"HiPPO-LegS $A$, N = {cfg.heatmap_n}\n(lower triangular; 0 above the diagonal)")

    t = np.linspace(0, 1, len(f))
    ax_r.plot(t, f, color="black", lw=2.2, label="signal f(t)")
    for i, (N, r) in enumerate(sorted(recs.items())):
        # the smaller state dashed and faint, the larger solid: one colour, as both are S4's HiPPO init
        ax_r.plot(t, r, color=model_colour("s4"), lw=1.4, ls=LINE_STYLES[1] if i == 0 else LINE_STYLES[0],
                  alpha=0.7 if i == 0 else 1.0, label=f"rebuilt from the N = {N} state (RMSE {rmse[N]:.3f})")
    ax_r.set(xlabel="time s (fraction of the history seen)", ylabel="signal value (arbitrary units)",
             title=f"The whole history, rebuilt from the state after the last step (t = {len(f)})")
    ax_r.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=3, frameon=False)
    png = save_figure(fig, out / "1a_hippo.png")
    caption = (f"Left: the HiPPO-LegS state matrix A for N = {cfg.heatmap_n} (A_nk = -sqrt(2n+1) sqrt(2k+1) below "
               f"the diagonal, -(n+1) on it), the matrix S4 starts from. Right: a signal of {len(f)} samples fed "
               f"one sample a step through the LegS recurrence (bilinear, step 1/t); after the last step the N "
               f"coefficients alone rebuild the whole history as a sum of scaled Legendre polynomials. RMSE "
               + ", ".join(f"{rmse[N]:.3f} with N = {N}" for N in sorted(rmse))
               + "; the misfit concentrates at the jump (Gibbs ringing). No model weights are involved.")
    return Drawn("1a_hippo", "HiPPO-LegS: the matrix and what its state remembers", caption, png)


# ---------------------------------------------------------------------------------------------------------------
# S4: one layer, two views

@torch.no_grad()
def s4_views(layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [1, L, H] -> (convolutional output = forward(), recurrent output = step() from an empty cache), each
    [L, H]."""
    y_conv = layer(x)[0]
    cache = layer.allocate_cache(1, x.shape[1], x.device)
    ys = []
    for t in range(x.shape[1]):
        y_t = layer.step(x[:, t], cache)
        ys.append(y_t[0])
    return y_conv, torch.stack(ys)


def s4_views_figure(setting: Setting, out: Path) -> Drawn:
    fig_s4 = setting.models["s4"]
    block = setting.cfg.block
    layer = fig_s4.model.blocks[block].layer
    x = layer_io(fig_s4.model, block, setting.copy_inputs)["args"][0]  # what the layer reads on the sequence
    y_conv, y_rec = s4_views(layer, x)
    diff = (y_conv - y_rec).abs()
    max_diff = float(diff.max())
    scale = float(y_conv.abs().max())
    channels = list(range(min(setting.cfg.ssm.channels, y_conv.shape[1])))

    fig, (ax, ax_d) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    pos = np.arange(y_conv.shape[0])
    c = model_colour(fig_s4.name)
    for i, ch in enumerate(channels):
        ax.plot(pos, y_conv[:, ch].numpy(), color=c, lw=2.4, alpha=0.45 + 0.3 * (i == 0),
                label=f"convolution (forward), channel {ch}")
        ax.plot(pos, y_rec[:, ch].numpy(), color="black", lw=0, marker="ox"[i % 2], ms=3.5,
                label=f"recurrence (step), channel {ch}")
    mark_data(ax, setting.copy_task, setting.copy_inputs)
    ax.set(ylabel="layer output y (activation units)",
           title=f"One S4 layer ({fig_s4.name}, block {block}), two views of the same map: "
                 f"max |conv - rec| = {max_diff:.2e}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    ax_d.semilogy(pos, diff.max(dim=1).values.clamp_min(1e-12).numpy(), color=c, lw=1.4)
    ax_d.set(xlabel="position in the sequence (token index)", ylabel="|conv - rec|\n(max over channels)")
    fig.tight_layout()
    png = save_figure(fig, out / "1b_s4_two_views.png")
    caption = (f"The S4 layer of block {block} of the {fig_s4.name} model ({fig_s4.provenance}), run on what it "
               f"reads for the selective-copying sequence of figure 2 ({x.shape[1]} positions, {x.shape[2]} "
               f"channels). Lines: the convolutional view, forward() = causal FFT convolution with the kernel "
               f"K_l = Re(C A-bar^l B-bar). Marks: the recurrent view, step() from an empty cache one token at a "
               f"time, h_t = A-bar h_(t-1) + B-bar x_t. Computed max abs difference over all "
               f"{y_conv.numel()} outputs: {max_diff:.3e} (outputs reach {scale:.3g}), fp32 rounding: one "
               f"linear time-invariant map, two algorithms. Dotted lines: data tokens; grey band: markers.")
    return Drawn("1b_s4_two_views", "S4: the recurrent and the convolutional view agree", caption, png)


# ---------------------------------------------------------------------------------------------------------------
# Zero-order hold

def zoh_figure(setting: Setting, out: Path) -> Drawn:
    cfg = setting.cfg.ssm
    N = cfg.heatmap_n
    A, _ = hippo_legs(N)
    dts = sorted(cfg.dts)
    bars = {dt: torch.linalg.matrix_exp(dt * A) for dt in dts}
    s4 = setting.models["s4"]
    s4_layer = s4.model.blocks[setting.cfg.block].layer
    layer_dt = torch.exp(s4_layer.log_dt.detach().double())

    fig, axes = plt.subplots(1, len(dts) + 1, figsize=(3.8 * len(dts) + 5.2, 4.0), layout="constrained",
                             gridspec_kw={"width_ratios": [1] * len(dts) + [1.3]})
    ticks = range(0, N, max(1, N // 5))
    for ax, dt in zip(axes, dts):
        M = bars[dt].numpy()
        lim = float(np.abs(M).max())
        im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.7, label="$\\bar{A}_{nk}$ (per step, no unit)")
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set(title=f"$\\bar{{A}} = \\exp(\\Delta A)$, $\\Delta$ = {dt:g}", xlabel="column k", ylabel="row n")
    ax = axes[-1]
    cmap = plt.get_cmap("viridis")
    n = np.arange(N)
    for i, dt in enumerate(dts):
        mags = np.sort(np.abs(torch.linalg.eigvals(bars[dt]).numpy()))[::-1]
        ax.semilogy(n, mags, "o-", color=cmap(0.85 * i / max(1, len(dts) - 1)), ms=3.5, lw=1.2,
                    label=f"$\\Delta$ = {dt:g}")
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.set(xlabel="eigenvalue index (largest first)", ylabel="$|\\lambda(\\bar{A})|$, per step (log scale)",
           title="How much of the state survives one step")
    ax.set_xticks(ticks)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    fig.get_layout_engine().set(w_pad=0.12)  # room between a colour bar's label and the next panel
    png = save_figure(fig, out / "1c_zoh.png")
    slow = {dt: float(math.exp(-dt)) for dt in dts}
    fast = {dt: float(math.exp(-dt * N)) for dt in dts}
    caption = (f"Zero-order hold of the HiPPO-LegS A (N = {N}): A-bar = exp(Delta A), the per-step state "
               f"transition of the recurrence. A is lower triangular with eigenvalues -(n+1), so A-bar's are "
               f"exp(-Delta (n+1)): "
               + "; ".join(f"Delta = {dt:g} keeps {slow[dt]:.3g} of the slowest mode and {fast[dt]:.2g} of the "
                           f"fastest per step" for dt in dts)
               + ". A small step nearly copies the state (long memory, little input); a large one forgets it "
               f"and takes the new input. The S4 layer of the {s4.name} model ({s4.provenance}) uses one step per "
               f"channel, here Delta in [{float(layer_dt.min()):.2g}, {float(layer_dt.max()):.2g}], the same for "
               f"every input; Mamba makes Delta a function of each token (figure 2).")
    return Drawn("1c_zoh", "Discretisation: A-bar = exp(Delta A) at several step sizes", caption, png)
