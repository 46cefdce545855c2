"""Unpacks the snapshot tarballs of one or more GPU calls (scripts/gpu_snapshot.sh) into the working tree, keeping
the furthest copy of every run instead of whichever tarball was unpacked last.

Why: a long study is trained in pieces, each GPU call resuming every unfinished run from the checkpoints in its
copy of the working tree. They used to be unpacked with `for f in FILES_AT/*.tgz; do tar xzf "$f"; done`. When
three calls were made in a row without unpacking in between, each resumed from the same old checkpoints, and
unpacking them one over the other kept only the last: two thirds of the training was lost, silently. A plain
unpack of an older call after a newer one moves runs backwards the same way. This script decides per run:

  - a finished copy (its rows file results/<study>/rows/<id>.json exists) beats an unfinished one;
  - otherwise the larger `step` in runs/<id>/progress.json wins;
  - the local copy wins ties: the tree is never replaced by an equal or older snapshot.

The winner's run folder replaces the local one entirely, with its rows file and its log (the file in
results/<study>/logs/ that names the run id). Rows files of finished runs whose folders are in no snapshot are
copied when absent locally. Study-level files (summary.md, plots/, tables) are not copied:
`ssmbench-report results/<study>` regenerates them from the rows. Two calls that both advanced a run beyond the
local step trained from the same checkpoint; one of them is lost, and a WARNING line says which and how much.

    python scripts/unpack_calls.py CALL_DIR [CALL_DIR ...] [--root .] [--dry-run]

Each CALL_DIR holds one call's *.tgz files (e.g. each call's files_at folder); other files are ignored. Give the
calls oldest first: among calls with equal copies of a run, the first given is kept. --dry-run prints the
decisions and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

LOCAL = "local"


@dataclass
class Copy:
    """One source's copy of a run: the tree it lies in (ROOT or an extracted call) and how far it got."""
    source: str  # LOCAL or the call's name
    tree: Path   # holds results/<study>/...
    study: str
    rid: str
    step: int
    finished: bool

    @property
    def key(self) -> tuple[bool, int]:
        return (self.finished, self.step)

    @property
    def folder(self) -> Path:
        return self.tree / "results" / self.study / "runs" / self.rid


def extract(tgz: Path, dest: Path) -> None:
    """Extracts tgz under dest, refusing the whole tarball if any member could write outside dest (an absolute
    path, a `..`, a link or device): nothing of a suspect snapshot should reach the tree. A safe tarball that is
    not a results snapshot (a call's other output, e.g. a measurement's tarball beside the snapshots) is skipped
    with a note."""
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                p = PurePosixPath(m.name)
                if p.is_absolute() or ".." in p.parts:
                    sys.exit(f"unpack_calls: refusing {tgz}: member {m.name!r} is not a relative path under results/")
                if not (m.isfile() or m.isdir()):
                    sys.exit(f"unpack_calls: refusing {tgz}: member {m.name!r} is not a plain file or folder")
            outside = [m.name for m in members if not PurePosixPath(m.name).parts
                       or PurePosixPath(m.name).parts[0] != "results"]
            if outside:
                print(f"unpack_calls: skipping {tgz}: not a results snapshot (member {outside[0]!r} is not under "
                      "results/)")
                return
            for m in members:
                # PurePosixPath collapses the "//" a study given as "results/x/" leaves in gpu_snapshot.sh's names
                target = dest.joinpath(*PurePosixPath(m.name).parts)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(m) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
    except (tarfile.TarError, EOFError, OSError) as e:
        sys.exit(f"unpack_calls: cannot read {tgz}: {e}")


