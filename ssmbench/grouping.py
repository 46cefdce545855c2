"""Keep apart what differs: name the configuration keys that vary within a model's rows.

A mean over seeds is a result; a mean over two learning rates is not. Tables and plots group rows by a
*variant label*: the model name, plus `key=value` for every configuration key (other than the seed) that
varies among that model's rows, e.g. `mamba (lr=0.001)` and `mamba (lr=0.0001)`. Keys asked for by name
(`ssmbench-report --by d_model`) are always in the label, varying or not; `choose_best` keeps, per label, the value of
one key (the learning rate) that scores best at the training length, as the paper reports its best learning rate.
"""

from __future__ import annotations

import math

import pandas as pd
import yaml

from .config import INVOCATION_KEYS

# Row columns that set up a run (task.* columns are added as found). Seed is not one: averaging over seeds is
# the point. arch and layer are here because `model=mamba model.arch=h3` keeps the name "mamba".
ROW_KEYS = ("task", "arch", "layer", "lr", "d_model", "n_layers", "batch_size", "train_len", "precision")
# Sections of the run's config yaml that hold settings the row columns lack (steps target, d_state, heads, ...).
YAML_SECTIONS = ("model", "trainer")
# yaml keys that repeat a row column, or that do not change the result (how a call ran: its time budget, its
# checkpoint cadence, graphs or eager; a run paused under one budget and finished under another is one run).
YAML_SKIP = {"model.name", "model.arch", "model.layer.name", "model.d_model", "model.n_layers", "trainer.lr",
             "trainer.batch_size", "trainer.precision", *(f"trainer.{k}" for k in INVOCATION_KEYS)}


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


class MissingKey(ValueError):
    """A key asked for by name (--by, --best-over) that no row has."""

    def __init__(self, key: str, known: list[str]):
        super().__init__(f"no row has the key {key!r}; keys the rows have: {', '.join(known)}")
        self.key = key


def key_values(df: pd.DataFrame, key: str, config: pd.DataFrame | None = None) -> pd.Series:
    """Per row: the value of `key`, a configuration key (config_frame) or else any row column (task.seq_len,
    device); MissingKey when no row holds a value for it."""
    config = config_frame(df) if config is None else config
    for source in (config, df):
        if key in source and source[key].notna().any():
            return source[key]
    raise MissingKey(key, sorted(set(config) | ({"task.seq_len"} & set(df))))


def _describe(settings: pd.DataFrame) -> pd.Series:
    """Per row: `key=value, key=value` over the columns of `settings`."""
    return settings.apply(lambda r: ", ".join(f"{k}={_fmt(r[k])}" for k in settings), axis=1)


def variant_labels(df: pd.DataFrame, by: str = "model", always: tuple[str, ...] = (),
                   ignore: tuple[str, ...] = ()) -> pd.Series:
    """Per row: its `by` value, plus `key=value` for each key of `always` (named whether it varies or not), then for
    each other configuration key that varies within that group, except the keys of `ignore`."""
    config = config_frame(df)
    named = pd.DataFrame({k: key_values(df, k, config) for k in always}, index=df.index)
    free = config.drop(columns=[k for k in (*always, *ignore) if k in config])
    labels = df[by].astype(str)
    for name, index in df.groupby(by).groups.items():
        settings = named.loc[index].join(free.loc[index, varying_keys(free.loc[index])])
        if len(settings.columns):
            labels.loc[index] = f"{name} (" + _describe(settings) + ")"
    return labels


def mean_ok(rows: pd.DataFrame) -> float:
    """Mean accuracy (%) over the rows with status ok (NaN when none is)."""
    return 100 * rows.loc[rows["status"] == "ok", "accuracy"].mean()


# A cell resting on fewer scored positions than this (summed over seeds) is marked: at the longest induction
# lengths the evaluation's time budget can run out after a few sequences, and 8 answers read as 0% or 50%.
FEW_SCORED = 64
FEW_SCORED_MARK = "†"
FEW_SCORED_NOTE = (f"'{FEW_SCORED_MARK}': fewer than {FEW_SCORED} positions scored at that length (the evaluation's "
                   "time budget ran out), too few to read a difference from chance.")


def few_scored(rows: pd.DataFrame) -> str:
    """FEW_SCORED_MARK when the ok rows scored fewer than FEW_SCORED positions together (rows that count them)."""
    ok = rows[rows["status"] == "ok"]
    if "eval_scored" not in ok or ok.empty or ok["eval_scored"].isna().any():
        return ""
    return FEW_SCORED_MARK if ok["eval_scored"].sum() < FEW_SCORED else ""


