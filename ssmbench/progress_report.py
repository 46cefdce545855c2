"""Runs still in progress in a study folder: where each stands, and its held-out curve so far.

These are not results: a paused run is reported by step and by its last held-out check, never as a final number,
and its figure says so. Read from <study>/runs/<run_id>/{run.json, progress.json} (checkpoint.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .checkpoint import PROGRESS, RUN_INFO
from .plots import LINE_STYLES, chance_accuracy, model_colour, save_figure, step_text

UNFINISHED = ("paused", "running", "evaluating")


def runs_in_progress(folder: str | Path) -> list[dict]:
    """One dict per unfinished run: run.json's fields, progress.json's step, status, history."""
    runs = []
    for prog_path in sorted(Path(folder).glob(f"runs/*/{PROGRESS}")):
        try:
            prog = json.loads(prog_path.read_text())
            info_path = prog_path.with_name(RUN_INFO)
            info = json.loads(info_path.read_text()) if info_path.exists() else {}
        except (OSError, ValueError):
            continue  # a progress file is a convenience; an unreadable one is skipped, the checkpoint decides
        # Rows are the truth: a run whose rows exist finished, whatever a progress file copied mid-run still says
        # (a snapshot taken while it evaluated, say).
        finished = (Path(folder) / "rows" / f"{prog_path.parent.name}.json").exists()
        if prog.get("status") in UNFINISHED and not finished:
            runs.append({**info, **prog, "run_id": prog_path.parent.name})
    return runs


def finished_runs(folder: str | Path) -> list[dict]:
    """One dict per finished run of the study (its row at the training length, else its first: model, seed, lr,
    steps, accuracy, history, task, config), for drawing beside the runs in progress."""
    runs = []
    for path in sorted(Path(folder).glob("rows/*.json")):
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rows = rows if isinstance(rows, list) else [rows]
        rows = [r for r in rows if isinstance(r, dict)]
        if rows:
            at_train = [r for r in rows if r.get("eval_len") is not None and r.get("eval_len") == r.get("train_len")]
            runs.append((at_train or rows)[0])
    return runs


def in_progress_table(runs: list[dict]) -> str:
    lines = ["| model | seed | lr | step | of | last held-out check (accuracy %) | resumes | updated | run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (str(r.get("model")), r.get("seed", 0))):
        last = r.get("last_check") or {}
        acc = f"{100 * last['accuracy']:.1f} at step {last['step']}" if "accuracy" in last else "-"
        lines.append(f"| {r.get('model', '?')} | {r.get('seed', '?')} | {r.get('lr', '?')} | {r.get('step')} | "
                     f"{r.get('steps', '?')} | {acc} | {r.get('resumes', 0)} | {r.get('updated', '')} | "
                     f"`{r['run_id']}` |")
    return "\n".join(lines)


IN_PROGRESS_TITLE = "Runs in progress (paused, continuing): not final results"
FINISHED_TITLE = ("Held-out accuracy during training, one panel per learning rate; each run ends in a star at its "
                  "final evaluation")


def in_progress_plot(runs: list[dict], out: Path, finished: list[dict] = (),
                     title: str = IN_PROGRESS_TITLE) -> Path | None:
    """Held-out accuracy against step for each unfinished run, titled as not final: one panel per learning rate
    where the runs use several (a study that runs the paper's lr and a deviation beside it), colour by model, line
    style by seed; a line ends at the run's last check, so how far each run has come reads off the x axis. The
    study's finished runs are drawn beside them, their curves ending in a star (their final numbers are the
    report's), so that one figure holds every run of the study. With no run in progress (`runs` empty) the same
    figure of the finished runs alone, under `title`."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    with_history = [r for r in runs if r.get("history")]
    done = [r for r in finished if r.get("history")]
    if not with_history and not (done and not runs):  # nothing in progress has a check yet
        return None
    everyone = with_history + done
    lrs = sorted({r.get("lr") for r in everyone}, key=lambda v: (v is None, v if v is not None else 0))
    seeds = sorted({r.get("seed", 0) for r in everyone}, key=str)
    fig, axes = plt.subplots(1, len(lrs), figsize=(4.6 * len(lrs) + 2.2, 4.2), sharey=True, squeeze=False)
    chance = _chance(everyone)
    for ax, lr in zip(axes[0], lrs):
        mine = [r for r in with_history if r.get("lr") == lr]
        mine_done = [r for r in done if r.get("lr") == lr]
        for r in sorted(mine + mine_done, key=lambda r: (str(r.get("model")), str(r.get("seed", 0)))):
            h = pd.DataFrame(r["history"])
            colour = model_colour(str(r.get("model")))
            style = LINE_STYLES[seeds.index(r.get("seed", 0)) % len(LINE_STYLES)]
            # markers: a run with one check so far still shows; past 40 checks they would hide the line
            ax.plot(h["step"], 100 * h["accuracy"], color=colour, ls=style, lw=1.6,
                    marker="o" if len(h) <= 40 else None, ms=3)
            if r in mine_done:
                # the star is the run's final evaluation (its row), which can differ from its last check: a dotted
                # line joins them (a run that collapsed after its last check reads as such)
                end = _final_point(r, h)
                if end != (h["step"].iloc[-1], h["accuracy"].iloc[-1]):
                    ax.plot([h["step"].iloc[-1], end[0]], [100 * h["accuracy"].iloc[-1], 100 * end[1]],
                            color=colour, ls=":", lw=1.2)
                ax.plot(end[0], 100 * end[1], marker="*", ms=13, color=colour, mec="black", mew=0.6, zorder=5)
        if chance is not None:
            ax.axhline(100 * chance, color="grey", ls="--", lw=1)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_formatter(FuncFormatter(step_text))
        counts = ", ".join(part for part in (f"{len(mine)} in progress" if mine else "",
                                             f"{len(mine_done)} finished" if mine_done else "") if part)
        ax.set_title(f"lr {_lr_text(lr)} ({counts})", fontsize=10)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out accuracy at the training length (%)")
    models = sorted({str(r.get("model")) for r in everyone})
    handles = [Line2D([], [], color=model_colour(m), lw=2, label=m) for m in models]
    if len(seeds) > 1:
        handles += [Line2D([], [], color="black", ls=LINE_STYLES[i % len(LINE_STYLES)], label=f"seed {s}")
                    for i, s in enumerate(seeds)]
    if done:
        handles.append(Line2D([], [], color="black", ls="", marker="*", ms=11,
                              label="finished: final evaluation (the report)"))
    if chance is not None:
        handles.append(Line2D([], [], color="grey", ls="--", lw=1, label=f"chance ({100 * chance:.1f}%)"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    if runs and done:
        title += "; finished runs end in a star at their final evaluation"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def _final_point(row: dict, history: pd.DataFrame) -> tuple:
    """(step, accuracy) of a finished run's final evaluation; its last check where the row lacks either."""
    step, acc = row.get("steps"), row.get("accuracy")
    if isinstance(step, (int, float)) and isinstance(acc, (int, float)) and acc == acc:
        return step, acc
    return history["step"].iloc[-1], history["accuracy"].iloc[-1]


def _lr_text(lr) -> str:
    """1e-4 rather than 0.0001: learning rates read as powers of ten."""
    if not isinstance(lr, (int, float)) or lr == 0 or 1e-2 <= abs(lr) < 1e3:
        return f"{lr:g}" if isinstance(lr, (int, float)) else str(lr)
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _chance(runs: list[dict]) -> float | None:
    """The task's chance accuracy when every run is on one task whose config is recorded."""
    if len({r.get("task") for r in runs}) != 1 or "config" not in runs[0]:
        return None
    from omegaconf import OmegaConf
    task_cfg = OmegaConf.create(runs[0]["config"]).task
    return chance_accuracy(str(task_cfg.name), int(task_cfg.vocab_size))


def write_in_progress(folder: str | Path) -> str:
    """Markdown section of the runs in progress, with plots/in_progress.png (every run of the study, the finished
    ones too). Once every run has finished, that figure goes (a stale figure of paused runs would read as
    current); where the finished runs use several learning rates, plots/curves_by_lr.png takes its place (the
    same panels, one per lr: the learning curves figure has them all in one panel) and the section shows it;
    otherwise the section is empty."""
    folder = Path(folder)
    plots = folder / "plots"
    runs = runs_in_progress(folder)
    if not runs:
        for stale in plots.glob("in_progress.*"):
            stale.unlink()
        finished = [r for r in finished_runs(folder) if r.get("history")]
        # Only where lr, model and seed name every run: the panels tell nothing else apart (colour is the model,
        # line style the seed), so variants of a model (a batch size, a position encoding) would draw alike.
        keys = [(r.get("lr"), r.get("model"), r.get("seed", 0)) for r in finished]
        if len({lr for lr, _, _ in keys}) < 2 or len(set(keys)) < len(keys):
            for stale in plots.glob("curves_by_lr.*"):
                stale.unlink()
            return ""
        in_progress_plot([], plots / "curves_by_lr.png", finished, title=FINISHED_TITLE)
        return "## Training curves by learning rate\n\n![curves by learning rate](plots/curves_by_lr.png)\n"
    for stale in plots.glob("curves_by_lr.*"):  # runs were added to a finished study: in_progress.png has them all
        stale.unlink()
    in_progress_plot(runs, plots / "in_progress.png", finished_runs(folder))
    return ("## Runs in progress (not results)\n\nPaused runs continue from their checkpoints on the next call of "
            "the same command; these numbers are where they stand, not what they reach.\n\n"
            + in_progress_table(runs) + "\n\n![in progress](plots/in_progress.png)\n")
