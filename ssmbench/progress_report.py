"""Runs still in progress in a study folder: where each stands, and its held-out curve so far.

These are not results: a paused run is reported by step and by its last held-out check, never as a final number,
and its figure says so. Read from <study>/runs/<run_id>/{run.json, progress.json} (checkpoint.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .checkpoint import PROGRESS, RUN_INFO
from .plots import LINE_STYLES, chance_accuracy, model_colour, save_figure

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


def in_progress_plot(runs: list[dict], out: Path) -> Path | None:
    """Held-out accuracy against step for each unfinished run, titled as not final."""
    import matplotlib.pyplot as plt

    with_history = [r for r in runs if r.get("history")]
    if not with_history:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    seen: dict[str, int] = {}  # runs of one model share its colour; their line styles tell them apart
    for r in sorted(with_history, key=lambda r: (str(r.get("model")), r.get("seed", 0))):
        h = pd.DataFrame(r["history"])
        model = str(r.get("model"))
        k = seen[model] = seen.get(model, -1) + 1
        label = (f"{r.get('model', r['run_id'])} (seed {r.get('seed', '?')}, lr {r.get('lr', '?')}, "
                 f"step {r['step']}/{r.get('steps', '?')})")
        ax.plot(h["step"], 100 * h["accuracy"], color=model_colour(model), ls=LINE_STYLES[k % len(LINE_STYLES)],
                label=label, lw=1.6, marker="o", ms=3)  # markers: a run with one check so far still shows
    tasks = {r.get("task") for r in with_history}
    if len(tasks) == 1 and "config" in with_history[0]:
        import yaml  # noqa: F401  (omegaconf brings PyYAML)
        from omegaconf import OmegaConf
        task_cfg = OmegaConf.create(with_history[0]["config"]).task
        chance = chance_accuracy(str(task_cfg.name), int(task_cfg.vocab_size))
        ax.axhline(100 * chance, color="grey", ls="--", lw=1, label=f"chance ({100 * chance:.1f}%)")
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out accuracy at the training length (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Runs in progress (paused, continuing): not final results", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out)


def write_in_progress(folder: str | Path) -> str:
    """Markdown section (empty string when nothing is in progress); also draws plots/in_progress.png, and
    removes it once every run has finished (a stale figure of paused runs would read as current)."""
    folder = Path(folder)
    runs = runs_in_progress(folder)
    if not runs:
        for stale in (folder / "plots").glob("in_progress.*"):
            stale.unlink()
        return ""
    in_progress_plot(runs, folder / "plots" / "in_progress.png")
    return ("## Runs in progress (not results)\n\nPaused runs continue from their checkpoints on the next call of "
            "the same command; these numbers are where they stand, not what they reach.\n\n"
            + in_progress_table(runs) + "\n\n![in progress](plots/in_progress.png)\n")
