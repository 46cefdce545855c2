"""Turn a results folder into tables (CSV + markdown) and plots (seaborn).

    ssmbench-report results/demo            # writes results/demo/{rows.csv, summary.md, plots/*.png}

Tables: accuracy by model and evaluation length (mean over seeds, with the seed count), then training and
evaluation throughput, parameters and peak memory per model; when the rows hold selective copying or induction
heads, paper_comparison.md puts them beside the Mamba paper's Table 1 / Table 11. Plots: accuracy against
length (log2 axis when the lengths span more than one octave), learning curves, induction extrapolation,
training throughput, peak memory; one colour per model in all of them (plots.MODEL_COLOURS).

Rows are grouped by variant label (grouping.variant_labels): the model name, plus any configuration key other
than the seed that varies among that model's rows, so no table or plot averages over such a key.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from .grouping import score, variant_labels
from .paper import write_comparison
from .plots import induction_extrapolation, learning_curves, line_styles, save_figure
from .progress_report import write_in_progress
from .results import load_all

STATUS_ORDER = ("ok", "nan", "oom", "error")


def load_frame(folder: str | Path) -> pd.DataFrame:
    """The rows under `folder` as a frame; `df.attrs["unreadable"]` lists (file name, reason) of the row files that
    could not be read (truncated, corrupt, not rows), which the summary names instead of crashing on them."""
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
    df["label"] = variant_labels(df)
    return df


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows: model (variant label); columns: eval length; cells: accuracy (%) averaged over seeds with status ok.
    A cell with no ok run shows the failure status (oom, nan, error); '*' marks a mean over fewer runs than were
    launched."""
    df = df[df["eval_len"].notna()]
    out = {}
    for (label, L), g in df.groupby(["label", "eval_len"], sort=True):
        out.setdefault(label, {})[int(L)] = score(g)
    table = pd.DataFrame(out).T
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


def _bars(ax, data: pd.DataFrame, y: str, palette: dict, estimator: str = "mean") -> None:
    """One bar per variant label, in its model's colour, best first; the x labels name them, so no legend."""
    import seaborn as sns

    order = data.groupby("label")[y].agg(estimator).sort_values(ascending=False).index
    sns.barplot(data=data, x="label", y=y, order=order, hue="label", palette=palette, estimator=estimator,
                errorbar=None, legend=False, ax=ax)
    ax.set_xlabel("model")
    ax.tick_params(axis="x", rotation=30)
    for tick in ax.get_xticklabels():  # long variant labels end under their bar
        tick.set(horizontalalignment="right", rotation_mode="anchor")


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
        sns.lineplot(data=ok, x="eval_len", y="accuracy (%)", hue="label", style="label", palette=palette,
                     markers=True, dashes=False, errorbar=("pi", 100) if ok["seed"].nunique() > 1 else None, ax=ax)
        if lengths[-1] / lengths[0] >= 4:
            ax.set_xscale("log", base=2)
        for L in sorted(ok["train_len"].dropna().unique()):
            ax.axvline(L, color="grey", ls=":", lw=1)
        ax.set_xlabel("evaluation sequence length (tokens; dotted: training length)")
        ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    elif not ok.empty:
        _bars(ax, ok, "accuracy (%)", palette)
        for c in ax.containers:
            ax.bar_label(c, fmt="%.1f")
    ax.set_ylim(0, 105)
    ax.set_title(f"Accuracy on scored positions ({task})")
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
        _bars(ax, runs.assign(value=runs[col] / (2**20 if "mem" in col else 1)), "value", palette, "median")
        ax.set_ylabel(label)
        dev = ", ".join(sorted(runs["device"].dropna().unique()))
        ax.set_title(f"{label.split(' (')[0].capitalize()} — {dev}", fontsize=10)
        paths.append(save_figure(fig, out / name))
    return paths


def write_report(folder: str | Path) -> str:
    folder = Path(folder)
    in_progress = write_in_progress(folder)  # runs paused mid-training: listed apart, never as results
    if in_progress and not list(folder.glob("rows/*.json")):
        text = f"# Results: {folder.name}\n\nNo run has finished yet.\n\n{in_progress}"
        (folder / "summary.md").write_text(text)
        return text
    df = load_frame(folder)
    flat = df.drop(columns=[c for c in ("config", "history") if c in df])
    flat.sort_values([c for c in ("model", "seed", "eval_len") if c in flat]).to_csv(folder / "rows.csv", index=False)
    acc = accuracy_table(df)
    eff = efficiency_table(df)
    fails = failures(df)
    acc.to_csv(folder / "accuracy.csv")
    parts = [f"# Results: {folder.name}", "",
             f"{df['run_id'].nunique()} runs, {len(df)} rows; task: {', '.join(sorted(df['task'].dropna().unique()))}.",
             ""]
    unreadable = df.attrs.get("unreadable") or []
    if unreadable:
        parts += ["## Files not read", "",
                  f"{len(unreadable)} row files are not complete JSON lists of rows (truncated, corrupt or not rows); "
                  "their runs are missing from every table below. Running the same sweep again (resume) moves "
                  "each aside and redoes its run.", ""]
        parts += [f"- `{name}`: {reason.splitlines()[0] if reason else ''}" for name, reason in unreadable] + [""]
    parts += ["## Accuracy (%) on scored positions, by evaluation length", "", acc.to_markdown(disable_numparse=True), ""]
    if not eff.empty:
        eff.to_csv(folder / "efficiency.csv")
        parts += ["## Efficiency (training at the training length)", "", eff.to_markdown(), ""]
    if not fails.empty:
        parts += ["## Runs that did not finish cleanly", "", fails.to_markdown(index=False), ""]
    envs = df.drop_duplicates(["device", "torch", "triton", "commit"])[["device", "torch", "triton", "cuda", "commit"]] \
        if "device" in df else pd.DataFrame()
    if not envs.empty:
        parts += ["## Environment", "", envs.to_markdown(index=False), ""]
    comparison = write_comparison(df, folder)
    if comparison is not None:
        parts += ["## Beside the paper", "", f"Our numbers beside the Mamba paper's: [{comparison.name}]({comparison.name}).", ""]
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
    args = ap.parse_args(argv)
    if len(args.folders) == 1 and (args.out is None or Path(args.out).resolve() == Path(args.folders[0]).resolve()):
        text = write_report(args.folders[0])
    else:
        from .merge import write_merged_report

        text = write_merged_report(args.folders, args.out)
    if not args.quiet:
        print(text)
