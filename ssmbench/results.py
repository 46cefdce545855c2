"""The results store: one JSON file of rows per finished run, written atomically.

Layout: <results_root>/<study>/rows/<run_id>.json, a list of rows (one per evaluation length). A run's
id is a hash of what determines its result (task, model, trainer, eval settings, seed, device), so a sweep run
again finds the runs it already finished and skips them: a killed sweep resumes and no row is lost or written
twice. A file appears only complete (temp file + fsync + rename), so a kill mid-write leaves no partial row.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

OK_STATUSES = ("ok",)


def run_id(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rows_dir(results_root: str | Path, study: str) -> Path:
    return Path(results_root) / study / "rows"


def rows_path(results_root: str | Path, study: str, rid: str) -> Path:
    return rows_dir(results_root, study) / f"{rid}.json"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, json.dumps(rows, indent=1, default=str, allow_nan=True) + "\n")


def read_rows(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())


def finished(path: Path, retry_failed: bool) -> bool:
    """Whether the run whose rows live at `path` should be skipped."""
    if not path.exists():
        return False
    if not retry_failed:
        return True
    try:
        rows = read_rows(path)
    except (OSError, ValueError):
        return False
    return all(r.get("status") in OK_STATUSES for r in rows)


def load_all(folder: str | Path) -> list[dict[str, Any]]:
    """Every row under <folder>/rows (or <folder> itself if it holds the JSON files)."""
    folder = Path(folder)
    d = folder / "rows" if (folder / "rows").is_dir() else folder
    rows = []
    for p in sorted(d.glob("*.json")):
        rows.extend(read_rows(p))
    return rows
