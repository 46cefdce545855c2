"""Hydra callbacks: the one-screen summary a sweep ends with."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# What each run of this process did, in order (cli.run_one appends): (outcome, label, where). With launchers
# that run jobs in other processes this stays empty and the summary reads the study folder alone.
OUTCOMES: list[tuple[str, str, str]] = []


def study_counts(folder: Path) -> tuple[collections.Counter, int]:
    """Row statuses of the finished runs in a study folder, and how many runs are in progress."""
    from .progress_report import runs_in_progress
    from .results import load_all

    counts: collections.Counter = collections.Counter()
    if (folder / "rows").is_dir():
        seen = set()
        for row in load_all(folder):
            key = row.get("run_id")
            if key in seen:
                continue
            seen.add(key)
            counts[row.get("status", "?")] += 1
    return counts, len(runs_in_progress(folder))


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.results_root) / config.study
        lines = ["", f"== sweep done: {folder} =="]
        if OUTCOMES:
            by = collections.Counter(outcome for outcome, _, _ in OUTCOMES)
            lines.append("this sweep: " + ", ".join(f"{n} {k}" for k, n in sorted(by.items())))
            for outcome, label, where in OUTCOMES:
                if outcome != "finished":
                    lines.append(f"  {outcome:9s} {label}  {where}")
        counts, in_progress = study_counts(folder)
        lines.append("the study folder: " + (", ".join(f"{n} runs {k}" for k, n in sorted(counts.items()))
                                             or "no finished runs")
                     + (f", {in_progress} in progress (run the same command again to continue)" if in_progress else ""))
        lines.append(f"next: ssmbench-report {folder}")
        print("\n".join(lines), flush=True)
