#!/usr/bin/env bash
# The scale-out issue's measurement: Table 1's eight (block, layer) rows as one Hydra sweep spread over this host's
# GPUs by the local_gpus launcher (one job per GPU at a time, each pinned by ssmbench, its GPU recorded in its
# rows), against the same sweep on one GPU. Short runs (STEPS steps each, no early stop, no kept model) so the
# two sweeps fit one call; each sweep's wall time goes to ROOT/wall.csv, rows to ROOT/scaleout_<n>gpu/.
#   bash scripts/gpu_scaleout.sh [STEPS] [ROOT]        # needs hydra-joblib-launcher (the launchers extra)
set -uo pipefail
steps=${1:-1000}; root=${2:-results/scaleout}
py=${PYTHON:-python3}
models=s4,s6_nogate,h3,hyena,s6_h3,mamba_s4,mamba_hyena,mamba
all=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || echo 0)
mkdir -p "$root"
[ -f "$root/wall.csv" ] || echo "gpus,runs,steps,wall_s,commit" >"$root/wall.csv"
for n in 1 "$all"; do
  [ "$n" -ge 1 ] || { echo "no GPU here"; exit 1; }
  visible=$(seq -s, 0 $((n - 1)))
  start=$(date +%s%N)
  CUDA_VISIBLE_DEVICES=$visible "$py" -m ssmbench.cli -m hydra/launcher=local_gpus experiment=table1 "model=$models" \
    trainer.steps="$steps" trainer.target_accuracy=null trainer.progress=false save_model=false resume=false \
    study="scaleout_${n}gpu" results_root="$root" hydra.sweep.dir="$root/hydra_${n}gpu" \
    >"$root/scaleout_${n}gpu.log" 2>&1 || echo "the $n-GPU sweep failed: see $root/scaleout_${n}gpu.log"
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  wall=$((ms / 1000)).$(printf %03d $((ms % 1000)))
  echo "$n,8,$steps,$wall,${SSMBENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}" >>"$root/wall.csv"
  echo "$n GPU(s): $wall s"
  [ "$all" -gt 1 ] || break
done
cat "$root/wall.csv"
