"""Issue 14, results you can trust: accuracy cells give mean ± std over seeds and n; `ssmbench-report --by KEY` names
KEY in every label; `--best-over KEY` keeps the best KEY value per model at the training length and says which.
Synthetic rows only (test_report_paper.make_run), written as ssmbench.results.write_rows writes them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ssmbench.grouping import MissingKey
from ssmbench.report import accuracy_long, accuracy_table, keep_best, load_frame
from ssmbench.report import main as report_main
from ssmbench.results import rows_path, write_rows

from .test_report_paper import make_run

TRAIN_LEN, LONG = 64, 256


def runs() -> list[list[dict]]:
    return [
        # mamba at lr 1e-3, three seeds: 90.0 ± 5.0 at the training length (sample std), 60.0 ± 10.0 beyond it.
        *[make_run("mamba", "selective_copy", seed, {TRAIN_LEN: a, LONG: b})
          for seed, (a, b) in enumerate([(0.90, 0.5), (0.85, 0.6), (0.95, 0.7)])],
        # mamba at lr 1e-4: the best single run (99) and the best long length, but the lower mean (70) at TRAIN_LEN,
        # so --best-over lr must keep 1e-3.
        make_run("mamba", "selective_copy", 0, {TRAIN_LEN: 0.99, LONG: 0.95}, lr=1e-4),
        make_run("mamba", "selective_copy", 1, {TRAIN_LEN: 0.41, LONG: 0.95}, lr=1e-4),
        # h3: one seed at 1e-3 (50); at 1e-4 one seed of two diverged (70, '*'), still the better lr.
        make_run("h3", "selective_copy", 0, {TRAIN_LEN: 0.50}, lr=1e-3),
        make_run("h3", "selective_copy", 0, {TRAIN_LEN: 0.70}, lr=1e-4),
        make_run("h3", "selective_copy", 1, {TRAIN_LEN: float("nan")}, {TRAIN_LEN: "nan"}, lr=1e-4),
        # transformer: out of memory at both learning rates, so there is nothing to choose on.
        make_run("transformer", "selective_copy", 0, {TRAIN_LEN: float("nan")}, {TRAIN_LEN: "oom"}, lr=1e-3),
        make_run("transformer", "selective_copy", 0, {TRAIN_LEN: float("nan")}, {TRAIN_LEN: "oom"}, lr=1e-4),
    ]


def write_study(root: Path) -> Path:
    for rows in runs():
        write_rows(rows_path(root, "study", rows[0]["run_id"]), rows)
    return root / "study"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return write_study(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> Path:
    """One full report (plots included) with both options, as a user would run it."""
    folder = write_study(tmp_path_factory.mktemp("results"))
    report_main([str(folder), "--by", "d_model", "--best-over", "lr", "--quiet"])
    return folder


def cell(table: pd.DataFrame, label: str, length: int) -> str:
    return table.loc[label, f"L={length}"]


# ---- 1. mean ± std and n over seeds ----------------------------------------------------------------------------
def test_cells_give_mean_std_and_n(study):
    table = accuracy_table(load_frame(study))
    assert cell(table, "mamba (lr=0.001)", TRAIN_LEN) == "90.0 ± 5.0 (n=3)"  # sample std (ddof=1), not 4.1
    assert cell(table, "mamba (lr=0.001)", LONG) == "60.0 ± 10.0 (n=3)"
    assert cell(table, "h3 (lr=0.001)", TRAIN_LEN) == "50.0 (n=1)"  # one seed: no spread to show
    assert cell(table, "h3 (lr=0.0001)", TRAIN_LEN) == "70.0 (n=1)*"  # one of two runs diverged
    assert cell(table, "transformer (lr=0.001)", TRAIN_LEN) == "oom"  # no ok run: the status
    assert cell(table, "h3 (lr=0.001)", LONG) == "-"  # not evaluated there


def test_accuracy_csv_is_long_with_mean_std_n(reported):
    long = pd.read_csv(reported / "accuracy.csv", keep_default_na=False, na_values=[""])
    assert list(long.columns) == ["label", "model", "d_model", "eval_len", "mean_pct", "std_pct", "n", "runs", "cell"]
    line = long[(long["label"] == "mamba (d_model=64)") & (long["eval_len"] == TRAIN_LEN)].squeeze()
    assert (line["mean_pct"], line["std_pct"], line["n"], line["runs"]) == pytest.approx((90.0, 5.0, 3, 3))
    h3 = long[long["model"] == "h3"].squeeze()
    assert (h3["n"], h3["runs"], h3["cell"]) == (1, 2, "70.0 (n=1)*")
    assert pd.isna(h3["std_pct"])


# ---- 2. --by KEY -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("d_model", "64"), ("task.seq_len", "64"), ("trainer.steps", "1000")])
def test_by_names_the_key_in_every_label(study, key, value):
    """d_model is a row column, task.seq_len a row column the grouping otherwise skips, trainer.steps lives only in
    the run's config yaml; none varies here, yet each is named, before the keys that vary."""
    df = load_frame(study, by=(key,))
    assert set(df["label"]) == {f"mamba ({key}={value}, lr=0.001)", f"mamba ({key}={value}, lr=0.0001)",
                                f"h3 ({key}={value}, lr=0.001)", f"h3 ({key}={value}, lr=0.0001)",
                                f"transformer ({key}={value}, lr=0.001)", f"transformer ({key}={value}, lr=0.0001)"}
    long = accuracy_long(df, by=(key,))
    assert key in long and long[key].astype(str).eq(value).all()  # the explicit column of accuracy.csv


