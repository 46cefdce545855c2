"""Turn a results folder into tables (CSV + markdown) and plots (seaborn).

    ssmbench-report results/demo            # writes results/demo/{rows.csv, summary.md, plots/*.png}

Tables: accuracy by model and evaluation length (mean over seeds, with the seed count), then training and
evaluation throughput, parameters and peak memory per model. Plots: accuracy against length (log2 axis when the
lengths span more than one octave), training throughput, peak memory.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from .results import load_all

STATUS_ORDER = ("ok", "nan", "oom", "error")
# What each inner layer stands for in the paper's argument; plots colour by it.
FAMILIES = {"attention": "attention", "rnn": "RNN", "s4": "LTI SSM", "hyena": "LTI SSM", "s6": "selective SSM"}
PALETTE = {"attention": "#4C72B0", "RNN": "#937860", "LTI SSM": "#DD8452", "selective SSM": "#55A868"}


def load_frame(folder: str | Path) -> pd.DataFrame:
    rows = load_all(folder)
    if not rows:
        raise SystemExit(f"ssmbench-report: no rows under {folder} (expected {folder}/rows/*.json)")
    df = pd.DataFrame(rows)
    df["family"] = df["layer"].map(FAMILIES).fillna("other") if "layer" in df else "other"
    for col in ("accuracy", "loss", "train_tokens_per_s", "eval_tokens_per_s", "train_peak_mem_bytes", "params",
                "eval_len"):
        if col not in df:
            df[col] = math.nan
    return df


def _cell(mean: float, n: int, statuses: set[str]) -> str:
    if n == 0:
        bad = sorted(statuses - {"ok"})
        return "/".join(bad) if bad else "-"
    return f"{100 * mean:.1f}" + ("" if not statuses - {"ok"} else "*")


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows: model; columns: eval length; cells: accuracy (%) averaged over seeds with status ok. A cell with no
    ok run shows the failure status (oom, nan, error); '*' marks a mean over fewer runs than were launched."""
    df = df[df["eval_len"].notna()]
    out = {}
    for (model, L), g in df.groupby(["model", "eval_len"], sort=True):
        ok = g[g["status"] == "ok"]
        out.setdefault(model, {})[int(L)] = _cell(ok["accuracy"].mean(), len(ok), set(g["status"]))
    table = pd.DataFrame(out).T
    table = table[sorted(table.columns)]
    table.columns = [f"L={c}" for c in table.columns]
    table.index.name = "model"
    return table


def efficiency_table(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    train = ok.drop_duplicates("run_id")
    g = train.groupby("model")
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
    table["eval tok/s (median)"] = ok.groupby("model")["eval_tokens_per_s"].median().round(0)
    env = train.groupby("model")[["device", "scan_backend"]].first()
    return table.join(env)


def failures(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != "ok"]
    cols = [c for c in ("model", "task", "seed", "eval_len", "status", "error") if c in bad]
    return bad[cols].drop_duplicates()


def _legend_outside(ax) -> None:
    if ax.get_legend() is not None:
        ax.legend(title="family", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def plot(df: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    ok = df[df["status"] == "ok"].copy()
    ok["accuracy (%)"] = 100 * ok["accuracy"]
    task = ", ".join(sorted(df["task"].dropna().unique()))

    lengths = sorted(ok["eval_len"].dropna().unique())
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if len(lengths) > 1:
        sns.lineplot(data=ok, x="eval_len", y="accuracy (%)", hue="model", style="model", markers=True,
                     dashes=False, errorbar=("pi", 100) if ok["seed"].nunique() > 1 else None, ax=ax)
        if lengths[-1] / lengths[0] >= 4:
            ax.set_xscale("log", base=2)
        train_lens = sorted(ok["train_len"].dropna().unique())
        for L in train_lens:
            ax.axvline(L, color="grey", ls=":", lw=1)
        ax.set_xlabel("evaluation sequence length (dotted: training length)")
        ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    else:
        order = ok.groupby("model")["accuracy (%)"].mean().sort_values(ascending=False).index
        sns.barplot(data=ok, x="model", y="accuracy (%)", order=order, hue="family", palette=PALETTE, dodge=False,
                    errorbar=None, ax=ax)
        for c in ax.containers:
            ax.bar_label(c, fmt="%.1f")
        _legend_outside(ax)
        ax.set_xlabel("model")
        ax.tick_params(axis="x", rotation=30)
    ax.set_ylim(0, 105)
    ax.set_title(f"Accuracy on scored positions ({task})")
    fig.tight_layout()
    paths.append(out / "accuracy.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    runs = ok.drop_duplicates("run_id")
    for col, label, name in (("train_tokens_per_s", "training throughput (tokens/s)", "throughput.png"),
                             ("train_peak_mem_bytes", "peak memory during training (MiB)", "memory.png")):
        if runs[col].notna().sum() == 0:
            continue
        data = runs.assign(value=runs[col] / (2**20 if "mem" in col else 1))
        fig, ax = plt.subplots(figsize=(8, 4))
        order = data.groupby("model")["value"].median().sort_values(ascending=False).index
        sns.barplot(data=data, x="model", y="value", order=order, hue="family", palette=PALETTE, dodge=False,
                    estimator="median", errorbar=None, ax=ax)
        ax.set_ylabel(label)
        ax.set_xlabel("model")
        _legend_outside(ax)
        ax.tick_params(axis="x", rotation=30)
        dev = ", ".join(sorted(runs["device"].dropna().unique()))
        ax.set_title(f"{label.split(' (')[0].capitalize()} — {dev}", fontsize=10)
        fig.tight_layout()
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def write_report(folder: str | Path) -> str:
    folder = Path(folder)
    df = load_frame(folder)
    flat = df.drop(columns=[c for c in ("config", "history") if c in df])
    flat.sort_values([c for c in ("model", "seed", "eval_len") if c in flat]).to_csv(folder / "rows.csv", index=False)
    acc = accuracy_table(df)
    eff = efficiency_table(df)
    fails = failures(df)
    acc.to_csv(folder / "accuracy.csv")
    parts = [f"# Results: {folder.name}", "",
             f"{df['run_id'].nunique()} runs, {len(df)} rows; task: {', '.join(sorted(df['task'].dropna().unique()))}.",
             "", "## Accuracy (%) on scored positions, by evaluation length", "", acc.to_markdown(), ""]
    if not eff.empty:
        eff.to_csv(folder / "efficiency.csv")
        parts += ["## Efficiency (training at the training length)", "", eff.to_markdown(), ""]
    if not fails.empty:
        parts += ["## Runs that did not finish cleanly", "", fails.to_markdown(index=False), ""]
    envs = df.drop_duplicates(["device", "torch", "triton", "commit"])[["device", "torch", "triton", "cuda", "commit"]] \
        if "device" in df else pd.DataFrame()
    if not envs.empty:
        parts += ["## Environment", "", envs.to_markdown(index=False), ""]
    plots = plot(df, folder / "plots")
    parts += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    text = "\n".join(parts)
    (folder / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="ssmbench-report", description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a results folder, e.g. results/demo (holding rows/*.json)")
    ap.add_argument("--quiet", action="store_true", help="write the files without printing the summary")
    args = ap.parse_args(argv)
    text = write_report(args.folder)
    if not args.quiet:
        print(text)
