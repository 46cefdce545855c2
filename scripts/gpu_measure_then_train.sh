#!/usr/bin/env bash
# One GPU call that first times the step's implementation choices, then trains a study with the ones that won:
# a machine start (a minute or more of the session's device time) serves both.
#   bash scripts/gpu_measure_then_train.sh TOTAL_S STUDY_FILE [RESULTS_ROOT] [extra overrides...]
# 1. STAGES=$MEASURE_STAGES (default "step_options") of gpu_profile_all.sh into $MEASURE_OUT (default /tmp/measure),
#    with its own per-stage limits; on the lent machine ($OUT set) packed into $OUT/measure.tgz (one file).
# 2. The kernel options that measured faster on some model and slower on none (scripts/pick_options.py) are
#    exported for the training; every row records them (kernel_options, train_kernel_options).
# 3. scripts/gpu_parallel.sh STUDY_FILE with what is left of TOTAL_S as its training budget (NAMES, MPS, GPUS and
#    PYTHON pass through), when at least 60 s are left.
# TOTAL_S covers steps 1 and 3; give the call ~2 minutes more (setup, evaluation of runs that finish, snapshots).
set -uo pipefail
total=${1:?total seconds for measuring and training}; list=${2:?study file}; root=${3:-results}; shift 3 || shift $#
here=$(dirname "$0")
py=${PYTHON:-python3}
measure=${MEASURE_OUT:-/tmp/measure}
# the study file and NAMES first: a typo found after the measurement would leave the call nothing to train
CHECK_ONLY=1 bash "$here/gpu_parallel.sh" "$list" 0 "$root" || exit 2
t0=$SECONDS
STAGES=${MEASURE_STAGES:-step_options} PYTHON="$py" bash "$here/gpu_profile_all.sh" "$measure" \
  >"${measure}.log" 2>&1 || echo "# gpu_profile_all.sh exited non-zero: see ${measure}.log"
grep -h "^== .*exit" "${measure}.log" || true
if [ -d "$measure/step_options/rows" ]; then
  picks=$("$py" "$here/pick_options.py" "$measure/step_options/rows") && eval "$picks"
  echo "# options for the training: ${picks:-the defaults}"
fi
if [ -n "${OUT:-}" ]; then
  cp "${measure}.log" "$measure/logs/measure_then_train.log" 2>/dev/null
  tar czf "$OUT/measure.tgz" --exclude='*.pt' -C "$measure" . && echo "# measurement packed into \$OUT/measure.tgz"
fi
left=$((total - (SECONDS - t0)))
if [ "$left" -lt 60 ]; then
  echo "# only ${left}s left of ${total}s after measuring: no training this call"
  exit 0
fi
echo "# training $list for ${left}s"
exec bash "$here/gpu_parallel.sh" "$list" "$left" "$root" "$@"
