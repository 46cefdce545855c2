"""Training throughput of a study's runs per GPU call, read from their logs (durable runs, README "Long runs, in
pieces"). Every piece of a run ends with a log line "paused at step S of N (trainer.max_time_s=B spent ...)", and
gpu_parallel.sh starts each piece's log with "# <time> gpu k of n, <sharing>"; a call is identified by its budget
B and the minutes its pieces ended. (Before commit 979294d that line was written only when runs were spread over
several GPUs; in older logs a 1-GPU piece inherits the line of the call before it.) Writes one CSV row per (call,
run), the steps trained in that piece, and prints the steps per second of each call summed over its runs: what
several runs sharing GPUs achieve.

    python scripts/pieces_throughput.py results/table1 [--out results/scaleout/table1_pieces.csv]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

from ssmbench.progress_report import runs_in_progress

PAUSE = re.compile(r"^\[(?P<time>[\d-]+ [\d:]+),\d+\].*run (?P<run>\w+) \((?P<model>\S+) on \S+, seed (?P<seed>\d+)\) "
                   r"paused at step (?P<step>\d+) of (?P<of>\d+) \(trainer\.max_time_s=(?P<budget>[\d.]+) spent")
GPU = re.compile(r"^# (?P<time>\S+) gpu (?P<k>\d+) of (?P<n>\d+)")


def pieces(study: Path) -> list[dict]:
    """One dict per paused piece, in log order per run, with the steps it trained (its step minus the step the
    run had reached at the end of its previous piece) and the GPU layout gpu_parallel.sh logged before it."""
    out = []
    for log in sorted((study / "logs").glob("*.log")):
        last_step: dict[str, int] = {}
        gpus = "1"
        for line in log.read_text(errors="replace").splitlines():
            if m := GPU.match(line):
                gpus = m["n"]
                continue
            if not (m := PAUSE.match(line)):
                continue
            step = int(m["step"])
            out.append({"log": log.name, "run_id": m["run"], "model": m["model"], "seed": int(m["seed"]),
                        "ended": m["time"][:16], "budget_s": float(m["budget"]), "gpus": int(gpus),
                        "step": step, "steps_in_piece": step - last_step.get(m["run"], 0)})
            last_step[m["run"]] = step
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="a study folder with logs/*.log, e.g. results/table1")
    ap.add_argument("--out", type=Path, help="CSV of the pieces (default: print only)")
    ap.add_argument("--per-run", action="store_true", help="also print each piece's steps per second")
    a = ap.parse_args(argv)
    if not (a.study / "logs").is_dir():
        print(f"no logs/ folder in {a.study}", file=sys.stderr)
        return 2
    rows = pieces(a.study)
    if not rows:
        print(f"no paused pieces in {a.study}/logs", file=sys.stderr)
        return 1
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with a.out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print("call (first piece ended)  budget_s  gpus  runs  steps  steps/s (sum over runs)")
    for rs in calls_of(rows):
        steps = sum(r["steps_in_piece"] for r in rs)
        budget = rs[0]["budget_s"]
        print(f"{rs[0]['ended']}  {budget:8.0f}  {rs[0]['gpus']:4d}  {len(rs):4d}  {steps:6d}  {steps / budget:8.1f}")
        if a.per_run:
            for r in sorted(rs, key=lambda r: r["log"]):
                print(f"    {r['log']:<24} {r['model']:<18} {r['steps_in_piece']:7d} steps  "
                      f"{r['steps_in_piece'] / budget:8.1f} steps/s")
    left = steps_left(a.study)
    if left:
        last = calls_of(rows)[-1]
        rate = sum(r["steps_in_piece"] for r in last) / last[0]["budget_s"]
        print(f"left: {sum(left):,} steps in {len(left)} unfinished runs; at the last call's {rate:.1f} steps/s "
              f"(on {last[0]['gpus']} GPU(s)), {sum(left) / rate / 60:.0f} minutes of training if none stops early")
    return 0


def steps_left(study: Path) -> list[int]:
    """The steps each unfinished run of the study still has to train (the report's list of runs in progress,
    whose rows are the truth: a run with rows is finished)."""
    return [int(r["steps"]) - int(r.get("step") or 0) for r in runs_in_progress(study) if r.get("steps")]


def calls_of(rows: list[dict], gap_min: int = 5) -> list[list[dict]]:
    """Pieces grouped into calls: the same budget and GPU count, each ending within `gap_min` minutes of the
    previous one (a call's pieces all end when its budget is spent, give or take their start-up)."""
    groups: list[list[dict]] = []
    for r in sorted(rows, key=lambda r: r["ended"]):
        g = groups[-1] if groups else None
        if (g and g[-1]["budget_s"] == r["budget_s"] and g[-1]["gpus"] == r["gpus"]
                and _minutes(r["ended"]) - _minutes(g[-1]["ended"]) <= gap_min):
            g.append(r)
        else:
            groups.append([r])
    return groups


def _minutes(stamp: str) -> int:
    from datetime import datetime
    return int(datetime.strptime(stamp, "%Y-%m-%d %H:%M").timestamp() // 60)


if __name__ == "__main__":
    raise SystemExit(main())
