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


def _paused_h3(folder, history):
    """An h3 run at lr 1e-3 paused at step 20 with `history`, and the study's empty rows folder."""
    run = folder / "runs" / ("a" * 16)
    run.mkdir(parents=True)
    (run / "progress.json").write_text(json.dumps({"status": "paused", "step": 20, "history": history}))
    (run / "run.json").write_text(json.dumps({"model": "h3", "steps": 100, "lr": 1e-3}))
    (folder / "rows").mkdir()


def test_finished_runs_are_drawn_beside_the_paused_ones(tmp_path, monkeypatch):
    # one figure holds every run of the study: the paused run's curve, and the finished one's ending in a star
    from ssmbench import progress_report

    history = [{"step": s, "accuracy": a, "loss": 1.0} for s, a in ((10, 0.2), (20, 0.5))]
    _paused_h3(tmp_path, history)
    done = [{"model": "mamba", "seed": 0, "lr": 1e-3, "history": history + [{"step": 30, "accuracy": 1.0}]}]
    (tmp_path / "rows" / ("b" * 16 + ".json")).write_text(json.dumps(done))
    figures = []
    monkeypatch.setattr(progress_report, "save_figure", lambda fig, png: figures.append(fig) or png)
    write_in_progress(tmp_path)
    (fig,) = figures
    (ax,) = fig.axes
    assert ax.get_title() == "lr 1e-3 (1 in progress, 1 finished)"
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [30] and list(stars[0].get_ydata()) == [100.0]
    assert "finished: final evaluation (the report)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_the_star_is_the_final_evaluation_joined_to_the_last_check_when_they_differ(tmp_path, monkeypatch):
    # a run that fell after its last check (Table 1's no-gate S6 at lr 1e-3: 99.1% at 46K, its final evaluation at
    # 50K 63%): the star sits at the row's steps and accuracy, at the training length's row, not the last check
    from ssmbench import progress_report

    history = [{"step": s, "accuracy": a, "loss": 1.0} for s, a in ((10, 0.2), (20, 0.9))]
    _paused_h3(tmp_path, history)
    rows = [{"model": "mamba", "seed": 0, "lr": 1e-3, "history": history, "steps": 25, "train_len": 8,
             "eval_len": n, "accuracy": acc} for n, acc in ((4, 0.99), (8, 0.6), (16, 0.3))]
    (tmp_path / "rows" / ("b" * 16 + ".json")).write_text(json.dumps(rows))
    figures = []
    monkeypatch.setattr(progress_report, "save_figure", lambda fig, png: figures.append(fig) or png)
    write_in_progress(tmp_path)
    (ax,) = figures[0].axes
    (star,) = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert list(star.get_xdata()) == [25] and list(star.get_ydata()) == [60.0]
    joins = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(joins) == 1 and list(joins[0].get_xdata()) == [20, 25] and list(joins[0].get_ydata()) == [90.0, 60.0]


def _finished(folder, rid, lr, acc=0.9):
    history = [{"step": s, "accuracy": a, "loss": 1.0} for s, a in ((10, 0.2), (20, acc))]
    rows = folder / "rows"
    rows.mkdir(exist_ok=True)
    (rows / f"{rid}.json").write_text(json.dumps([{"model": "mamba", "seed": 0, "lr": lr, "history": history,
                                                   "steps": 20, "accuracy": acc}]))


def test_a_finished_study_at_several_learning_rates_keeps_its_panels_per_lr(tmp_path):
    # once nothing is in progress, in_progress.png goes; the learning-curves figure puts every lr in one panel, so
    # curves_by_lr.png keeps the per-lr panels, and goes again when new runs of the study start
    from matplotlib.image import imread

    _finished(tmp_path, "a" * 16, 1e-3)
    _finished(tmp_path, "b" * 16, 1e-4, acc=0.5)
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "in_progress.png").write_bytes(b"old")
    section = write_in_progress(tmp_path)
    assert "plots/curves_by_lr.png" in section and not (plots / "in_progress.png").exists()
    assert imread(plots / "curves_by_lr.png").shape[1] > 1000  # two panels side by side
    _run(tmp_path, "c" * 16, "paused", 5)
    write_in_progress(tmp_path)
    assert not list(plots.glob("curves_by_lr.*"))


def test_a_finished_study_at_one_learning_rate_gets_no_curves_by_lr(tmp_path):
    _finished(tmp_path, "a" * 16, 1e-3)
    assert write_in_progress(tmp_path) == ""
    assert not (tmp_path / "plots").exists() or not list((tmp_path / "plots").glob("curves_by_lr.*"))


def test_no_curves_by_lr_where_variants_of_a_model_share_an_lr_and_a_seed(tmp_path):
    # two runs of one model, seed and lr (say batch 8 and batch 64) would draw alike in those panels
    _finished(tmp_path, "a" * 16, 1e-3)
    _finished(tmp_path, "b" * 16, 1e-4)
    _finished(tmp_path, "c" * 16, 1e-4, acc=0.4)
    assert write_in_progress(tmp_path) == ""
