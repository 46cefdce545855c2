"""Our results beside the Mamba paper's: Table 1 (selective copying) and Table 11 (induction heads).

    write_comparison(df, folder)   # -> paper_comparison.md, paper_table1.csv, paper_table11.csv

Only rows with status "ok" make a number; a cell with none shows the status (oom, nan, error), and '*' marks a
mean over fewer runs than were launched. Rows that differ in a configuration key other than the seed get
their own line, labelled with that key (grouping.variant_labels), and are never averaged together.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pandas as pd

from . import reference
from .grouping import FEW_SCORED_NOTE, mean_ok, score, variant_labels

# The paper's Table 1 calls the plain (no-gate) block "none"; our rows call it "nogate".
PAPER_ARCH_TO_OURS = {"none": "nogate"}
# Table 11: our model names -> the paper's.
INDUCTION_NAMES = {"transformer_abs": "MHA-Abs", "transformer": "MHA-RoPE", "transformer_xpos": "MHA-xPos",
                   "h3": "H3", "hyena": "Hyena", "mamba": "Mamba"}
PAPER_SETUP = {
    "selective_copy": "L = 4096, vocab 16, 16 data tokens, 2 layers, d_model 64, batch 64, lr 1e-4, 400K steps",
    "induction": "trained at L = 256, vocab 16, 2 layers, batch 8; Mamba d_model 64, lr 1e-3, 25 x 8192 steps; "
                 "attention d_model 128, 8 heads, lr 2e-4",
}
# What our rows say about their setup, printed under each table so differences from the paper's are visible.
OUR_SETUP_KEYS = ("train_len", "task.vocab_size", "task.n_data", "n_layers", "d_model", "batch_size", "lr")


def read_reference(name: str) -> pd.DataFrame:
    with files(reference).joinpath(name).open() as f:
        return pd.read_csv(f, dtype=str, keep_default_na=False)


def paper_table1() -> pd.DataFrame:
    """Columns arch, layer (our names), paper (accuracy %), in the paper's row order."""
    t = read_reference(reference.TABLE1_CSV)
    return pd.DataFrame({"arch": t["arch"].replace(PAPER_ARCH_TO_OURS), "layer": t["layer"],
                         "paper": t["accuracy_pct"].astype(float)})


def paper_table11() -> pd.DataFrame:
    """Index: the paper's model names; columns: test lengths (int); cells as printed ('100', 'oom')."""
    t = read_reference(reference.TABLE11_CSV).set_index("model")
    t = t[[c for c in t if c.startswith("len_")]]
    t.columns = [int(c.removeprefix("len_")) for c in t.columns]
    return t


def length_name(L: int) -> str:
    return f"2^{L.bit_length() - 1}" if L & (L - 1) == 0 else str(L)


def steps_trained(rows: pd.DataFrame) -> str:
    steps = rows.drop_duplicates("run_id")["steps"].dropna().astype(int) if "steps" in rows else pd.Series()
    if steps.empty:
        return "-"
    return str(steps.min()) if steps.min() == steps.max() else f"{steps.min()}-{steps.max()}"


def training_cost(rows: pd.DataFrame) -> tuple[str, str]:
    """(minutes of training, ms per step) of the runs in `rows`, a range when they differ: `train_time_s` summed
    over a run's pieces, so on a GPU shared with other runs it is that GPU's wall time, not the run's alone."""
    if "train_time_s" not in rows or "steps" not in rows:
        return "-", "-"
    runs = rows.drop_duplicates("run_id")[["train_time_s", "steps"]].dropna()
    runs = runs[runs["steps"] > 0]
    if runs.empty:
        return "-", "-"
    minutes, ms = runs["train_time_s"] / 60, 1000 * runs["train_time_s"] / runs["steps"]

    def span(v: pd.Series, fmt: str) -> str:
        lo, hi = format(v.min(), fmt), format(v.max(), fmt)
        return lo if lo == hi else f"{lo}-{hi}"
    return span(minutes, ".0f" if minutes.max() >= 10 else ".1f"), span(ms, ".1f")


def n_ok_runs(rows: pd.DataFrame) -> int:
    return rows.loc[rows["status"] == "ok", "run_id"].nunique()


def our_setup(rows: pd.DataFrame) -> str:
    def values(key):
        return "/".join(sorted({f"{v:g}" if isinstance(v, float) else str(v) for v in rows[key].dropna()}))
    return ", ".join(f"{k} {values(k)}" for k in OUR_SETUP_KEYS if k in rows and rows[k].notna().any())


