"""The report's list of runs in progress: read from progress files, with the rows as the truth."""

import json

from ssmbench.progress_report import runs_in_progress, write_in_progress


def _run(folder, rid, status, step):
    run = folder / "runs" / rid
    run.mkdir(parents=True)
    (run / "progress.json").write_text(json.dumps({"run_id": rid, "status": status, "step": step}))
    (run / "run.json").write_text(json.dumps({"run_id": rid, "model": "mamba", "steps": 100}))


def test_paused_and_evaluating_runs_are_listed_and_a_run_with_rows_is_not(tmp_path):
    _run(tmp_path, "a" * 16, "paused", 40)
    _run(tmp_path, "b" * 16, "evaluating", 100)
    _run(tmp_path, "c" * 16, "ok", 100)
    # a progress file copied mid-evaluation beside the rows that the run then wrote: the run finished
    _run(tmp_path, "d" * 16, "evaluating", 100)
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / ("d" * 16 + ".json")).write_text("[]")
    listed = {r["run_id"]: r["status"] for r in runs_in_progress(tmp_path)}
    assert listed == {"a" * 16: "paused", "b" * 16: "evaluating"}


def test_the_in_progress_figure_goes_once_every_run_has_finished(tmp_path):
    _run(tmp_path, "a" * 16, "paused", 40)
    plots = tmp_path / "plots"
    plots.mkdir()
    for ext in ("png", "pdf"):
        (plots / f"in_progress.{ext}").write_bytes(b"old")
    assert "Runs in progress" in write_in_progress(tmp_path)  # still paused: listed (no history, so no new plot)
    assert (plots / "in_progress.png").exists()
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / ("a" * 16 + ".json")).write_text("[]")
    assert write_in_progress(tmp_path) == ""
    assert not list(plots.glob("in_progress.*"))


def test_panel_titles_write_small_learning_rates_as_powers_of_ten():
    from ssmbench.progress_report import _lr_text
    assert [_lr_text(v) for v in (1e-4, 1e-3, 2e-4, 1.5e-4, 0.01, 0.1, None)] == \
        ["1e-4", "1e-3", "2e-4", "1.5e-4", "0.01", "0.1", "None"]
