"""Figures of `ssmbench-trainbench --summarize`: the step time of each experiment and model by step mode, and
each implementation setting's ratio to the defaults it was timed against (stage step_options / compile).

Both read the rows `summarize` reads; model colours are the report's (ssmbench.plots.model_colour)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..plots import model_colour, save_figure


def step_time_plot(solo: pd.DataFrame, out: Path) -> Path | None:
    """ms per step for each (experiment, model), one bar per step mode (eager hatched, graphs solid), in the
    model's colour; log axis, since the induction and Table 1 steps are a decade apart."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    solo = solo[solo["mode_asked"].isin(["eager", "graphs"])]
    if solo.empty:
        return None
    table = solo.pivot_table(index=["experiment", "model"], columns="mode_asked", values="ms_per_step")
    modes = [m for m in ("eager", "graphs") if m in table.columns]
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.45 * len(table) * max(1, len(modes)) / 1.6))
    height = 0.8 / len(modes)
    for i, (key, row) in enumerate(table.iterrows()):
        for j, mode in enumerate(modes):
            if pd.notna(row[mode]):
                y = i + (j - (len(modes) - 1) / 2) * height
                ax.barh(y, row[mode], height=height, color=model_colour(key[1]), alpha=0.45 if mode == "eager" else 1,
                        hatch="//" if mode == "eager" else None, edgecolor="black", lw=0.4)
                ax.text(row[mode] * 1.03, y, f"{row[mode]:.2f}", va="center", fontsize=7)
    ax.set_yticks(range(len(table)), [f"{e} / {m}" for e, m in table.index])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms per training step (median of the timed blocks; log scale)")
    ax.legend(handles=[Patch(facecolor="grey", alpha=0.45 if m == "eager" else 1, hatch="//" if m == "eager" else None,
                             edgecolor="black", label="eager" if m == "eager" else "one CUDA graph") for m in modes],
              loc="lower right", fontsize=8)
    ax.set_title(f"Training step time — {solo['device'].iloc[0]}", fontsize=10)
    ax.grid(axis="x", alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, out / "step_time.png")


def settings_ratio_plot(tagged: pd.DataFrame, out: Path) -> Path | None:
    """A heat map of ms per step under each setting tag divided by its baseline's (`defaults`, `compile-none`), by
    model: under 1 (blue) the setting is faster, over 1 (red) slower; each cell printed."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import TwoSlopeNorm

    from .training import setting_ratios

    ratios = [r.drop(index=base).rename(index=lambda t, b=base: f"{t}  (/ {b})")
              for base, r in setting_ratios(tagged).items()]
    if not ratios:
        return None
    ratio = pd.concat(ratios)
    ratio.index = [_setting_label(label) for label in ratio.index]
    spread = max(0.05, float((ratio - 1).abs().max().max()))
    label_in = 0.075 * max(len(line) for label in ratio.index for line in label.split("\n"))
    fig, ax = plt.subplots(figsize=(1.8 + label_in + 0.95 * ratio.shape[1], 1.4 + 0.5 * ratio.shape[0]))
    sns.heatmap(ratio, annot=True, fmt=".2f", cmap="RdBu_r", norm=TwoSlopeNorm(1.0, 1 - spread, 1 + spread),
                cbar_kws={"label": "ms per step / baseline's (under 1: faster)"}, linewidths=0.5, ax=ax)
    ax.set_xlabel("model")
    ax.tick_params(axis="x", rotation=30)
    ax.set_ylabel("setting (changed from its baseline)")
    ax.set_title(f"Step time against the baseline — {tagged['device'].iloc[0]}, commit {tagged['commit'].iloc[0]}",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out / "settings_ratio.png")


def _setting_label(tag: str) -> str:
    """`SSMBENCH_CONV_BWD-fused+SSMBENCH_RMSNORM-torch  (/ defaults)` -> `CONV_BWD=fused, RMSNORM=torch` with the
    baseline on a second line: the tags name environment settings, so they read as such."""
    setting, _, base = tag.partition("  (/ ")
    parts = [p.replace("SSMBENCH_", "").replace("-", "=", 1) for p in setting.split("+")]
    lines = [", ".join(parts[i:i + 2]) for i in range(0, len(parts), 2)]
    return "\n".join(lines) + (f"\n(against {base.rstrip(')')})" if base else "")
