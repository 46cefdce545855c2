"""The results store: one JSON file of rows per finished run, written atomically.

Layout: <results_root>/<study>/rows/<run_id>.json, a list of rows (one per evaluation length). A run's
id is a hash of what determines its result (task, model, trainer, eval settings, seed, device), so a sweep run
again finds the runs it already finished and skips them: a killed sweep resumes and no row is lost or written
twice. A file appears only complete (temp file + fsync + rename), so a kill mid-write leaves no partial row. A file
that is damaged anyway (a disk full, a copy cut short, a hand edit) is never taken for a finished run: `finished`
moves it aside and the run is done again, and `load_all` skips it, naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable

log = logging.getLogger("ssmbench")

OK_STATUSES = ("ok",)


def run_id(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rows_dir(results_root: str | Path, study: str) -> Path:
    return Path(results_root) / study / "rows"


def rows_path(results_root: str | Path, study: str, rid: str) -> Path:
    return rows_dir(results_root, study) / f"{rid}.json"


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """`write(file)` into a temp file beside `path`, fsync, then rename over `path`: readers see the old file or
    the whole new one, never a part (a kill mid-write leaves at most a `.<name>.*.tmp`, which nothing reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, json.dumps(rows, indent=1, default=str, allow_nan=True) + "\n")


class UnreadableRows(ValueError):
    """A row file that is not complete JSON holding a list of row dicts (or, for a run, not that run's rows)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows in `path`. Raises UnreadableRows (a ValueError) naming the file when it is not complete JSON
    holding a list of row dicts (truncated, corrupt, or some other JSON); OSError when it cannot be read."""
    path = Path(path)
    data = path.read_bytes()
    try:
        rows = json.loads(data)
    except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not text
        what = "empty" if not data.strip() else "not complete JSON (truncated or corrupt?)"
        raise UnreadableRows(path, f"{what}: {e}") from e
    if not isinstance(rows, list):
        raise UnreadableRows(path, f"holds a JSON {type(rows).__name__}, not a list of rows")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise UnreadableRows(path, f"row {i} is a JSON {type(r).__name__}, not a row (object)")
    return rows


def read_run_rows(path: Path, rid: str) -> list[dict[str, Any]]:
    """The rows of run `rid` in `path`: read_rows, and every row must carry run_id == rid (at least one row)."""
    rows = read_rows(path)
    if not rows:
        raise UnreadableRows(path, f"holds no rows (run {rid})")
    others = sorted({str(r.get("run_id")) for r in rows if r.get("run_id") != rid})
    if others:
        raise UnreadableRows(path, f"holds rows of run {', '.join(others)}, not of run {rid}")
    return rows


def move_aside(path: Path, tag: str = "corrupt") -> Path:
    """Rename `path` to `<name>.<tag>-<unix time>` (never over an existing file) and return the new path."""
    stamp = int(time.time())
    aside = path.with_name(f"{path.name}.{tag}-{stamp}")
    n = 1
    while os.path.lexists(aside):
        aside = path.with_name(f"{path.name}.{tag}-{stamp}-{n}")
        n += 1
    os.replace(path, aside)
    return aside


def finished(path: Path, retry_failed: bool, current_commit: str | None = None) -> bool:
    """Whether the run whose rows live at `path` (`<run_id>.json`) should be skipped.

    Only a complete, readable file of this run's rows counts: one that is truncated, corrupt or holds another
    run's rows is named in a warning and moved aside (`<name>.corrupt-<unix time>`), and the run is done again.
    With `retry_failed`, a run with any row not "ok" is done again. A run skipped whose rows were written at
    another commit than `current_commit` (default: this checkout's, env.git_commit) is logged as such."""
    path = Path(path)
    if not os.path.lexists(path):
        return False
    rid = path.stem
    try:
        rows = read_run_rows(path, rid)
    except (OSError, UnreadableRows) as e:
        reason = e.reason if isinstance(e, UnreadableRows) else f"{type(e).__name__}: {e}"
        try:
            aside = move_aside(path)
        except OSError as move_error:
            log.warning("rows file %s of run %s cannot be used (%s) nor moved aside (%s); the run is done again",
                        path, rid, reason.splitlines()[0], move_error)
        else:
            log.warning("rows file %s of run %s cannot be used (%s); moved to %s, the run is done again",
                        path, rid, reason.splitlines()[0], aside.name)
        return False
    if retry_failed and not all(r.get("status") in OK_STATUSES for r in rows):
        return False
    if current_commit is None:
        from .env import git_commit  # imports torch: only where runs are resumed, not for reading rows

        current_commit = git_commit()
    commits = sorted({str(r.get("commit") or "unknown") for r in rows})
    if commits != [current_commit]:
        log.warning("rows of run %s come from commit %s; current is %s; run with resume=false to redo",
                    rid, ", ".join(commits), current_commit)
    return True


class Rows(list):
    """Rows read from a results folder (a list); `unreadable` holds (file name, reason) of every row file that was
    not read because it is not complete JSON holding a list of rows."""

    def __init__(self, rows=(), unreadable=()):
        super().__init__(rows)
        self.unreadable: list[tuple[str, str]] = list(unreadable)


def load_all(folder: str | Path) -> Rows:
    """Every row under <folder>/rows (or <folder> itself if it holds the JSON files). Only well-formed row files
    are read; the others are logged by name and listed in the result's `unreadable`, never a crash."""
    folder = Path(folder)
    d = folder / "rows" if (folder / "rows").is_dir() else folder
    rows = Rows()
    for p in sorted(d.glob("*.json")):
        try:
            rows.extend(read_rows(p))
        except (OSError, UnreadableRows) as e:
            reason = e.reason if isinstance(e, UnreadableRows) else f"{type(e).__name__}: {e}"
            rows.unreadable.append((p.name, reason))
            log.warning("row file %s not read: %s", p, reason)
    return rows
