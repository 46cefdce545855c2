"""Turn a results folder into tables (CSV + markdown) and plots (seaborn).

    ssmbench-report results/demo            # writes results/demo/{rows.csv, summary.md, plots/*.png}
    ssmbench-report results/demo --by d_model --best-over lr   # d_model named in every label; best lr per model

Tables: accuracy by model and evaluation length (mean ± std over seeds, with their count n; accuracy.csv holds the
same in long format, one line per label and length: mean_pct, std_pct, n, runs, cell), then training and
evaluation throughput, parameters and peak memory per model; when the rows hold selective copying or induction
heads, paper_comparison.md puts them beside the Mamba paper's Table 1 / Table 11. Plots: accuracy against
length (log2 axis when the lengths span more than one octave), learning curves, induction extrapolation,
training throughput, peak memory; one colour per model in all of them (plots.MODEL_COLOURS).

Rows are grouped by variant label (grouping.variant_labels): the model name, plus any configuration key other
than the seed that varies among that model's rows, so no table or plot averages over such a key. `--by KEY` names
KEY in every label even where it does not vary; `--best-over KEY` keeps, per label, the KEY value that scores best at
the training length (grouping.choose_best) and lists the choices in summary.md.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import EngFormatter

from .grouping import (
    FEW_SCORED,
    FEW_SCORED_NOTE,
    MissingKey,
    choose_best,
    config_frame,
    key_values,
    pct_text,
    score_spread,
    seed_stats,
    variant_labels,
)
from .paper import write_comparison
from .plots import chance_lines, induction_extrapolation, learning_curves, legend_label, line_styles, save_figure
from .progress_report import write_in_progress
from .results import load_all

STATUS_ORDER = ("ok", "nan", "oom", "error")


def load_frame(folder: str | Path, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows under `folder` as a frame, labelled (grouping.variant_labels, naming the keys of `by` in every label;
    MissingKey when no row has one); `df.attrs["unreadable"]` lists (file name, reason) of the row files that could
    not be read (truncated, corrupt, not rows), which the summary names instead of crashing on them."""
    rows = load_all(folder)
    if not rows:
        bad = "".join(f"\n  {name}: {reason}" for name, reason in rows.unreadable)
        raise SystemExit(f"ssmbench-report: no rows under {folder} (expected {folder}/rows/*.json)"
                         + (f"; files not read:{bad}" if bad else ""))
    df = pd.DataFrame(rows)
    df.attrs["unreadable"] = list(rows.unreadable)
    for col in ("accuracy", "loss", "train_tokens_per_s", "eval_tokens_per_s", "train_peak_mem_bytes", "params",
                "eval_len"):
        if col not in df:
            df[col] = math.nan
    df["label"] = variant_labels(df, always=by)
    return df