def read_copy(source: str, tree: Path, study: str, rid: str) -> Copy:
    try:
        step = int(json.loads((tree / "results" / study / "runs" / rid / "progress.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        step = -1  # no readable progress: older than any copy that has one
    finished = (tree / "results" / study / "rows" / f"{rid}.json").is_file()
    return Copy(source, tree, study, rid, step, finished)


def run_ids(tree: Path, study: str) -> set[str]:
    runs = tree / "results" / study / "runs"
    # hidden names: replace_folder's leftovers, not runs
    return {p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")} if runs.is_dir() else set()


def logs_naming(tree: Path, study: str, rid: str) -> list[Path]:
    """The log(s) of a run: gpu_parallel.sh writes one log per run name, and the run's lines name its id."""
    logs = tree / "results" / study / "logs"
    if not logs.is_dir():
        return []
    return [p for p in sorted(logs.iterdir()) if p.is_file() and rid in p.read_text(errors="replace")]


def replace_folder(src: Path, dst: Path) -> None:
    # Copy beside the old folder first and swap: a cut mid-copy must not leave half a run folder (a checkpoint
    # without its progress), which the next call would resume from or start over.
    tmp = dst.with_name(f".{dst.name}.unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)


def step_str(c: Copy | None) -> str:
    if c is None:
        return "none"
    return f"{c.step}{' finished' if c.finished else ''}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("calls", nargs="+", type=Path, metavar="CALL_DIR", help="a folder holding one call's *.tgz")
    ap.add_argument("--root", type=Path, default=Path("."), help="the repository root to unpack into (default .)")
    ap.add_argument("--dry-run", action="store_true", help="print the decisions, change nothing")
    args = ap.parse_args(argv)
    root = args.root

    calls: dict[Path, list[Path]] = {}  # resolved: the same call given twice would read as a branch
    for d in args.calls:
        if not d.is_dir():
            ap.error(f"CALL_DIR {d} is not a folder")
        # gpu_snapshot.sh writes .<name>.tgz first and renames it when complete: skip such leftovers
        tgzs = sorted(p for p in d.glob("*.tgz") if p.is_file() and not p.name.startswith("."))
        if not tgzs:
            ap.error(f"CALL_DIR {d} holds no .tgz files")
        calls.setdefault(d.resolve(), tgzs)
    # Calls are named by their folder, or by their path where folders share a name (several ".../files_at").
    short = [d.name for d in calls]
    names = short if len(set(short)) == len(short) else [str(d) for d in calls]

    with tempfile.TemporaryDirectory(prefix="unpack_calls_") as tmp:
        trees: list[tuple[str, Path]] = []
        for i, (name, tgzs) in enumerate(zip(names, calls.values())):
            tree = Path(tmp) / str(i)
            tree.mkdir()
            for tgz in tgzs:
                extract(tgz, tree)
            trees.append((name, tree))

        winners: list[Copy] = []           # run folders to copy (with their rows files)
        rows_files: dict[Path, Path] = {}  # local rows path -> file to copy there
        logs: dict[Path, Path] = {}        # local log path -> file to copy there
        # Only the studies the calls brought back: runs of other studies are not in question.
        studies = sorted({p.name for _, t in trees if (t / "results").is_dir()
                          for p in (t / "results").iterdir() if p.is_dir()})
        for study in studies:
            local_ids = run_ids(root, study)
            ids_of = {n: run_ids(t, study) for n, t in trees}
            all_ids = local_ids.union(*ids_of.values())
            for rid in sorted(all_ids):
                local = read_copy(LOCAL, root, study, rid) if rid in local_ids else None
                copies = [read_copy(n, t, study, rid) for n, t in trees if rid in ids_of[n]]
                best = local
                for c in copies:  # strictly further only: the local copy, then the earliest call, wins ties
                    if best is None or c.key > best.key:
                        best = c
                # Calls that went past the local step all resumed from the local checkpoint (or from scratch):
                # only one line of that training can be kept.
                base = local.step if local is not None else 0
                advanced = [c for c in copies if c.step > base]
                if len(advanced) > 1:
                    for c in advanced:
                        if c is not best:
                            print(f"WARNING run {rid} ({study}): calls {c.source} and {best.source} both trained "
                                  f"from step {base}; kept {best.source}'s (step {best.step}), {c.source}'s "
                                  f"{c.step - base} steps (to step {c.step}) are lost")
                if best is local:
                    print(f"{study} {rid}: kept local, step {step_str(local)} (unchanged)")
                    continue
                print(f"{study} {rid}: from {best.source}, step {step_str(local)} -> {step_str(best)}")
                winners.append(best)
                if best.finished:
                    rows_files[root / "results" / study / "rows" / f"{rid}.json"] = \
                        best.tree / "results" / study / "rows" / f"{rid}.json"
                for log in logs_naming(best.tree, study, rid):
                    dst = root / "results" / study / "logs" / log.name
                    # logs are appended to call after call: if two winners carry the same log, the longer has more
                    if dst not in logs or log.stat().st_size > logs[dst].stat().st_size:
                        logs[dst] = log

            # Finished runs whose folders are in no snapshot (nor here) still bring their rows, if new here.
            for name, tree in trees:
                rows = tree / "results" / study / "rows"
                for r in sorted(rows.glob("*.json")) if rows.is_dir() else []:
                    dst = root / "results" / study / "rows" / r.name
                    if r.stem in all_ids or dst.exists() or dst in rows_files:
                        continue
                    print(f"{study} {r.stem}: rows from {name} (finished, no run folder)")
                    rows_files[dst] = r
                    for log in logs_naming(tree, study, r.stem):
                        logs.setdefault(root / "results" / study / "logs" / log.name, log)

        if args.dry_run:
            print(f"dry run, nothing changed: would copy {len(winners)} run folders, {len(rows_files)} rows files "
                  f"and {len(logs)} logs")
            return 0
        for c in winners:
            replace_folder(c.folder, root / "results" / c.study / "runs" / c.rid)
        for dst, src in [*rows_files.items(), *logs.items()]:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