def _table1_line(arch: str, layer: str, paper: float, label: str = "-", rows: pd.DataFrame | None = None) -> dict:
    ours = mean_ok(rows) if rows is not None else float("nan")
    diff = ours - paper
    minutes, ms = training_cost(rows) if rows is not None else ("-", "-")
    return {"block": arch, "layer": layer, "model": label,
            "seeds": n_ok_runs(rows) if rows is not None else "-",
            "steps trained": steps_trained(rows) if rows is not None else "-",
            "training min": minutes, "ms / step": ms,
            "ours (%)": score(rows) if rows is not None else "not run",
            "paper (%)": "-" if pd.isna(paper) else f"{paper:.1f}",
            "ours - paper": "-" if pd.isna(diff) else f"{diff:+.1f}"}


def table1(df: pd.DataFrame) -> pd.DataFrame:
    """One line per (block, layer) pair of the paper's Table 1 and per variant of ours, at eval_len == train_len;
    then our pairs the paper lacks (Transformer, RNNs)."""
    rows = df[df["task"] == "selective_copy"]
    rows = rows[rows["eval_len"] == rows["train_len"]]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(label=variant_labels(rows))
    ours = {pair: g for pair, g in rows.groupby(["arch", "layer"], sort=True)}
    lines = []
    for p in paper_table1().itertuples():
        mine = ours.pop((p.arch, p.layer), None)
        if mine is None:
            lines.append(_table1_line(p.arch, p.layer, p.paper))
            continue
        lines += [_table1_line(p.arch, p.layer, p.paper, label, g) for label, g in mine.groupby("label")]
    for (arch, layer), mine in ours.items():
        lines += [_table1_line(arch, layer, float("nan"), label, g) for label, g in mine.groupby("label")]
    return pd.DataFrame(lines)


def _table11_ours(label: str, rows: pd.DataFrame, lengths: list[int]) -> dict:
    cells = {length_name(L): score(rows[rows["eval_len"] == L]) for L in lengths}
    return {"source": f"ours: {label}", "seeds": n_ok_runs(rows), "steps trained": steps_trained(rows), **cells}


def table11(df: pd.DataFrame) -> pd.DataFrame:
    """For each of the paper's models its line and ours (one per variant) beneath, by test length; then our
    models the paper lacks."""
    rows = df[df["task"] == "induction"]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(label=variant_labels(rows))
    paper = paper_table11()
    lengths = sorted(set(paper.columns) | set(rows["eval_len"].dropna().astype(int)))
    ours_by_paper_name = {v: k for k, v in INDUCTION_NAMES.items()}
    lines = []
    for name in paper.index:
        cells = {length_name(L): paper.at[name, L] if L in paper.columns else "-" for L in lengths}
        lines.append({"model": name, "source": "paper", "seeds": "-", "steps trained": "-", **cells})
        mine = rows[rows["model"] == ours_by_paper_name.get(name)]
        lines += [{"model": name, **_table11_ours(label, g, lengths)} for label, g in mine.groupby("label")]
    extra = rows[~rows["model"].isin(list(INDUCTION_NAMES))]
    lines += [{"model": "-", **_table11_ours(label, g, lengths)} for label, g in extra.groupby("label")]
    return pd.DataFrame(lines)


def write_comparison(df: pd.DataFrame, folder: Path) -> Path | None:
    """Write paper_comparison.md (+ one CSV per table) when the rows hold a task of the paper's tables."""
    t1, t11 = table1(df), table11(df)
    if t1.empty and t11.empty:
        return None
    parts = [f"# {folder.name}: side by side with the Mamba paper", "",
             f"Paper: {reference.SOURCE}. Accuracy (%) on the scored positions. Ours: mean over seeds (runs with "
             "status ok only); '*' = mean over fewer runs than were launched (the others failed); a status "
             "(oom, nan, error) where no run finished. Lines that differ in a setting other than the seed are "
             "kept apart, the setting named in the label. " + FEW_SCORED_NOTE, ""]
    for table, task, csv, title in (
            (t1, "selective_copy", "paper_table1.csv",
             "Table 1: selective copying (accuracy % at the training length)"),
            (t11, "induction", "paper_table11.csv", "Table 11: induction heads (accuracy % by test length)")):
        if table.empty:
            continue
        table.to_csv(folder / csv, index=False)
        parts += [f"## {title}", "", table.to_markdown(index=False, disable_numparse=True), ""]
        if "training min" in table:
            parts += ["Training min and ms / step: training time summed over each run's pieces (a range over the "
                      "seeds); where runs shared a GPU, it is the shared GPU's wall time, not the GPU's alone.", ""]
        parts += [f"Paper setup: {PAPER_SETUP[task]}.  ", f"Ours: {our_setup(df[df['task'] == task])}.", ""]
    path = folder / "paper_comparison.md"
    path.write_text("\n".join(parts))
    return path
