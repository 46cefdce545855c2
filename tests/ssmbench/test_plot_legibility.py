"""The report's figures stay readable when a study holds many variants of one model with long labels (the induction
study has five MHA-Abs variants, each naming lr, batch, positions, max_len and steps): legends shorten the config
keys, variants past four get markers as well as line styles, and the panels keep their width. Synthetic rows
(test_report_paper.make_run)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ssmbench import plots  # noqa: E402
from ssmbench.plots import legend_label, line_styles  # noqa: E402
from ssmbench.report import load_frame  # noqa: E402
from ssmbench.results import rows_path, write_rows  # noqa: E402

from .test_report_paper import make_run  # noqa: E402

LENGTHS = [64, 128, 256, 512, 1024]


def test_legend_labels_drop_the_config_groups_and_shorten_batch_size():
    label = "transformer_abs (lr=0.0002, batch_size=64, model.pos_emb=learned, trainer.steps=25600)"
    assert legend_label(label) == "transformer_abs (lr=0.0002, batch=64, pos_emb=learned, steps=25600)"
    # a model name or a value that merely contains a group's name is left alone
    assert legend_label("model_x (task.vocab_size=16, note=trainer.x)") == "model_x (vocab_size=16, note=trainer.x)"
    assert legend_label("mamba") == "mamba"


def test_every_variant_of_a_model_gets_its_own_style_past_four():
    df = pd.DataFrame({"model": ["m"] * 6 + ["other"], "label": [f"m (v={i})" for i in range(6)] + ["other"]})
    styles = line_styles(df)
    keys = {label: (s["ls"], s.get("marker")) for label, s in styles.items() if label.startswith("m ")}
    assert len(set(keys.values())) == 6, keys
    assert {s["color"] for label, s in styles.items() if label.startswith("m ")} == {plots.model_colour("m")}


@pytest.fixture(scope="module")
def many_variants(tmp_path_factory):
    """Six variants of one induction model (learning rates with long labels) and Mamba."""
    root = tmp_path_factory.mktemp("results")
    runs = [make_run("transformer", "induction", 0, {L: (1.0 if L <= 256 else 0.2) for L in LENGTHS},
                     lr=lr, steps=steps, train_len=256)
            for lr, steps in [(1e-4, 409600), (2e-4, 409600), (3e-4, 204800), (4e-4, 51200), (5e-4, 25600),
                              (6e-4, 12800)]]
    runs.append(make_run("mamba", "induction", 0, {L: 1.0 for L in LENGTHS}, train_len=256))
    for rows in runs:
        write_rows(rows_path(root, "study", rows[0]["run_id"]), rows)
    return load_frame(root / "study", ()), root / "plots"


def _drawn(draw, many_variants, monkeypatch):
    """The one figure `draw(df, out)` makes, kept instead of saved."""
    df, out = many_variants
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, png: figures.append(fig) or png)
    draw(df, out)
    (fig,) = figures
    return fig


def test_learning_curve_panels_keep_their_width_beside_a_long_legend(many_variants, monkeypatch):
    fig = _drawn(plots.learning_curves, many_variants, monkeypatch)
    widths = [ax.get_position().width for ax in fig.axes]
    assert min(widths) > 0.3, widths  # two panels side by side, each well over a quarter of the figure
    legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any("lr=0.0001" in t for t in legend_texts) and not any("trainer." in t for t in legend_texts)


def test_extrapolation_axes_span_the_figure_with_the_legend_below(many_variants, monkeypatch):
    (ax,) = _drawn(plots.induction_extrapolation, many_variants, monkeypatch).axes
    assert ax.get_position().width > 0.75
    legend = ax.get_legend()
    assert legend is not None and legend.get_window_extent().y1 < ax.get_window_extent().y0  # under the axes


def test_an_accuracy_under_100_never_reads_100():
    from ssmbench.grouping import pct_text

    assert pct_text(100 * 16382 / 16384) == "99.99"  # two wrong answers of 16,384
    assert pct_text(99.9999) == "99.9999"  # as many decimals as it takes, up to four
    assert pct_text(100.0) == "100.0"
    assert pct_text(57.04) == "57.0"
    assert pct_text(0.0) == "0.0"


def test_a_redraw_from_the_same_rows_gives_the_same_files(tmp_path):
    # the throughput and memory figures jitter their per-seed dots and the PDFs carried their creation time, so
    # every `ssmbench-report` rewrote them and git showed figures changed that had not
    from ssmbench.report import plot

    from .test_report_paper import synthetic_runs

    for rows in synthetic_runs():
        write_rows(rows_path(tmp_path, "study", rows[0]["run_id"]), rows)
    df = load_frame(tmp_path / "study", ())

    def drawn(out):
        paths = plot(df, out)
        return {p.name: p.read_bytes() for png in paths for p in (png, png.with_suffix(".pdf"))}

    first, second = drawn(tmp_path / "a"), drawn(tmp_path / "b")
    assert "throughput.png" in first and "throughput.pdf" in first
    assert first == second, sorted(name for name in first if first[name] != second[name])


def test_learning_curves_add_the_gradient_norm_panel_where_checks_recorded_it(tmp_path, monkeypatch):
    # a run from before session 11 (no grad_norm_max) beside one with it: three panels, the norm drawn for the one
    with_norm = make_run("mamba", "selective_copy", 0, {64: 0.9})
    for i, check in enumerate(with_norm[0]["history"]):
        check["grad_norm_max"] = 10.0 / (1 + i)
    for row in with_norm[1:]:
        row["history"] = with_norm[0]["history"]
    old = make_run("h3", "selective_copy", 0, {64: 0.5})
    for rows in (with_norm, old):
        write_rows(rows_path(tmp_path, "study", rows[0]["run_id"]), rows)
    df = load_frame(tmp_path / "study", ())
    fig = _drawn(plots.learning_curves, (df, tmp_path / "plots"), monkeypatch)
    acc_ax, loss_ax, norm_ax = fig.axes
    assert norm_ax.get_yscale() == "log" and "gradient norm" in norm_ax.get_title()
    assert len(norm_ax.get_lines()) == 1 and len(loss_ax.get_lines()) == 2
    assert min(ax.get_position().width for ax in fig.axes) > 0.2


def test_throughput_figures_say_when_runs_shared_their_gpu(tmp_path, monkeypatch):
    from ssmbench import report

    shared = make_run("mamba", "selective_copy", 0, {64: 0.9})
    for row in shared:
        row["gpu_sharing"] = "mps"
    alone = make_run("h3", "selective_copy", 0, {64: 0.5})  # no field: written before it existed, or alone
    for rows in (shared, alone):
        write_rows(rows_path(tmp_path, "study", rows[0]["run_id"]), rows)
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, png: figures.append((png.name, fig)) or png)
    report.plot(load_frame(tmp_path / "study", ()), tmp_path / "plots")
    titles = {name: fig.axes[0].get_title() for name, fig in figures}
    assert titles["throughput.png"].endswith("1 of 2 runs shared their GPU (mps): per-run rates")
    assert "shared" in titles["memory.png"]
