"""Figures shared by the report: one colour per model everywhere, learning curves, induction extrapolation.

Every figure is saved as PNG (200 dpi) and PDF side by side (`save_figure`). Lines are grouped by variant
label (grouping.variant_labels); variants of one model share its colour and differ in line style.
"""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter  # noqa: E402

from .grouping import FEW_SCORED, variant_labels  # noqa: E402
from .paper import INDUCTION_NAMES, paper_table11  # noqa: E402

# One colour per model name (conf/model/*.yaml), the same in every plot. Families share a hue range
# (attention blues, RNNs browns/greys, LTI SSMs orange/red/purple/pink, selective SSMs greens/teal) but no colour.
MODEL_COLOURS = {
    "transformer": "#1f77b4", "transformer_abs": "#6baed6", "transformer_xpos": "#08306b",
    "lstm": "#8c564b", "gru": "#c49c94", "elman": "#7f7f7f",
    "s4": "#ff7f0e", "h3": "#d62728", "hyena": "#9467bd", "mamba_s4": "#bcbd22", "mamba_hyena": "#e377c2",
    "mamba": "#2ca02c", "s6_nogate": "#98df8a", "s6_h3": "#17becf",
}
# For names not above: picked by a stable hash (not Python's hash(), which changes between processes).
FALLBACK_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
LINE_STYLES = ("-", "--", "-.", ":")
# Past four variants of one model the line styles repeat, so the next four also carry a marker.
VARIANT_MARKERS = (None, "o", "s", "^")
DPI = 200


def model_colour(model: str) -> str:
    if model in MODEL_COLOURS:
        return MODEL_COLOURS[model]
    return FALLBACK_COLOURS[zlib.crc32(model.encode()) % len(FALLBACK_COLOURS)]