def pct_text(pct: float) -> str:
    """An accuracy in % with one decimal, except that a value under 100 never reads `100.0`: 99.988 (2 wrong answers
    of 16,384) is `99.99`, with as many decimals as it takes (up to 4), so a table cell shows 100.0 only when
    every answer was right."""
    for decimals in range(1, 5):
        text = f"{pct:.{decimals}f}"
        if not (pct < 100 and text.startswith("100")):
            return text
    return text


def score(rows: pd.DataFrame) -> str:
    """A table cell: mean accuracy (%) of the ok rows, '*' when some runs failed, '†' when they scored few
    positions (FEW_SCORED); the status(es) when none is ok."""
    if rows.empty:
        return "-"
    n_ok = int((rows["status"] == "ok").sum())
    if n_ok == 0:
        return "/".join(sorted(set(rows["status"].astype(str))))
    return pct_text(mean_ok(rows)) + ("*" if n_ok < len(rows) else "") + few_scored(rows)


def seed_stats(rows: pd.DataFrame) -> dict:
    """Over the ok rows (one per seed): mean and sample std of accuracy (%), NaN std below two; n of them; and
    `runs`, how many rows there are, ok or not."""
    ok = 100 * rows.loc[rows["status"] == "ok", "accuracy"]
    return {"mean_pct": ok.mean(), "std_pct": ok.std(), "n": len(ok), "runs": len(rows)}


def score_spread(rows: pd.DataFrame) -> str:
    """A table cell like score's, with the spread over seeds: `87.9 ± 4.1 (n=3)`, `87.9 (n=1)` for one seed; '*' after
    it when some runs failed (n < runs launched); the status(es) when none is ok."""
    stats = seed_stats(rows)
    if stats["n"] == 0:
        return score(rows)  # "-" or the failure status(es)
    spread = f" ± {stats['std_pct']:.1f}" if stats["n"] > 1 else ""
    return (f"{pct_text(stats['mean_pct'])}{spread} (n={stats['n']})" + ("*" if stats["n"] < stats["runs"] else "")
            + few_scored(rows))


def at_training_length(df: pd.DataFrame) -> pd.Series:
    """Per row: evaluated at the length it was trained at (False where either is missing)."""
    return df["eval_len"] == df["train_len"] if "train_len" in df else pd.Series(False, index=df.index)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _sorted_values(values: pd.Series) -> list:
    """The distinct values (by repr: NaN is unequal to itself), missing ones last."""
    distinct = list({repr(v): v for v in values}.values())
    try:
        return sorted(distinct, key=lambda v: (_missing(v), v))
    except TypeError:  # mixed types (numbers and strings): any fixed order will do
        return sorted(distinct, key=repr)


def _rows_by_value(rows: pd.DataFrame, values: pd.Series) -> dict:
    """value -> the rows holding it, values in sorted order (compared by repr, so NaN and lists match)."""
    token = values.loc[rows.index].map(repr)
    return {v: rows[token == repr(v)] for v in _sorted_values(values.loc[rows.index])}


def _choice(label: str, key: str, by_value: dict) -> tuple[pd.DataFrame, dict]:
    """The rows kept for one label, and its line of the choices table."""
    at_train = {v: rows[at_training_length(rows)] for v, rows in by_value.items()}
    means = {v: mean_ok(rows) for v, rows in at_train.items()}
    scored = [v for v in means if not math.isnan(means[v])]
    if not scored:  # nothing to choose on: keep every value, so its failures stay in the tables
        return pd.concat(by_value.values()), {"model": label, f"chosen {key}": "none",
                                               "accuracy at the training length (%)": "-",
                                               f"{key} tried (accuracy %)": _tried(at_train)}
    best = max(scored, key=lambda v: means[v])  # max keeps the first of equals: ties go to the smaller value
    return by_value[best], {"model": label, f"chosen {key}": _fmt(best),
                            "accuracy at the training length (%)": score_spread(at_train[best]),
                            f"{key} tried (accuracy %)": _tried(at_train)}


def _tried(at_train: dict) -> str:
    return ", ".join(f"{_fmt(v)}: {score(rows)}" for v, rows in at_train.items())


def choose_best(df: pd.DataFrame, key: str, always: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of `df` that keep, for each variant label made without `key`, only the value of `key` with the
    highest mean accuracy (ok runs) at the training length; and the table of those choices, one line per label.

    Choosing at the training length, not at the longest one, is how the paper picks its learning rate; the other
    lengths are then reported for the chosen value only. A label where no value has an ok run at the training
    length keeps all its rows (its failures stay visible) and says "none"."""
    values = key_values(df, key)
    groups = variant_labels(df, always=always, ignore=(key,))
    kept, lines = [], []
    for label, rows in df.groupby(groups, sort=True):
        rows_kept, line = _choice(label, key, _rows_by_value(rows, values))
        kept.append(rows_kept)
        lines.append(line)
    index = pd.concat(kept).index
    return df[df.index.isin(index)], pd.DataFrame(lines)
