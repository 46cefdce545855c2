#!/usr/bin/env bash
# Copies a results study into $OUT so that it comes back from the GPU machine even when the call is cut off:
# <study>.tgz for rows, logs and progress files, and <study>_runs_<k>.tgz bundles of run folders (checkpoints,
# kept models), each bundle under ~14 MiB so that every file stays under the 16 MiB limit on what comes back.
# The lent machine returns at most 8 files in all: a study of up to ~90 MiB of checkpoints fits in 7. Each
# tarball is written to a temp name and renamed, so a cut leaves the previous complete snapshot.
#   bash scripts/gpu_snapshot.sh STUDY_DIR            # once
#   bash scripts/gpu_snapshot.sh STUDY_DIR 60 &       # every 60 s until killed
# Unpack here with: for f in FILES_AT/*.tgz; do tar xzf "$f"; done
set -uo pipefail
study=${1:?study folder, e.g. results/induction}; every=${2:-0}
name=$(basename "$study")
limit=$((14 * 1024 * 1024))
snap() {
  [ -d "$study" ] || return 0
  tar czf "$OUT/.$name.tgz" --exclude=hydra --exclude=runs "$study" && mv "$OUT/.$name.tgz" "$OUT/$name.tgz"
  local k=0 size=0 bundle=()
  flush() {
    [ ${#bundle[@]} -gt 0 ] || return 0
    tar czf "$OUT/.${name}_runs_$k.tgz" "${bundle[@]}" && mv "$OUT/.${name}_runs_$k.tgz" "$OUT/${name}_runs_$k.tgz"
    k=$((k + 1)); size=0; bundle=()
  }
  for run in "$study"/runs/*/; do
    [ -d "$run" ] || continue
    s=$(du -sb "$run" | cut -f1)
    if [ $((size + s)) -gt $limit ]; then flush; fi
    bundle+=("$run"); size=$((size + s))
  done
  flush
}
if [ "$every" -gt 0 ]; then
  while true; do sleep "$every"; snap; done
else
  snap
fi
