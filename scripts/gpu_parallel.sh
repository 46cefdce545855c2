#!/usr/bin/env bash
# Trains the runs listed in a study file side by side on one GPU machine, each for at most BUDGET_S seconds of
# this call; a run not done checkpoints and pauses, and calling this again continues every unfinished run and
# skips the finished ones (durable runs, README "Long runs, in pieces").
#   bash scripts/gpu_parallel.sh scripts/studies/induction.txt BUDGET_S [RESULTS_ROOT] [extra overrides...]
# (PYTHON=.venv/bin/python to use a virtualenv's ssmbench; NAMES=a,b trains only those runs of the file, and a name
# that is no run of it is an error before anything starts; CHECK_ONLY=1 checks the arguments and exits)
# On a host with several GPUs the runs are spread round-robin, one GPU per process through CUDA_VISIBLE_DEVICES
# (GPUS=N overrides the count nvidia-smi gives; each piece's log starts with a line naming its GPU).
# The study file holds one run a line: a name, then that run's ssmbench arguments (experiment=... sets the
# study folder). Logs: RESULTS_ROOT/<study>/logs/<name>.log. On the lent GPU machine ($OUT set) each study folder
# is copied into $OUT every minute and at the end (gpu_snapshot.sh), so a call cut off by its time limit still
# brings back the last checkpoints. BUDGET_S covers training only: a run that finishes then evaluates (for
# induction up to 15 lengths, up to 30 s each), so leave the call ~8 minutes more than BUDGET_S when runs may
# finish and ~1 minute when none can.
# MPS=1 runs the processes under the CUDA Multi-Process Service, so that kernels of runs sharing a GPU can run
# at the same time instead of taking turns (scripts/trainbench_share.sh measures whether that pays); if its
# daemon does not start here, the runs go on time-sliced and the first log line of the call says so.
set -uo pipefail
list=${1:?study file}; budget=${2:?budget in seconds}; root=${3:-results}; shift 3 || shift $#
here=$(dirname "$0")
py=${PYTHON:-python3}  # the interpreter that has ssmbench installed
[ -f "$list" ] || { echo "gpu_parallel.sh: no study file $list" >&2; exit 2; }
# A name in NAMES that is no run of the file would train nothing, silently, and cost a GPU call: refuse it first.
if [ -n "${NAMES:-}" ]; then
  known=$(awk '$1 != "" && $1 !~ /^#/ {print $1}' "$list")
  for name in ${NAMES//,/ }; do
    if ! grep -qxF -- "$name" <<<"$known"; then
      echo "gpu_parallel.sh: NAMES has '$name', which is no run of $list; its runs:" $known >&2
      exit 2
    fi
  done
fi
[ "${CHECK_ONLY:-0}" = 1 ] && exit 0  # gpu_measure_then_train.sh checks its arguments before it measures
# THREADS=1 trains the runs given to one GPU in one process, one thread and CUDA stream each (ssmbench.multirun),
# so their kernels can overlap without MPS; the process's own output goes to <study>/multirun_gpu<k>.out.
# ENSEMBLE=1 trains the runs that differ only in their seed as one batched ensemble (ssmbench.ensemble_run: one
# vmapped step for all of them, each keeping its own run folder, log and rows), one process per such group, the
# groups spread over the GPUs; its output goes to <study>/ensemble_<group>.out.
# Both train groups of runs, one process a group (the grouped driver): a group is a GPU's runs for THREADS, runs
# equal but for the seed for ENSEMBLE; group g goes to GPU g mod GPUs.
sharing="time-sliced"
grouped_driver=""  # empty: one process per run
declare -A group_names=() group_slot=()
group_keys=()
if [ "${ENSEMBLE:-0}" = 1 ]; then
  sharing="ensemble (one process per group of runs that differ only in seed)"
  grouped_driver=ensemble_run
elif [ "${THREADS:-0}" = 1 ]; then
  sharing="threads (one process per GPU, a thread per run)"
  grouped_driver=multirun
elif [ "${MPS:-0}" = 1 ]; then
  . "$here/mps.sh"
  if mps_start; then
    sharing="mps"
    trap mps_stop EXIT
  else
    sharing="time-sliced (MPS=1 asked, but the MPS daemon did not start or run a CUDA program)"
  fi
fi
# every row the runs write records it (ssmbench/env.py), so their throughput is never read as a GPU's alone
export SSMBENCH_GPU_SHARING="$sharing"
# A warm lent machine keeps /tmp between calls, but each call starts from a copy of our working tree: if the
# previous call's snapshots were not unpacked here before this call, its checkpoints are older than the machine's
# own. So the snapshots are mirrored on the machine (gpu_snapshot.sh, SNAPSHOT_MIRROR), and a call first takes,
# run by run, whichever copy is further (scripts/unpack_calls.py: never an older one). Session 7 lost two calls'
# training to exactly this. One mirror per study file, so that two of these drivers running side by side (one per
# GPU) never unpack into the same runs at once; a later call with the same study file finds it.
if [ -n "${OUT:-}" ] && [ "$root" = results ]; then
  export SNAPSHOT_MIRROR=${SNAPSHOT_MIRROR:-/tmp/ssmbench-state/$(basename "$list" .txt)}
  if compgen -G "$SNAPSHOT_MIRROR/*.tgz" >/dev/null; then
    echo "# resuming from the newer of the working tree and this machine's previous snapshots ($SNAPSHOT_MIRROR)"
    "$py" "$here/unpack_calls.py" --root . "$SNAPSHOT_MIRROR" || echo "# unpack_calls failed: resuming from the working tree"
  fi
fi
studies=()
pids=()
gpus=${GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}
gpus=${gpus:-0}
i=0
while read -r name args; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  [ -n "${NAMES:-}" ] && [[ ",$NAMES," != *",$name,"* ]] && continue
  # shellcheck disable=SC2086
  study=$("$py" -m ssmbench.cli $args results_root="$root" --cfg job 2>/dev/null | awk '/^study:/ {print $2}')
  study=${study:-default}
  mkdir -p "$root/$study/logs"
  [[ " ${studies[*]} " == *" $study "* ]] || studies+=("$study")
  slot=$i
  if [ -n "$grouped_driver" ]; then
    if [ "${ENSEMBLE:-0}" = 1 ]; then  # the group: the run's arguments without its seed
      key=$(sed -E 's/(^| )seed=[^ ]*//g; s/^ +//' <<<"$args")
    else  # the GPU round-robin gives it (keys first seen in the order 0, 1, ...: group g is GPU g)
      key=$((i % (gpus > 1 ? gpus : 1)))
    fi
    if [ -z "${group_slot[$key]+set}" ]; then group_slot[$key]=${#group_keys[@]}; group_keys+=("$key"); fi
    group_names[$key]+="$name,"
    slot=${group_slot[$key]}
  fi
  pin=()
  if [ "$gpus" -gt 1 ]; then
    pin=(env CUDA_VISIBLE_DEVICES=$((slot % gpus)))
    echo "# $(date -u +%FT%TZ) gpu $((slot % gpus)) of $gpus, $sharing" >>"$root/$study/logs/$name.log"
  else  # every piece's log says how many GPUs its call spread runs over (scripts/pieces_throughput.py reads it)
    echo "# $(date -u +%FT%TZ) gpu 0 of 1 (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}), $sharing" >>"$root/$study/logs/$name.log"
  fi
  i=$((i + 1))
  [ -n "$grouped_driver" ] && continue
  # shellcheck disable=SC2086
  "${pin[@]}" "$py" -m ssmbench.cli $args results_root="$root" trainer.max_time_s="$budget" trainer.progress=false \
    "$@" >>"$root/$study/logs/$name.log" 2>&1 &
  pids+=($!)
done < "$list"
for g in "${!group_keys[@]}"; do
  pin=()
  [ "$gpus" -gt 1 ] && pin=(env CUDA_VISIBLE_DEVICES=$((g % gpus)))
  out=$([ "$grouped_driver" = multirun ] && echo "multirun_gpu$g" || echo "ensemble_$g")
  "${pin[@]}" "$py" -m "ssmbench.$grouped_driver" "$list" --names "${group_names[${group_keys[$g]}]}" \
    results_root="$root" trainer.max_time_s="$budget" trainer.progress=false "$@" \
    >>"$root/${studies[0]}/$out.out" 2>&1 &
  pids+=($!)
done
snappers=()
if [ -n "${OUT:-}" ]; then
  for study in "${studies[@]}"; do bash "$here/gpu_snapshot.sh" "$root/$study" 60 & snappers+=($!); done
fi
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for s in "${snappers[@]}"; do kill "$s" 2>/dev/null; done
if [ -n "${OUT:-}" ]; then for study in "${studies[@]}"; do bash "$here/gpu_snapshot.sh" "$root/$study"; done; fi
for study in "${studies[@]}"; do
  grep -h "paused at step\|rows written\|skipping run\|Error\|error" "$root/$study"/logs/*.log | tail -n 30
done
exit $status
