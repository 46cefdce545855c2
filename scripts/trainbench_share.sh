#!/usr/bin/env bash
# Several training runs on one GPU (the training-speed issue's "8 runs in <= 2x the wall time of one"): the graphed
# step of each model alone, then K processes at once, time-sliced (the default) and under MPS (the CUDA
# Multi-Process Service lets kernels of different processes run at the same time). Every process warms up, then
# waits at a barrier so the timed blocks overlap. Rows in OUT/rows/, the table in OUT/summary.md.
#   bash scripts/trainbench_share.sh OUT [K ...]        # K defaults to 2 8
# Uses GPU 0 only (CUDA_VISIBLE_DEVICES=0). MPS needs root or the GPU owner; if its daemon does not start, or a
# CUDA program cannot run under it, the MPS half is skipped and says so.
set -uo pipefail
out=${1:?output folder}; shift
ks=${*:-2 8}
py=${PYTHON:-python3}
export CUDA_VISIBLE_DEVICES=0
bench=("$py" -m ssmbench.perf.training --experiments induction table1 --models mamba transformer --modes graphs
       --steps 100 --repeats 7 --out "$out/rows")
mkdir -p "$out/rows"
"${bench[@]}" || echo "the runs alone failed"

shared() {  # $1 = K, $2 = tag suffix ("" or "-mps")
  local k=$1 suffix=$2 pids=()
  for ((i = 0; i < k; i++)); do
    "${bench[@]}" --tag "k$k-p$i$suffix" --barrier "$out/barrier-k$k$suffix" >"$out/k$k-p$i$suffix.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || echo "k=$k$suffix: a process failed (see $out/k$k-p*$suffix.log)"; done
}

for k in $ks; do shared "$k" ""; done

. "$(dirname "$0")/mps.sh"
if mps_start "$out/mps_start.log"; then
  echo "MPS daemon up"
  for k in $ks; do shared "$k" "-mps"; done
  mps_stop
else
  echo "MPS unavailable here (see $out/mps_start.log): only time-sliced sharing measured"
fi
"$py" -m ssmbench.perf.training --summarize "$out"
