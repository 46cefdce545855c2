#!/usr/bin/env bash
# How fast do runs sharing one GPU train? The training-speed issue's "k runs in <= 2x the wall time of one",
# measured with the driver the studies use (gpu_parallel.sh) on the runs of STUDY, all on GPU 0, each mode from
# scratch for BUDGET_S seconds of training per run:
#   alone      the first run of STUDY by itself (the reference rate)
#   sliced     all runs as separate processes (the GPU takes them in turns)
#   mps        the same under the CUDA Multi-Process Service (skipped, and said, where its daemon does not start)
#   threads    all runs in one process, a thread and CUDA stream each (ssmbench.multirun)
#   ensemble   the runs that differ only in seed as one batched ensemble each (ssmbench.ensemble_run)
# Steps per second come from the runs' own logs (scripts/pieces_throughput.py); the table goes to ROOT/summary.md.
#   bash scripts/gpu_sharing_modes.sh scripts/studies/sharing_induction.txt 60 /tmp/sharing
set -uo pipefail
list=${1:?study file}; budget=${2:?budget in seconds}; root=${3:?output folder}
here=$(dirname "$0")
py=${PYTHON:-python3}
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
mkdir -p "$root"
first=$(grep -v '^\s*#' "$list" | grep -m1 .)
echo "$first" >"$root/alone.txt"
run_mode() {  # $1 = mode, $2 = study file, rest = env
  local mode=$1 file=$2; shift 2
  # a mode that hangs (a deadlock among threads, say) must not eat the rest of the call: start-up and the final
  # evaluation get 4 minutes beyond the training budget, then the mode is stopped and said so
  timeout -k 10 $((budget + 240)) env GPUS=1 "$@" bash "$here/gpu_parallel.sh" "$file" "$budget" "$root/$mode" \
    resume=false save_model=false >"$root/$mode.log" 2>&1 || echo "$mode: a run failed or the mode timed out (see $root/$mode.log)"
}
unset OUT  # no snapshots into the call's output: the summary is what comes back
run_mode alone "$root/alone.txt"
run_mode sliced "$list"
run_mode mps "$list" MPS=1
run_mode threads "$list" THREADS=1
run_mode ensemble "$list" ENSEMBLE=1
{
  echo "# Runs sharing one GPU: $(basename "$list"), ${budget} s of training per run"
  echo
  echo "$("$py" -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null) | commit ${SSMBENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)} | $(date -u +%F)"
  echo
  for mode in alone sliced mps threads ensemble; do
    echo "## $mode"
    echo
    grep -h -m1 "gpu 0 of" "$root/$mode"/*/logs/*.log 2>/dev/null | head -1 | sed 's/^# [^ ]* //'
    echo '```'
    for d in "$root/$mode"/*/; do "$py" "$here/pieces_throughput.py" "$d" --per-run 2>&1; done
    echo '```'
    echo
  done
} >"$root/summary.md"
cat "$root/summary.md"
