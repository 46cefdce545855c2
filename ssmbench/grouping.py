"""Keep apart what differs: name the configuration keys that vary within a model's rows.

A mean over seeds is a result; a mean over two learning rates is not. Tables and plots group rows by a
*variant label*: the model name, plus `key=value` for every configuration key (other than the seed) that
varies among that model's rows, e.g. `mamba (lr=0.001)` and `mamba (lr=0.0001)`.
"""

from __future__ import annotations

import math

import pandas as pd
import yaml

# Row columns that set up a run (task.* columns are added as found). Seed is not one: averaging over seeds is
# the point. arch and layer are here because `model=mamba model.arch=h3` keeps the name "mamba".
ROW_KEYS = ("task", "arch", "layer", "lr", "d_model", "n_layers", "batch_size", "train_len", "precision")
# Sections of the run's config yaml that hold settings the row columns lack (steps target, d_state, heads, ...).
YAML_SECTIONS = ("model", "trainer")
# yaml keys that repeat a row column, or that do not change the result.
YAML_SKIP = {"model.name", "model.arch", "model.layer.name", "model.d_model", "model.n_layers", "trainer.lr",
             "trainer.batch_size", "trainer.precision", "trainer.progress"}


def _flatten(tree: dict, prefix: str) -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def yaml_settings(config_text: str) -> dict:
    """The model and trainer settings of one run's resolved config (the row's `config` field), flattened."""
    tree = yaml.safe_load(config_text) or {}
    flat = {}
    for section in YAML_SECTIONS:
        flat.update(_flatten(tree.get(section) or {}, section))
    return {k: v for k, v in flat.items() if k not in YAML_SKIP}


def config_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One column per configuration key (row columns, task.*, yaml settings), indexed like df."""
    keys = [k for k in ROW_KEYS if k in df] + sorted(c for c in df if c.startswith("task.") and c != "task.seq_len")
    config = df[keys].copy()
    if "config" in df:
        parsed = {text: yaml_settings(text) for text in df["config"].dropna().unique()}  # one parse per run
        settings = [parsed[t] if isinstance(t, str) else {} for t in df["config"]]
        config = config.join(pd.DataFrame(settings, index=df.index))
    return config


def varying_keys(config: pd.DataFrame) -> list[str]:
    """The columns holding more than one distinct value (repr, so NaN, lists and mixed types compare)."""
    return [k for k in config if config[k].map(repr).nunique() > 1]


def _fmt(value) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:g}"
    return str(value)


def variant_labels(df: pd.DataFrame, by: str = "model") -> pd.Series:
    """Per row: its `by` value, plus `key=value` for each configuration key that varies within that group."""
    config = config_frame(df)
    labels = df[by].astype(str)
    for name, index in df.groupby(by).groups.items():
        keys = varying_keys(config.loc[index])
        if keys:
            parts = config.loc[index, keys].apply(lambda r: ", ".join(f"{k}={_fmt(r[k])}" for k in keys), axis=1)
            labels.loc[index] = f"{name} (" + parts + ")"
    return labels


def mean_ok(rows: pd.DataFrame) -> float:
    """Mean accuracy (%) over the rows with status ok (NaN when none is)."""
    return 100 * rows.loc[rows["status"] == "ok", "accuracy"].mean()


def score(rows: pd.DataFrame) -> str:
    """A table cell: mean accuracy (%) of the ok rows, '*' when some runs failed; the status(es) when none is ok."""
    if rows.empty:
        return "-"
    n_ok = int((rows["status"] == "ok").sum())
    if n_ok == 0:
        return "/".join(sorted(set(rows["status"].astype(str))))
    return f"{mean_ok(rows):.1f}" + ("*" if n_ok < len(rows) else "")