def keep_best(df: pd.DataFrame, key: str, by: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of the best `key` value per label (grouping.choose_best), labelled again: a label names `key` only
    where the values chosen for one model differ. Also the table of choices."""
    kept, choices = choose_best(df, key, always=by)
    return kept.assign(label=variant_labels(kept, always=by)), choices


def accuracy_long(df: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """One line per (variant label, eval length): label, model, the `by` keys, eval_len, mean_pct and std_pct
    (accuracy % over the ok runs, std NaN for one), n (ok runs), runs (all runs), cell (as in the table)."""
    df = df[df["eval_len"].notna()]
    config = config_frame(df) if by else None  # parsing every run's yaml only when a key is asked for
    named = pd.DataFrame({k: key_values(df, k, config) for k in by}, index=df.index)
    lines = []
    for (label, L), g in df.groupby(["label", "eval_len"], sort=True):
        lines.append({"label": label, "model": g["model"].iloc[0], **named.loc[g.index].iloc[0].to_dict(),
                      "eval_len": int(L), **seed_stats(g), "cell": score_spread(g)})
    return pd.DataFrame(lines)


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows: model (variant label); columns: eval length; cells: accuracy (%) mean ± std over the seeds with status
    ok and their count, `87.9 ± 4.1 (n=3)`. A cell with no ok run shows the failure status (oom, nan, error); '*'
    marks a mean over fewer runs than were launched."""
    return cells_by_length(accuracy_long(df))


def cells_by_length(long: pd.DataFrame) -> pd.DataFrame:
    """accuracy_long's cells, one row per label and one column per eval length."""
    if long.empty:
        return pd.DataFrame()
    table = long.pivot(index="label", columns="eval_len", values="cell")
    table = table[sorted(table.columns)].fillna("-")  # "-": not evaluated at that length (a "nan" cell is a status)
    table.columns = [f"L={c}" for c in table.columns]
    table.index.name = "model"
    return table


def efficiency_table(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    train = ok.drop_duplicates("run_id")
    g = train.groupby("label")
    table = pd.DataFrame({
        "arch": g["arch"].first(),
        "layer": g["layer"].first(),
        "params": g["params"].first().astype(int),
        "seeds": g["seed"].nunique(),
        "steps": g["steps"].median(),
        "train tok/s": g["train_tokens_per_s"].median().round(0),
        "train peak MiB": (g["train_peak_mem_bytes"].max() / 2**20).round(1),
        "train s": g["train_time_s"].median().round(1),
    })
    table["eval tok/s (median)"] = ok.groupby("label")["eval_tokens_per_s"].median().round(0)
    env = train.groupby("label")[["device", "scan_backend"]].first()
    table = table.join(env)
    table.index.name = "model"
    return table


def failures(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != "ok"]
    cols = [c for c in ("model", "task", "seed", "eval_len", "status", "error") if c in bad]
    return bad[cols].drop_duplicates()


def _bars(ax, data: pd.DataFrame, y: str, palette: dict, estimator: str = "mean") -> list[str]:
    """One horizontal bar per variant label, in its model's colour, best first (at the top); the value is on the x
    axis and the y labels name the variants (shortened as in the legends), so no legend. Horizontal, because
    variant labels can be long: under a vertical bar they would need more room than the plot. Returns the labels
    in bar order, top first. The figure's height grows with the number of bars."""
    import seaborn as sns

    order = list(data.groupby("label")[y].agg(estimator).sort_values(ascending=False).index)
    ax.figure.set_size_inches(ax.figure.get_figwidth(), max(3.0, 1.2 + 0.32 * len(order)))
    sns.barplot(data=data, y="label", x=y, order=order, hue="label", palette=palette, estimator=estimator,
                errorbar=None, legend=False, orient="h", ax=ax)
    ax.set_ylabel("model")
    ax.set_yticks(range(len(order)), [legend_label(label) for label in order])
    return order


def plot(df: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    paths = []
    ok = df[df["status"] == "ok"].copy()
    ok["accuracy (%)"] = 100 * ok["accuracy"]
    palette = {label: style["color"] for label, style in line_styles(df).items()}
    task = ", ".join(sorted(df["task"].dropna().unique()))

    lengths = sorted(ok["eval_len"].dropna().unique())
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if len(lengths) > 1:
        # Lengths where the evaluation's time budget scored only a few answers (8 answers read as 0% or 50%) are
        # hollow marks, not joined into the lines, as in the extrapolation plot.
        few = ok["eval_scored"] < FEW_SCORED if "eval_scored" in ok else pd.Series(False, index=ok.index)
        sns.lineplot(data=ok[~few], x="eval_len", y="accuracy (%)", hue="label", style="label", palette=palette,
                     markers=True, dashes=False, errorbar=("pi", 100) if ok["seed"].nunique() > 1 else None, ax=ax)
        for i, (label, g) in enumerate(ok[few].groupby("label")):
            pts = g.groupby("eval_len")["accuracy (%)"].mean()
            ax.plot(pts.index, pts.values, "o", mfc="none", ms=5, color=palette[label], clip_on=False,
                    label=None if i else f"< {FEW_SCORED} answers scored (not joined)")
        if lengths[-1] / lengths[0] >= 4:
            ax.set_xscale("log", base=2)
        for L in sorted(ok["train_len"].dropna().unique()):
            ax.axvline(L, color="grey", ls=":", lw=1)
        for t in ok["task"].dropna().unique():
            chance_lines(ax, ok[ok["task"] == t], t)
        scale = ", log2 scale" if lengths[-1] / lengths[0] >= 4 else ""
        ax.set_xlabel(f"evaluation sequence length (tokens{scale}; dotted: training length)")
        # the models in name order (seaborn gives them in order of appearance), the marks and chance after them
        entries = sorted(zip(*ax.get_legend_handles_labels()), key=lambda e: (e[1] not in palette, e[1]))
        handles, labels = [h for h, _ in entries], [label for _, label in entries]
        ax.legend(handles, [legend_label(label) for label in labels],
                  title="model (band: min-max over seeds)" if ok["seed"].nunique() > 1 else "model",
                  loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        ax.set_ylim(0, 105)
    elif not ok.empty:
        _bars(ax, ok, "accuracy (%)", palette)
        for c in ax.containers:
            ax.bar_label(c, labels=[pct_text(v) for v in c.datavalues], padding=2)
        for t in ok["task"].dropna().unique():
            chance_lines(ax, ok[ok["task"] == t], t, vertical=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        ax.set_xlim(0, 110)
    # left-aligned: the chance legend of the bar chart sits above the axes' right end
    ax.set_title(f"Accuracy on scored positions ({task})", loc="left")
    # No tight_layout: it would shrink the axes to fit the outside legend; save_figure crops around both.
    paths.append(save_figure(fig, out / "accuracy.png"))

    for new in (learning_curves(df, out), induction_extrapolation(df, out)):
        if new is not None:
            paths.append(new)

    runs = ok.drop_duplicates("run_id")
    for col, label, name in (("train_tokens_per_s", "training throughput (tokens/s)", "throughput.png"),
                             ("train_peak_mem_bytes", "peak memory during training (MiB)", "memory.png")):
        if runs[col].notna().sum() == 0:
            continue
        fig, ax = plt.subplots(figsize=(8, 4))
        data = runs.assign(value=runs[col] / (2**20 if "mem" in col else 1))
        order = _bars(ax, data, "value", palette, "median")
        seeds = data.groupby("label")["seed"].nunique().max()
        if seeds > 1:  # the bar is the median; each run a dot, so the spread over seeds shows
            # seaborn draws the jitter from numpy's global generator: seeded here (and restored), so the same rows
            # give the same figure on every redraw
            saved = np.random.get_state()
            np.random.seed(0)
            try:
                sns.stripplot(data=data, y="label", x="value", order=order, color="black", size=3, jitter=0.15,
                              orient="h", ax=ax)
            finally:
                np.random.set_state(saved)
            ax.set_yticks(range(len(order)), [legend_label(o) for o in order])
            ax.set_ylabel("model")
        ax.set_xlabel(label)
        if "tokens" in col:  # 2M tokens/s rather than 2 and a 1e6 at the axis' end
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        dev = ", ".join(sorted(runs["device"].dropna().unique()))
        what = " (bars: median over seeds; dots: runs)" if seeds > 1 else ""
        sharing = runs["gpu_sharing"].fillna("") if "gpu_sharing" in runs else pd.Series("", index=runs.index)
        if (sharing != "").any():  # per-run rates of runs that shared a GPU, not what one run gets alone
            modes = ", ".join(sorted({v.split(" (")[0] for v in sharing if v}))
            what += f"\n{(sharing != '').sum()} of {len(runs)} runs shared their GPU ({modes}): per-run rates"
        ax.set_title(f"{label.split(' (')[0].capitalize()} — {dev}{what}", fontsize=10)
        paths.append(save_figure(fig, out / name))
    return paths


ACCURACY_NOTE = ("Cells: mean ± sample standard deviation of the accuracy over seeds, runs with status ok only, and "
                 "n, their number (one seed: no ±). '*': some runs at that length did not finish (see below), so n is "
                 "fewer than were launched; a status (oom, nan, error) where none finished; '-': not evaluated. "
                 + FEW_SCORED_NOTE)


def best_section(key: str, choices: pd.DataFrame) -> list[str]:
    """summary.md's lines on --best-over: which value of `key` each label kept, and why."""
    return [f"## Best {key} per model", "",
            f"For each model (label without {key}) the value of {key} with the highest mean accuracy (runs with status "
            f"ok) at the training length (eval_len = train_len) is kept, as the paper reports its best learning rate; "
            f"the tables, plots and paper comparison below hold only its rows (rows.csv keeps every row). 'none': "
            f"no value had a finished run at the training length, so all are kept.", "",
            choices.to_markdown(index=False, disable_numparse=True), ""]


def write_report(folder: str | Path, by: tuple[str, ...] = (), best_over: str | None = None) -> str:
    """Write rows.csv, accuracy.csv, summary.md, ... for `folder`; labels name the keys of `by`; with `best_over`, only
    the best value of that key per label is reported. MissingKey when no row has one of these keys."""
    folder = Path(folder)
    in_progress = write_in_progress(folder)  # runs paused mid-training: listed apart, never as results
    if in_progress and not list(folder.glob("rows/*.json")):
        text = f"# Results: {folder.name}\n\nNo run has finished yet.\n\n{in_progress}"
        (folder / "summary.md").write_text(text)
        return text
    all_rows = load_frame(folder, by)
    df, choices = keep_best(all_rows, best_over, by) if best_over else (all_rows, None)  # a missing key: no file yet
    flat = all_rows.drop(columns=[c for c in ("config", "history") if c in all_rows])
    flat.sort_values([c for c in ("model", "seed", "eval_len") if c in flat]).to_csv(folder / "rows.csv", index=False)
    long = accuracy_long(df, by)
    acc = cells_by_length(long)
    eff = efficiency_table(df)
    fails = failures(df)
    long.to_csv(folder / "accuracy.csv", index=False)
    parts = [f"# Results: {folder.name}", "",
             f"{df['run_id'].nunique()} runs, {len(df)} rows; task: {', '.join(sorted(df['task'].dropna().unique()))}.",
             ""]
    unreadable = all_rows.attrs.get("unreadable") or []
    if unreadable:
        parts += ["## Files not read", "",
                  f"{len(unreadable)} row files are not complete JSON lists of rows (truncated, corrupt or not rows); "
                  "their runs are missing from every table below. Running the same sweep again (resume) moves "
                  "each aside and redoes its run.", ""]
        parts += [f"- `{name}`: {reason.splitlines()[0] if reason else ''}" for name, reason in unreadable] + [""]
    if choices is not None:
        choices.to_csv(folder / f"best_{best_over}.csv", index=False)
        parts += best_section(best_over, choices)
    grouped = f"Rows: model, {', '.join(by)} (--by), and any other setting that varies. " if by else ""
    parts += ["## Accuracy (%) on scored positions, by evaluation length", "", grouped + ACCURACY_NOTE, "",
              acc.to_markdown(disable_numparse=True), ""]
    if not eff.empty:
        eff.to_csv(folder / "efficiency.csv")
        parts += ["## Efficiency (training at the training length)", "", eff.to_markdown(), ""]
    if not fails.empty:
        parts += ["## Runs that did not finish cleanly", "", fails.to_markdown(index=False), ""]
    # gpu_sharing: how a run's GPU was shared (rows since session 11): the efficiency table's rates are per run
    env_cols = ["device", "torch", "triton", "cuda", "commit"] + (["gpu_sharing"] if "gpu_sharing" in df else [])
    envs = df.drop_duplicates([c for c in env_cols if c != "cuda"])[env_cols] \
        if "device" in df else pd.DataFrame()
    if not envs.empty:
        parts += ["## Environment", "", envs.to_markdown(index=False), ""]
    comparison = write_comparison(df, folder)
    if comparison is not None:
        parts += ["## Beside the paper", "",
                  f"Our numbers beside the Mamba paper's: [{comparison.name}]({comparison.name}).", ""]
    plots = plot(df, folder / "plots")
    parts += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    if in_progress:
        parts += [in_progress]
    text = "\n".join(parts)
    (folder / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="ssmbench-report", description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", metavar="folder",
                    help="a results folder, e.g. results/demo (holding rows/*.json); several (one per host) are merged "
                         "(ssmbench/merge.py): duplicates dropped, conflicting rows listed in summary.md")
    ap.add_argument("--out", metavar="DIR", help="with several folders: where the merged rows and the report go "
                                                 "(default: the first folder)")
    ap.add_argument("--quiet", action="store_true", help="write the files without printing the summary")
    ap.add_argument("--by", metavar="KEY", action="append", default=[],
                    help="name KEY (a row column such as lr, d_model, task.seq_len, or a config key such as "
                         "trainer.steps) in every row label of the tables, even where it does not vary; repeatable")
    ap.add_argument("--best-over", metavar="KEY",
                    help="report, per model, only the KEY value (e.g. lr) with the best mean accuracy at the training "
                         "length; summary.md lists the value chosen for each and those tried")
    args = ap.parse_args(argv)
    by = tuple(dict.fromkeys(args.by))  # a key given twice is one column
    if args.best_over and args.best_over in by:
        ap.error(f"--best-over {args.best_over} keeps one value of it per label; --by {args.best_over} names each")
    one_folder = len(args.folders) == 1 and (args.out is None
                                             or Path(args.out).resolve() == Path(args.folders[0]).resolve())
    from .merge import write_merged_report

    try:
        text = (write_report(args.folders[0], by, args.best_over) if one_folder
                else write_merged_report(args.folders, args.out, by, args.best_over))
    except MissingKey as e:
        ap.error(f"{'--by' if e.key in by else '--best-over'} {e.key}: {e}")
    if not args.quiet:
        print(text)
