"""One report from several results folders: `ssmbench-report DIR1 DIR2 ... [--out DIR]`.

A sweep spread over machines (hosts, cluster jobs writing to local disks) leaves one results folder per machine.
Their rows are combined by (run id, evaluation length): the run id hashes what determines the result (results.py),
so the same key on two machines is the same run.

- The same key with the same result (accuracy, loss, steps, status) is a duplicate: kept once.
- The same key with a different result is a conflict (nondeterminism on a GPU, rows of another commit, a run
  redone with resume=false): the row seen first is kept, and summary.md lists every version under
  "Conflicting rows".
- Rows already in the output folder come first and are never replaced; then the folders in the order given.

The output folder (the first folder, or --out DIR) receives, as ordinary row files written atomically, the rows it
lacks (runs, or evaluation lengths of a run, found only elsewhere), so afterwards it holds the merged study: its
rows.csv, summary.md and plots are report.write_report's, and a sweep run there skips what any machine finished.
The other folders are only read. Runs in progress are listed for the output folder only (their checkpoints stay
where they are); the table of folders counts them for each.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .results import UnreadableRows, move_aside, read_rows, write_rows

# What a row's result is: two rows of one (run id, eval length) that differ in any of these conflict.
RESULT_KEYS = ("accuracy", "loss", "steps", "status")


@dataclass
class Source:
    """One folder of the merge and what it brought."""
    folder: Path
    files: int = 0
    rows: int = 0
    used: int = 0
    duplicates: int = 0
    conflicts: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    in_progress: int = 0


@dataclass
class Merged:
    runs: dict[str, list[dict[str, Any]]]  # run id -> its rows, one per evaluation length, first seen first
    sources: list[Source]
    # (run id, eval length) -> every distinct version [(folder, row)], the kept one first; only keys in conflict
    conflicts: dict[tuple[str, Any], list[tuple[Path, dict[str, Any]]]]

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.sources)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def same_result(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(_same(a.get(k), b.get(k)) for k in RESULT_KEYS)


def _row_files(folder: Path) -> list[Path]:
    d = folder / "rows" if (folder / "rows").is_dir() else folder  # as results.load_all reads a folder
    return sorted(d.glob("*.json"))


def _unique_folders(folders: Sequence[str | Path]) -> list[Path]:
    out, seen = [], set()
    for f in folders:
        key = Path(f).resolve()
        if key not in seen:
            seen.add(key)
            out.append(Path(f))
    return out


def merge_rows(folders: Sequence[str | Path]) -> Merged:
    """The rows of `folders`, one per (run id, evaluation length); earlier folders win conflicts."""
    from .progress_report import runs_in_progress

    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    first: dict[tuple[str, Any], tuple[Path, dict[str, Any]]] = {}
    conflicts: dict[tuple[str, Any], list[tuple[Path, dict[str, Any]]]] = {}
    sources = []
    for folder in _unique_folders(folders):
        src = Source(folder, in_progress=len(runs_in_progress(folder)))
        sources.append(src)
        for path in _row_files(folder):
            try:
                rows = read_rows(path)
            except (OSError, UnreadableRows) as e:
                src.unreadable.append((path.name, e.reason if isinstance(e, UnreadableRows) else str(e)))
                continue
            src.files += 1
            for row in rows:
                src.rows += 1
                rid = str(row.get("run_id") or path.stem)
                key = (rid, row.get("eval_len"))
                if key not in first:
                    first[key] = (folder, row)
                    runs[rid].append(row)
                    src.used += 1
                    continue
                versions = conflicts.get(key, [first[key]])
                if any(same_result(row, seen) for _, seen in versions):
                    src.duplicates += 1
                    continue
                src.conflicts += 1
                conflicts[key] = versions + [(folder, row)]
    return Merged(dict(runs), sources, conflicts)


def write_merged_rows(merged: Merged, out: Path) -> list[Path]:
    """Write into out/rows the row files whose content the merge changed (new runs, new evaluation lengths); a file
    there that cannot be read is moved aside (`.corrupt-<time>`) before its run's merged rows take its place."""
    written = []
    folder = Path(out) / "rows"
    for rid, rows in merged.runs.items():
        path = folder / f"{rid}.json"
        if path.exists():
            try:
                have = read_rows(path)
            except (OSError, UnreadableRows):
                move_aside(path)
            else:
                if len(have) == len(rows):  # out's rows come first in the merge, so nothing was added
                    continue
        write_rows(path, rows)
        written.append(path)
    return written


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def merge_sections(merged: Merged, out: Path, written: int) -> str:
    """The summary.md sections of a merge: the folders read, and the conflicting rows."""
    lines = ["## Folders merged", "",
             f"Rows keyed by run id and evaluation length; {merged.duplicates} duplicates (same accuracy, loss, steps "
             f"and status) dropped; {written} row files added to or completed in `{out}/rows`.", "",
             "| folder | row files | rows | rows used | duplicates | conflicting | files not read | runs in progress |",
             "|---|---|---|---|---|---|---|---|"]
    for s in merged.sources:
        name = f"`{s.folder}`" + (" (output)" if s.folder.resolve() == out.resolve() else "")
        lines.append(f"| {name} | {s.files} | {s.rows} | {s.used} | {s.duplicates} | {s.conflicts} | "
                     f"{len(s.unreadable)} | {s.in_progress} |")
    lines.append("")
    for s in merged.sources:
        for name, reason in s.unreadable:
            lines.append(f"- not read: `{s.folder}/{name}`: {reason.splitlines()[0] if reason else ''}")
    if any(s.unreadable for s in merged.sources):
        lines.append("")
    lines += ["## Conflicting rows", ""]
    if not merged.conflicts:
        lines += ["None: every run id and evaluation length found in more than one folder has the same accuracy, "
                  "loss, steps and status in each.", ""]
        return "\n".join(lines)
    lines += [f"{len(merged.conflicts)} (run id, evaluation length) pairs hold different results in different folders: "
              "the same config gave different numbers (nondeterminism on a GPU, rows of another commit, a run "
              "redone with resume=false). The tables above use the row marked used; re-run such a run with "
              "resume=false where it matters.", "",
              "| run | model | seed | L | folder | used | accuracy | loss | steps | status | commit | device |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (rid, L), versions in merged.conflicts.items():
        for i, (folder, r) in enumerate(versions):
            lines.append(f"| {rid} | {_fmt(r.get('model'))} | {_fmt(r.get('seed'))} | {_fmt(L)} | `{folder}` | "
                         f"{'yes' if i == 0 else 'no'} | {_fmt(r.get('accuracy'))} | {_fmt(r.get('loss'))} | "
                         f"{_fmt(r.get('steps'))} | {_fmt(r.get('status'))} | {_fmt(r.get('commit'))} | "
                         f"{_fmt(r.get('device'))} |")
    lines.append("")
    return "\n".join(lines)


def write_merged_report(folders: Sequence[str | Path], out: str | Path | None = None, by: tuple[str, ...] = (),
                        best_over: str | None = None) -> str:
    """Merge the rows of `folders` into `out` (default: the first folder), write the report there
    (report.write_report) with the merge's sections, and return summary.md's text."""
    from .report import write_report

    if not folders:
        raise ValueError("write_merged_report needs at least one folder")
    out = Path(out) if out is not None else Path(folders[0])
    merged = merge_rows([out, *folders])  # the output folder's own rows first: never replaced
    written = write_merged_rows(merged, out)
    text = write_report(out, by, best_over)
    sections = merge_sections(merged, out, len(written))
    at = text.find("\n## ")
    text = text + "\n" + sections if at < 0 else text[:at + 1] + sections + "\n" + text[at + 1:]
    (out / "summary.md").write_text(text)
    return text