def test_by_a_key_that_already_splits_is_named_once(study):
    labels = set(load_frame(study, by=("lr",))["label"])
    assert "mamba (lr=0.001)" in labels and "h3 (lr=0.0001)" in labels


def test_by_an_unknown_key_is_an_error_naming_it(study, capsys):
    with pytest.raises(MissingKey, match="'tasks.seq_len'"):
        load_frame(study, by=("tasks.seq_len",))
    with pytest.raises(SystemExit) as exit_:
        report_main([str(study), "--by", "tasks.seq_len", "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--by tasks.seq_len: no row has the key 'tasks.seq_len'" in err and "task.seq_len" in err  # and the keys
    assert not (study / "summary.md").exists() and not (study / "rows.csv").exists()  # checked before writing


# ---- 3. --best-over KEY ----------------------------------------------------------------------------------------
def test_best_over_keeps_the_best_mean_at_the_training_length(study):
    df, choices = keep_best(load_frame(study), "lr")
    chosen = choices.set_index("model")["chosen lr"].to_dict()
    # mamba: 1e-3 (mean 90) over 1e-4 (mean 70), though 1e-4 holds the best single run and the best long length.
    assert chosen == {"mamba": "0.001", "h3": "0.0001", "transformer": "none"}
    table = accuracy_table(df)
    assert cell(table, "mamba", TRAIN_LEN) == "90.0 ± 5.0 (n=3)" and cell(table, "mamba", LONG) == "60.0 ± 10.0 (n=3)"
    assert cell(table, "h3", TRAIN_LEN) == "70.0 (n=1)*"
    # Nothing to choose on: both learning rates stay, apart, so the failures stay visible.
    assert cell(table, "transformer (lr=0.001)", TRAIN_LEN) == "oom"
    assert cell(table, "transformer (lr=0.0001)", TRAIN_LEN) == "oom"
    assert len(table) == 4


def test_best_over_choices_in_the_summary(reported):
    summary = (reported / "summary.md").read_text()
    assert "## Best lr per model" in summary
    choices = pd.read_csv(reported / "best_lr.csv", dtype=str, keep_default_na=False).set_index("model")
    mamba = choices.loc["mamba (d_model=64)"]
    assert (mamba["chosen lr"], mamba["accuracy at the training length (%)"]) == ("0.001", "90.0 ± 5.0 (n=3)")
    assert mamba["lr tried (accuracy %)"] == "0.0001: 70.0, 0.001: 90.0"
    assert "| mamba (d_model=64) " in summary and "0.0001: 70.0, 0.001: 90.0" in summary
    # Only the chosen rows are reported: mamba's 1e-4 numbers (99, 41, 95) are in no table, rows.csv keeps them.
    accuracy = summary.split("## Accuracy")[1].split("\n## ")[0]
    assert "| mamba (d_model=64) " in accuracy and "mamba (d_model=64, lr" not in accuracy and "95.0" not in accuracy
    assert "95.0" not in (reported / "paper_comparison.md").read_text()
    assert (pd.read_csv(reported / "rows.csv")["lr"] == 1e-4).any()
    assert (reported / "plots" / "accuracy.png").exists()


def test_best_over_errors(study, capsys):
    for args, says in ((["--best-over", "learning_rate"], "--best-over learning_rate: no row has the key"),
                       (["--best-over", "lr", "--by", "lr"], "--best-over lr keeps one value")):
        with pytest.raises(SystemExit) as exit_:
            report_main([str(study), *args, "--quiet"])
        assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not (study / "rows.csv").exists()


def test_best_over_applies_to_a_merge_of_folders(study, tmp_path):
    out = tmp_path / "merged"
    report_main([str(study), str(study), "--out", str(out), "--best-over", "lr", "--quiet"])
    assert "## Best lr per model" in (out / "summary.md").read_text()
