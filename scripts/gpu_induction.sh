#!/usr/bin/env bash
# Table 11 (induction heads) on one GPU: the six models of the paper's table, trained side by side (each run is
# host-bound, so they share the GPU well), each for at most BUDGET seconds of this call. A run that is not done
# checkpoints and pauses; calling this again continues every unfinished run and skips the finished ones.
#   bash scripts/gpu_induction.sh BUDGET_S [RESULTS_ROOT] [extra Hydra overrides...]
# Logs go to RESULTS_ROOT/induction/logs/<model>.log. On the lent GPU machine ($OUT set) the study is copied
# into $OUT every minute and at the end (scripts/gpu_snapshot.sh), so a call cut off by its time limit still
# brings back the last checkpoints. BUDGET_S covers training only: a run that finishes then evaluates up to
# 15 lengths (up to eval.time_budget_s = 30 s each), so leave the call about 8 minutes more than BUDGET_S when
# runs may finish, and one minute when none can.
set -uo pipefail
budget=${1:?budget in seconds}; root=${2:-results}; shift 2 || shift $#
attention=(model.d_model=128 model.layer.n_heads=8 trainer.lr=2e-4)
declare -A runs=(
  [mamba]="model=mamba"
  [transformer_abs]="model=transformer_abs ${attention[*]}"
  [transformer]="model=transformer ${attention[*]}"
  [transformer_xpos]="model=transformer_xpos ${attention[*]}"
  [h3]="model=h3 trainer.lr=2e-4"
  [hyena]="model=hyena trainer.lr=2e-4"
)
mkdir -p "$root/induction/logs"
snapper=""
if [ -n "${OUT:-}" ]; then bash "$(dirname "$0")/gpu_snapshot.sh" "$root/induction" 60 & snapper=$!; fi
pids=()
for name in "${!runs[@]}"; do
  # shellcheck disable=SC2086
  ssmbench experiment=induction ${runs[$name]} results_root="$root" trainer.max_time_s="$budget" \
    trainer.progress=false "$@" >>"$root/induction/logs/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ -n "$snapper" ]; then kill "$snapper"; bash "$(dirname "$0")/gpu_snapshot.sh" "$root/induction"; fi
grep -h "paused at step\|rows written\|skipping run\|Error\|error" "$root"/induction/logs/*.log | tail -n 30
exit $status
