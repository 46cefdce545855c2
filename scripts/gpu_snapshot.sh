#!/usr/bin/env bash
# Copies a results study into $OUT so that it comes back from the GPU machine even when the call is cut off:
# one tarball per run folder (checkpoints and kept models; one file each keeps every file under the 16 MiB limit
# on what comes back) and one for the rest of the study (rows, logs, progress files). Each tarball is written
# to a temp name and renamed, so a cut leaves the previous complete snapshot.
#   bash scripts/gpu_snapshot.sh STUDY_DIR            # once
#   bash scripts/gpu_snapshot.sh STUDY_DIR 60 &       # every 60 s until killed
# Unpack here with: for f in FILES_AT/*.tgz; do tar xzf "$f"; done
set -uo pipefail
study=${1:?study folder, e.g. results/induction}; every=${2:-0}
name=$(basename "$study")
snap() {
  [ -d "$study" ] || return 0
  tar czf "$OUT/.$name.tgz" --exclude=hydra --exclude=runs "$study" && mv "$OUT/.$name.tgz" "$OUT/$name.tgz"
  for run in "$study"/runs/*/; do
    [ -d "$run" ] || continue
    id=$(basename "$run")
    tar czf "$OUT/.run_$id.tgz" "$run" && mv "$OUT/.run_$id.tgz" "$OUT/run_$id.tgz"
  done
}
if [ "$every" -gt 0 ]; then
  while true; do sleep "$every"; snap; done
else
  snap
fi
