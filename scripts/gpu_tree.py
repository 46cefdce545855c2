"""Keep the working tree small enough for a GPU call, which copies it and refuses a tree over 64 MiB.

The tree carries every study's committed checkpoints and trained models (tens of MB), and a call that trains one
study needs only that study's unfinished runs. So before a call, park the other studies' `.pt` files, and the
trained models of the named studies' finished runs (runs/<id>/model.pt beside rows/<id>.json: a call skips a
finished run), in `.gpu_stash/` (ignored by git, so the copy leaves it behind) and bring them back after:

    python scripts/gpu_tree.py stash table1 induction   # keep the unfinished runs' .pt of results/{table1,induction}
    python scripts/gpu_tree.py restore                  # every parked file back where it was
    python scripts/gpu_tree.py size                     # what a call would copy now, against the limit

Parking is a move within the repo, so nothing is lost if a session ends between the two: `restore` (or `git
status`, which lists the parked files as deleted) finds them. `stash` refuses to run while something is parked, and
`restore` refuses to overwrite a file that came back into the tree meanwhile.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STASH = ".gpu_stash"
LIMIT = 64 * 2**20  # the device tool's limit on the copied tree (tracked and untracked-not-ignored files)


def copied_files(root: Path) -> list[Path]:
    """The files a call copies: tracked ones present in the tree, and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout
    return [root / p for p in out.decode().split("\0") if p and (root / p).is_file()]


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in copied_files(root))


def parkable(root: Path, keep: list[str]) -> list[Path]:
    """Tracked .pt files under results/ outside the studies kept, and inside them the trained models of finished
    runs (results/<study>/runs/<id>/model.pt with a results/<study>/rows/<id>.json)."""
    out = subprocess.run(["git", "ls-files", "-z", "results"], cwd=root, check=True, capture_output=True).stdout
    rels = [Path(p) for p in out.decode().split("\0") if p.endswith(".pt")]
    return [r for r in rels if (root / r).is_file() and not (_kept(r, keep) and not _finished_model(root, r))]


def _kept(rel: Path, keep: list[str]) -> bool:
    return len(rel.parts) > 1 and rel.parts[1] in keep


def _finished_model(root: Path, rel: Path) -> bool:
    """results/<study>/runs/<id>/model.pt of a run whose rows exist: a GPU call skips that run."""
    parts = rel.parts
    return (len(parts) == 5 and parts[2] == "runs" and parts[4] == "model.pt"
            and (root / "results" / parts[1] / "rows" / f"{parts[3]}.json").is_file())


def stash(root: Path, keep: list[str]) -> int:
    stash_dir = root / STASH
    if stash_dir.exists() and any(p.is_file() for p in stash_dir.rglob("*")):
        print(f"gpu_tree: {STASH}/ already holds parked files; run `restore` first", file=sys.stderr)
        return 1
    unknown = [s for s in keep if not (root / "results" / s).is_dir()]
    if unknown:
        print(f"gpu_tree: no study folder results/{unknown[0]}", file=sys.stderr)
        return 1
    moved = 0
    for rel in parkable(root, keep):
        dest = stash_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        moved += (root / rel).stat().st_size
        shutil.move(root / rel, dest)
    left = tree_bytes(root)
    print(f"gpu_tree: parked {moved / 2**20:.1f} MiB in {STASH}/; the tree a call copies: "
          f"{left / 2**20:.1f} MiB of {LIMIT / 2**20:.0f}")
    return 0 if left <= LIMIT else 2


def restore(root: Path) -> int:
    stash_dir = root / STASH
    parked = [p for p in stash_dir.rglob("*") if p.is_file()] if stash_dir.exists() else []
    clashes = [p for p in parked if (root / p.relative_to(stash_dir)).exists()]
    if clashes:
        print(f"gpu_tree: {clashes[0].relative_to(stash_dir)} is back in the tree already; not overwriting it "
              f"(compare it with {clashes[0]})", file=sys.stderr)
        return 1
    for p in parked:
        dest = root / p.relative_to(stash_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(p, dest)
    if stash_dir.exists():
        shutil.rmtree(stash_dir)
    print(f"gpu_tree: restored {len(parked)} files")
    return 0


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stash", help="park the .pt files of every study but these")
    s.add_argument("studies", nargs="*", help="study folders under results/ whose files stay")
    sub.add_parser("restore", help="bring every parked file back")
    sub.add_parser("size", help="the size of the tree a call copies")
    args = ap.parse_args(argv)
    if args.cmd == "stash":
        return stash(root, args.studies)
    if args.cmd == "restore":
        return restore(root)
    size = tree_bytes(root)
    print(f"{size / 2**20:.1f} MiB of {LIMIT / 2**20:.0f}")
    return 0 if size <= LIMIT else 2


if __name__ == "__main__":
    sys.exit(main())
