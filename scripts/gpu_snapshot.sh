#!/usr/bin/env bash
# Copies a results study into $OUT so that it comes back from the GPU machine even when the call is cut off:
# <study>.tgz for rows, logs and progress files, and <study>_runs_<k>.tgz bundles of run folders (checkpoints,
# kept models), each bundle under ~14 MiB so that every file stays under the 16 MiB limit on what comes back.
# The lent machine returns at most 8 files in all: a study of up to ~90 MiB of checkpoints fits in 7. Each
# tarball is written to a temp name and renamed, so a cut leaves the previous complete snapshot.
#   bash scripts/gpu_snapshot.sh STUDY_DIR            # once
#   bash scripts/gpu_snapshot.sh STUDY_DIR 60 &       # every 60 s until killed
# Unpack here with: python scripts/unpack_calls.py FILES_AT (keeps each run's furthest copy, never an older one).
# With SNAPSHOT_MIRROR set (gpu_parallel.sh sets it), every tarball is also copied there: the machine's own record
# of its newest checkpoints, which the next call on a still-warm machine resumes from (gpu_parallel.sh).
set -uo pipefail
study=${1:?study folder, e.g. results/induction}; every=${2:-0}
name=$(basename "$study")
limit=$((14 * 1024 * 1024))
mirror() {  # copy, then rename: a cut leaves the mirror's previous complete tarball
  [ -n "${SNAPSHOT_MIRROR:-}" ] || return 0
  mkdir -p "$SNAPSHOT_MIRROR" && cp "$OUT/$1" "$SNAPSHOT_MIRROR/.$1" && mv "$SNAPSHOT_MIRROR/.$1" "$SNAPSHOT_MIRROR/$1"
}
snap() {
  [ -d "$study" ] || return 0
  tar czf "$OUT/.$name.tgz" --exclude=hydra --exclude=runs "$study" && mv "$OUT/.$name.tgz" "$OUT/$name.tgz" \
    && mirror "$name.tgz"
  local k=0 size=0 bundle=()
  flush() {
    [ ${#bundle[@]} -gt 0 ] || return 0
    tar czf "$OUT/.${name}_runs_$k.tgz" "${bundle[@]}" && mv "$OUT/.${name}_runs_$k.tgz" "$OUT/${name}_runs_$k.tgz" \
      && mirror "${name}_runs_$k.tgz"
    k=$((k + 1)); size=0; bundle=()
  }
  for run in "$study"/runs/*/; do
    [ -d "$run" ] || continue
    s=$(du -sb "$run" | cut -f1)
    if [ $((size + s)) -gt $limit ]; then flush; fi
    bundle+=("$run"); size=$((size + s))
  done
  flush
  # bundles numbered k and up are left from an earlier snapshot whose runs were packed differently: stale copies
  # of runs that a newer bundle holds, so they go
  for dir in "$OUT" ${SNAPSHOT_MIRROR:+"$SNAPSHOT_MIRROR"}; do
    for f in "$dir/${name}_runs_"*.tgz; do
      [ -e "$f" ] || continue
      i=${f##*_runs_}; i=${i%.tgz}
      [[ "$i" =~ ^[0-9]+$ ]] && [ "$i" -ge "$k" ] && rm -f "$f"
    done
  done
  return 0
}
if [ "$every" -gt 0 ]; then
  while true; do sleep "$every"; snap; done
else
  snap
fi