def chance_accuracy(task: str, vocab_size: int) -> float:
    """Accuracy of a uniform guess among the symbols a scored target can take (see each task's docstring):
    selective_copy/copy: the data tokens 2..V-1; induction: the ordinary tokens 0..V-2; mqar: the values
    K+1..V-1 with K = (V-1)//2."""
    n_symbols = {"selective_copy": vocab_size - 2, "copy": vocab_size - 2, "induction": vocab_size - 1,
                 "mqar": vocab_size - 1 - (vocab_size - 1) // 2}.get(task)
    return 1 / n_symbols if n_symbols else math.nan


def save_figure(fig, png: Path) -> Path:
    """PNG at 200 dpi and a PDF beside it; the legend may sit outside the axes, so crop to everything drawn."""
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    # no creation date in the PDF: a figure redrawn from the same rows is then the same file, and git shows no change
    fig.savefig(png.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return png


def line_styles(df: pd.DataFrame) -> dict[str, dict]:
    """Per variant label: its model's colour, and a line style (then a marker, past four variants) that tells
    variants of one model apart."""
    styles = {}
    for model, labels in df.groupby("model")["label"].unique().items():
        for i, label in enumerate(sorted(labels)):
            styles[label] = {"color": model_colour(model), "ls": LINE_STYLES[i % len(LINE_STYLES)]}
            marker = VARIANT_MARKERS[(i // len(LINE_STYLES)) % len(VARIANT_MARKERS)]
            if marker:
                styles[label] |= {"marker": marker, "ms": 4, "markevery": 0.1}
    return styles


def legend_label(label: str) -> str:
    """A variant label shortened for a legend: the config groups' prefixes dropped (`trainer.lr=` -> `lr=`,
    `model.pos_emb=` -> `pos_emb=`), `batch_size` as `batch`. Tables keep the full keys."""
    return re.sub(r"(?<=[(\s])(?:trainer|model|task|eval)\.", "", label).replace("batch_size=", "batch=")


def _mean_band(ax, table: pd.DataFrame, style: dict, label: str) -> None:
    """table: index x, one column per run. Mean line; min..max band where there are several runs."""
    mean = table.mean(axis=1)  # skips NaN: a run that stopped early (target reached) leaves the later steps
    ax.plot(table.index, mean, label=legend_label(label), lw=1.8, **style)
    if table.shape[1] > 1:
        ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=style["color"], alpha=0.15, lw=0)


def chance_lines(ax, rows: pd.DataFrame, task: str, vertical: bool = False) -> None:
    """A dashed line at chance accuracy (%) for each vocabulary size among `rows` of `task`: horizontal where
    accuracy is the y axis, vertical (`vertical=True`) where it is the x axis (horizontal bars)."""
    vocab = rows["task.vocab_size"].dropna().unique() if "task.vocab_size" in rows else []
    for V in vocab:
        p = chance_accuracy(task, int(V))
        if not math.isnan(p):
            line = ax.axvline if vertical else ax.axhline
            line(100 * p, color="black", ls="--", lw=1, label=f"chance (1/{round(1 / p)})")


def history_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per held-out check: model, label, run_id, step, accuracy (%), loss, grad_norm_max (NaN where the
    check has none: no clipping, or recorded before session 11). Rows repeat their run's history once per
    evaluation length, so each run is read once."""
    records = []
    for run in rows.drop_duplicates("run_id").to_dict("records"):
        for check in run.get("history") if isinstance(run.get("history"), list) else []:
            norm = check.get("grad_norm_max")
            records.append({"model": run["model"], "label": run["label"], "run_id": run["run_id"],
                            "step": check["step"], "accuracy": 100 * check["accuracy"], "loss": check["loss"],
                            "grad_norm_max": math.nan if norm is None else norm})
    return pd.DataFrame(records)


def by_task(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each task, labelled within the task (so labels do not name the task's own settings)."""
    return {task: rows.assign(label=variant_labels(rows)) for task, rows in df.groupby("task", sort=True)}


def learning_curves(df: pd.DataFrame, out: Path) -> Path | None:
    """Held-out accuracy (left) and loss (middle) against training step, and where the checks recorded it the
    largest gradient norm before clipping since the previous check (right: a loss spike between two checks shows
    there); one row of panels per task."""
    histories = {task: history_frame(rows) for task, rows in by_task(df).items()}
    histories = {task: h for task, h in histories.items() if not h.empty}
    if not histories:
        return None
    with_norms = any(h["grad_norm_max"].notna().any() for h in histories.values())
    # each task's panels, then its legend beneath them in two columns (~0.17 in a line)
    legend_in = max(0.6 + 0.17 * math.ceil((h["label"].nunique() + 1) / 2) for h in histories.values())
    fig, axes = plt.subplots(len(histories), 3 if with_norms else 2, figsize=(17.5 if with_norms else 12,
                                                                            3.8 * len(histories)), squeeze=False)
    for row, (task, hist) in zip(axes, histories.items()):
        acc_ax, loss_ax = row[0], row[1]
        panels = [(acc_ax, "accuracy"), (loss_ax, "loss")] + ([(row[2], "grad_norm_max")] if with_norms else [])
        styles = line_styles(hist)
        for label, g in hist.groupby("label"):
            for ax, metric in panels:
                table = g.pivot_table(index="step", columns="run_id", values=metric)  # drops checks without one
                if not table.empty:
                    _mean_band(ax, table, styles[label], label)
        if with_norms:
            row[2].set(xlabel="training step", ylabel="gradient norm (largest since last check)", yscale="log",
                       title=f"{task}: gradient norm before clipping")
        chance_lines(acc_ax, df[df["task"] == task], task)
        acc_ax.set(xlabel="training step", ylabel="held-out accuracy (%)", ylim=(0, 102), title=f"{task}: accuracy")
        loss_ax.set(xlabel="training step", ylabel="held-out loss (cross-entropy, nats)", yscale="log",
                    title=f"{task}: loss")
        # plain numbers (2.1, 2.2, ...) where the losses span less than a decade, instead of 2.1 x 10^0
        for ax in row[1:]:
            for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                set_formatter(LogFormatter(labelOnlyBase=False))
        for ax in row:  # 50k rather than 50000: the step labels otherwise run into each other
            ax.xaxis.set_major_formatter(FuncFormatter(step_text))
    fig.suptitle("Learning curves (mean over seeds; band: min..max)", y=1.0)
    fig.tight_layout()
    if len(histories) > 1:  # room between the rows for the legend of the row above
        fig.subplots_adjust(hspace=0.45 + legend_in / 3.0)
    # Each task's legend under its own panels, outside them so it never covers a curve, and below rather than
    # beside them so that long variant labels cannot squeeze the panels: a figure legend placed after the layout
    # (an axes legend would make tight_layout shrink the accuracy panel to the legend's width).
    for acc_ax in axes[:, 0]:
        box = acc_ax.get_position()
        fig.legend(*acc_ax.get_legend_handles_labels(), loc="upper left", ncols=2, frameon=False, fontsize=8,
                   bbox_to_anchor=(box.x0, box.y0 - 0.55 / fig.get_figheight()))
    return save_figure(fig, out / "learning_curves.png")


def step_text(v, _pos=None) -> str:
    """A step count for an axis tick: 50k rather than 50000 from 1000 on (long labels run into each other)."""
    return f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}"


def _legend_below(ax, ncols: int = 2) -> None:
    """The legend under the axes in columns, one entry per label: for many or long entries, which beside the axes
    would leave the plot itself a sliver of the figure."""
    entries = dict(zip(*reversed(ax.get_legend_handles_labels())))
    ax.legend(entries.values(), entries.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=ncols,
              frameon=False, fontsize=8)


def induction_extrapolation(df: pd.DataFrame, out: Path) -> Path | None:
    """Induction heads: accuracy against test length (log2), ours solid, the paper's faint and dashed."""
    rows = by_task(df).get("induction")
    if rows is None:
        return None
    styles = line_styles(rows)
    # wide: fifteen lengths on the x axis; the legend below the axes, where long variant labels cannot squeeze them
    # (the figure is tall enough for both: tight_layout makes room for the legend inside the figure)
    fig, ax = plt.subplots(figsize=(12.5, 8.5))
    few_labelled = False
    for label, g in rows.groupby("label"):
        ok = g[g["status"] == "ok"]
        # Lengths where the evaluation's time budget left only a few scored answers are not joined into the
        # line (8 answers read as 0% or 50%): hollow markers, apart.
        few = ok["eval_scored"] < FEW_SCORED if "eval_scored" in ok else pd.Series(False, index=ok.index)
        if not ok[~few].empty:
            _mean_band(ax, ok[~few].pivot_table(index="eval_len", columns="run_id", values="accuracy") * 100,
                       styles[label], label)
        if few.any():
            pts = ok[few].groupby("eval_len")["accuracy"].mean() * 100
            ax.plot(pts.index, pts.values, "o", mfc="none", color=styles[label]["color"], ms=5, clip_on=False,
                    label=None if few_labelled else f"< {FEW_SCORED} answers scored (not joined)")
            few_labelled = True
        oom = sorted(set(g.loc[g["status"] == "oom", "eval_len"]) - set(ok["eval_len"]))
        if oom:
            ax.plot(oom, [0] * len(oom), "x", color=styles[label]["color"], ms=7, mew=2, clip_on=False,
                    label="out of memory (ours)")
    paper = paper_table11().apply(pd.to_numeric, errors="coerce")  # "oom" -> NaN: the line stops there
    for model, name in INDUCTION_NAMES.items():
        ax.plot(paper.columns, paper.loc[name], ls="--", lw=1.2, alpha=0.45, color=model_colour(model),
                label=f"paper: {name}")
    for L in sorted(rows["train_len"].dropna().unique()):
        ax.axvline(L, color="grey", ls=":", lw=1.2, label=f"training length ({int(L)})")
    chance_lines(ax, rows, "induction")
    lengths = sorted(set(paper.columns) | set(rows["eval_len"].dropna().astype(int)))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(lengths))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"$2^{{{round(math.log2(v))}}}$"))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set(xlabel="test sequence length (tokens, log2 scale)", ylabel="accuracy (%)", ylim=(0, 102),
           title="Induction heads: extrapolation beyond the training length")
    _legend_below(ax)
    fig.tight_layout()
    return save_figure(fig, out / "induction_extrapolation.png")
