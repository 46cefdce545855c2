#!/usr/bin/env bash
# Everything to do on this machine after a GPU call of long runs in pieces, before the next call:
#   bash scripts/after_gpu_call.sh FILES_AT [STUDY ...]
# 1. copies the call's files (FILES_AT, the device tool's read-only folder, which the next call overwrites) into a
#    fresh folder under $CALLS_DIR (default /tmp/gpu_calls), so a later unpack can still read them;
# 2. brings back the files scripts/gpu_tree.py parked before the call (`stash`), if any;
# 3. unpacks the snapshots into the working tree, keeping the furthest copy of every run (scripts/unpack_calls.py);
# 4. for each study (default: those the call's snapshots hold) stages the checkpoints of the runs still
#    in progress (git-ignored, force-added so that the next session can continue them), drops from the index the
#    checkpoints of runs that finished (their checkpoint is gone, their model kept: staged too), and
#    regenerates the study's report (ssmbench-report).
# Nothing is committed: read the report, then commit. Each step says what it did; a failing step stops the script.
# Session notes of sessions 7-11 did these by hand; a forgotten unpack once cost two calls of training.
set -euo pipefail
files_at=${1:?usage: bash scripts/after_gpu_call.sh FILES_AT [STUDY ...]}
shift
here=$(dirname "$0")
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
[ -d "$files_at" ] || { echo "after_gpu_call: $files_at is not a folder" >&2; exit 2; }

dest="${CALLS_DIR:-/tmp/gpu_calls}/$(date -u +%Y%m%dT%H%M%S)-$$"
mkdir -p "$dest"
cp -p "$files_at"/* "$dest"/
echo "# the call's files copied to $dest: $(ls "$dest" | tr '\n' ' ')"

if [ -d .gpu_stash ] && [ -n "$(ls -A .gpu_stash 2>/dev/null)" ]; then
  "$py" "$here/gpu_tree.py" restore
fi
"$py" "$here/unpack_calls.py" "$dest"

if [ "$#" -gt 0 ]; then
  studies=("$@")
else
  # the studies the call's snapshots hold (results/<study>/... inside its tarballs)
  mapfile -t studies < <("$py" - "$dest" <<'PYEOF'
import sys, tarfile
from pathlib import Path, PurePosixPath
found = set()
for tgz in sorted(Path(sys.argv[1]).glob("*.tgz")):
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            parts = [PurePosixPath(m.name).parts for m in tar.getmembers()]
    except (tarfile.TarError, OSError):
        continue
    found |= {p[1] for p in parts if len(p) > 2 and p[0] == "results"}
print("\n".join(sorted(found)))
PYEOF
  )
fi
for study in "${studies[@]}"; do
  [ -n "$study" ] || continue  # a call that sent back no snapshot
  folder=results/$study
  [ -d "$folder/runs" ] || { echo "after_gpu_call: no $folder/runs" >&2; exit 2; }
  staged=0 dropped=0 models=0
  for run in "$folder"/runs/*/; do
    run=${run%/}
    if [ -f "$run/checkpoint.pt" ]; then
      git add -f "$run/checkpoint.pt"; staged=$((staged + 1))
    elif git ls-files --error-unmatch "$run/checkpoint.pt" >/dev/null 2>&1; then
      git rm -q --cached "$run/checkpoint.pt"; dropped=$((dropped + 1))
      if [ -f "$run/model.pt" ]; then git add -f "$run/model.pt"; models=$((models + 1)); fi
    fi
  done
  echo "# $study: $staged checkpoints of runs in progress staged, $dropped of finished runs dropped from the index" \
       "($models models staged)"
  "$py" -c 'import sys; from ssmbench.report import main; main([sys.argv[1], "--quiet"])' "$folder"
  echo "# $study: report regenerated ($folder/summary.md)"
done
