#!/usr/bin/env bash
# Everything the profiler measures, for one GPU (an H200), in one call of about 10 minutes:
#   bash scripts/gpu_profile_all.sh OUT_DIR
# 1. kernels     ssmbench-profile profile=kernels     scan / conv1d / S4 FFT conv / attention against length
# 2. generation  ssmbench-generate generation=h200    decode throughput, Mamba vs Transformer, batch 1 .. 1024
# 3. generators  ssmbench-taskbench taskbench=full    generator time vs a training step, every experiment
# 4. gpu tests   the decoders against greedy forward on CUDA (eager and CUDA graphs), and the pytest-benchmark
#                GPU suites (OUT/benchmarks/gpu.json) when pytest-benchmark is installed
# 5. reports     OUT/{kernels,generation,generators}/{rows.csv,summary.md,plots/,environment.json}
# Not in the default stages: targets (ssmbench-profile profile=targets into OUT/targets, about 5 minutes: the
# kernels' speed targets beside the official kernel's times), e.g. STAGES="targets" for that alone; and the
# training-speed stages: sharing (scripts/gpu_sharing_modes.sh on the induction runs, 45 s a mode, into
# OUT/sharing: needs the GPU to itself, ~8 minutes), copies (scripts/scan_sweeps.py --sections copies into
# OUT/scan_sweeps), train_profile (scripts/profile_train_step.py for Table 1's mamba, s6_nogate, h3 and
# transformer into OUT/train_profile), kernel_tests (the GPU tests of the scan: every length to 70, half
# precision against float64, threaded graph captures, and the vmap rules and a Mamba ensemble on the Triton
# kernels against its members alone) and ensemble (ssmbench-trainbench --ensemble 8: 8 seeds as one batched step
# beside one run's eager and graphed steps, induction and Table 1, into OUT/ensemble); conv_bwd and rmsnorm (the
# conv1d backward's two paths, scripts/bench_conv1d_bwd.py; the Triton RMSNorm against PyTorch's,
# scripts/bench_rmsnorm.py) and step_options (those and the one-hot embedding inside the graphed steps;
# STEP_OPTIONS_EXPERIMENTS and STEP_OPTIONS_MODELS choose, default "table1" (GPU-bound: where the options show) and
# "mamba h3 hyena s4 mamba_s4").
# train_profile's models: PROFILE_MODELS (graphed, by family) and PROFILE_OPS_MODELS (eager, by op), either empty.
# scan_host: the eager scan's forward and forward+backward at the two short shapes of the training-speed issue's host
# targets (conf/profile/scan_host.yaml, well under a minute), into OUT/scan_host.
# table1_steps: every Table 1 row's graphed step at the defaults, one model at a time (the GPU cost of a row is its
# ms/step x its steps; TABLE1_STEP_MODELS narrows the models), into OUT/table1_steps.
# compile: the graphed Table 1 step with trainer.compile=default against none (COMPILE_MODELS, default "mamba h3 hyena
# s4"), into OUT/compile.
# Each stage has its own time limit (and the apps their own budget_s inside it), so one that overruns cannot
# starve the next; rows are written as they are measured, so a stage stopped early keeps what it measured.
# Logs: OUT/logs/<stage>.log. Uses $PYTHON (default: python). Needs torch with CUDA, triton, hydra-core,
# pandas, seaborn, tabulate; mamba_ssm and flash_attn are used when importable.
# STAGES="kernels generators" runs only the stages named (default: the four above; reports follow what ran).
# TARBALL=FILE packs OUT into one tar.gz at the end. Where the code runs from a copy without .git (a lent GPU
# machine), set SSMBENCH_COMMIT=<commit> so every row records the code it measured.
# A dry run of this script on a CPU, at toy sizes (a minute or two):
#   PRESET=cpu_smoke bash scripts/gpu_profile_all.sh /tmp/out
set -u
OUT_ARG=${1:?usage: bash scripts/gpu_profile_all.sh OUT_DIR}
mkdir -p "$OUT_ARG/logs" "$OUT_ARG/benchmarks"
OUT=$(cd "$OUT_ARG" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
T0=$SECONDS

run_stage() {  # run_stage NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name: start at $((SECONDS - T0))s (limit ${limit}s)"
  timeout -k 15 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  local rc=$?
  tail -n 30 "$OUT/logs/$name.log"
  echo "== $name: exit $rc at $((SECONDS - T0))s"
}

# The package must import as ssmbench.* (kernels/, models/, tasks/, conf/ are mapped into it by the install).
importable() { $PY -c "import ssmbench.perf.cli, ssmbench.kernels.selective_scan, ssmbench.conf" >/dev/null 2>&1; }
if ! importable; then
  echo "== ssmbench is not installed for $PY: pip install --no-deps -e ."
  $PY -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/logs/install.log" 2>&1 || true
fi
if ! importable; then  # no pip/setuptools that can do it: the same layout through symlinks on PYTHONPATH
  SHIM=$(mktemp -d)
  echo "== install failed (logs/install.log); importing ssmbench through a symlink tree in $SHIM"
  mkdir -p "$SHIM/ssmbench"
  for f in ssmbench/*; do ln -s "$PWD/$f" "$SHIM/ssmbench/"; done
  for d in kernels models tasks conf; do ln -s "$PWD/$d" "$SHIM/ssmbench/$d"; done
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
  importable || { echo "ssmbench still does not import:"; $PY -c "import ssmbench.perf.cli"; exit 1; }
fi
$PY - >"$OUT/logs/versions.txt" 2>&1 <<'PYEOF'
import importlib, sys
import torch, triton
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| triton", triton.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE")
for m in ("mamba_ssm", "flash_attn", "hydra", "pandas", "seaborn", "tabulate", "pytest_benchmark"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:
        print(m, "not importable:", type(e).__name__)
PYEOF
cat "$OUT/logs/versions.txt"
nvidia-smi >"$OUT/logs/nvidia-smi.txt" 2>&1 || true

OFFICIAL=""
for f in ssmbench/reference/h200_official_kernels.csv shared/reference/h200_official_kernels.csv; do
  if [ -f "$f" ]; then OFFICIAL=$(cd "$(dirname "$f")" && pwd)/$(basename "$f"); break; fi
done

PRESET=${PRESET:-}
STAGES=" ${STAGES:-kernels generation generators gpu_tests} "
stage() {  # skip the stages not asked for
  case "$STAGES" in *" $1 "*|*" ${1#report_} "*) run_stage "$@" ;; *) echo "== $1: skipped (STAGES)" ;; esac
}
stage kernels 210 $PY -m ssmbench.perf.cli kernels profile="${PRESET:-kernels}" results_root="$OUT" study=kernels \
  report=false hydra.run.dir="$OUT/logs/hydra/kernels"
stage targets 360 $PY -m ssmbench.perf.cli kernels profile="${PRESET:-targets}" results_root="$OUT" study=targets \
  report=false hydra.run.dir="$OUT/logs/hydra/targets"
stage scan_host 120 $PY -m ssmbench.perf.cli kernels profile=scan_host results_root="$OUT" study=scan_host \
  hydra.run.dir="$OUT/logs/hydra/scan_host"
stage generation 330 $PY -m ssmbench.perf.cli generate generation="${PRESET:-h200}" results_root="$OUT" \
  study=generation report=false hydra.run.dir="$OUT/logs/hydra/generation"
stage generators 55 $PY -m ssmbench.perf.cli taskbench taskbench="${PRESET:-full}" results_root="$OUT" \
  study=generators report=false hydra.run.dir="$OUT/logs/hydra/generators"
stage sharing 520 env PYTHON="$PY" bash scripts/gpu_sharing_modes.sh scripts/studies/sharing_induction.txt 45 \
  "$OUT/sharing"
stage copies 150 $PY scripts/scan_sweeps.py --sections copies --results-root "$OUT"
stage conv_bwd 90 $PY scripts/bench_conv1d_bwd.py --out "$OUT/conv_bwd/rows.csv"
stage rmsnorm 90 $PY scripts/bench_rmsnorm.py --out "$OUT/rmsnorm/rows.csv"
# the step's implementation choices (kernels/common/options.py) inside the real graphed Mamba step, one at a time and
# all together against the defaults; rows tagged by the choice, each row's kernel_options says which ran
# (the defaults, each legacy path alone, and all the legacy paths: the step before session 9)
stage step_options 360 bash -c "for opts in '' SSMBENCH_MAMBA_LTI=token SSMBENCH_FFTCONV=blh SSMBENCH_CONV_BWD=fused \
  SSMBENCH_RMSNORM=torch \
  SSMBENCH_EMBED=gather SSMBENCH_SHIFT=torch \
  'SSMBENCH_CONV_BWD=fused SSMBENCH_RMSNORM=torch SSMBENCH_EMBED=gather SSMBENCH_SHIFT=torch SSMBENCH_FFTCONV=blh SSMBENCH_MAMBA_LTI=token'; do
  tag=\$(echo \"\${opts:-defaults}\" | tr ' =' '+-'); env \$opts $PY -m ssmbench.perf.training --experiments \
  ${STEP_OPTIONS_EXPERIMENTS:-table1} --models ${STEP_OPTIONS_MODELS:-mamba h3 hyena s4 mamba_s4 mamba_hyena} --modes graphs \
  --steps 20 --repeats 3 --tag \"\$tag\" --out '$OUT/step_options/rows'; done"
stage table1_steps 240 $PY -m ssmbench.perf.training --experiments table1 --models \
  ${TABLE1_STEP_MODELS:-mamba s6_nogate s6_h3 s4 h3 hyena mamba_s4 mamba_hyena transformer lstm} --modes graphs \
  --steps 20 --repeats 3 --tag defaults --out "$OUT/table1_steps/rows"
# trainer.compile (torch.compile of the forward and loss) against none, inside the graphed step; the first step of
# each compiled model also pays the compile, which the warm-up steps absorb (COMPILE_MODELS narrows the models)
stage compile 420 bash -c "for c in none default; do $PY -m ssmbench.perf.training --experiments table1 \
  --models ${COMPILE_MODELS:-mamba h3 hyena s4} --modes graphs --steps 20 --repeats 3 --override trainer.compile=\$c \
  --tag compile-\$c --out '$OUT/compile/rows'; done"
stage train_profile 300 bash -c "for m in ${PROFILE_MODELS-mamba s6_nogate h3 transformer}; do
  $PY scripts/profile_train_step.py --experiment table1 --model \$m --out '$OUT/train_profile' || echo \"\$m failed\"; done
  for m in ${PROFILE_OPS_MODELS-mamba h3}; do $PY scripts/profile_train_step.py --experiment table1 --model \$m --mode eager --ops \
    --out '$OUT/train_profile' || echo \"\$m (ops) failed\"; done"
# The quick ones first (vmap rules, the bf16 ensembles against their members, graphs in threads), the long sweep of
# every scan length last: under load (session 8, beside 21 training runs) the whole stage ran out of time at 420 s.
stage kernel_tests 420 bash -c "$PY -m pytest -q -p no:cacheprovider -o addopts='' tests/kernels/test_vmap_kernels.py;
  $PY -m pytest -q -rA -p no:cacheprovider -o addopts='' -m gpu tests/ssmbench/test_ensemble.py \
  tests/models/test_kernel_options.py tests/models/test_fftconv.py tests/models/test_mamba_lti_layout.py \
  tests/kernels/test_rmsnorm.py \
  tests/kernels/test_causal_conv1d.py \
  tests/ssmbench/test_train_step.py tests/kernels/test_triton_scan.py tests/kernels/test_scan_lengths.py"
stage ensemble 240 bash -c "$PY -m ssmbench.perf.training --experiments induction table1 --models mamba transformer \
  --modes eager graphs --ensemble 8 --out '$OUT/ensemble/rows' && $PY -m ssmbench.perf.training --summarize '$OUT/ensemble'"
if $PY -c "import pytest_benchmark" >/dev/null 2>&1; then
  stage gpu_tests 50 $PY -m pytest -q -p no:cacheprovider -m gpu tests/ssmbench/test_profile.py tests/benchmarks \
    --benchmark-enable --benchmark-json="$OUT/benchmarks/gpu.json" --benchmark-max-time=0.05 --benchmark-min-rounds=3
else
  stage gpu_tests 40 $PY -m pytest -q -p no:cacheprovider -m gpu tests/ssmbench/test_profile.py -o addopts=""
fi
for s in kernels targets generation generators; do  # (scan_sweeps and sharing write their own reports)
  if [ -d "$OUT/$s/rows" ]; then
    stage "report_$s" 40 $PY -m ssmbench.perf.cli report "$OUT/$s" --quiet ${OFFICIAL:+--official "$OFFICIAL"}
  fi
done
echo "== headlines"
[ -f "$OUT/kernels/summary.md" ] && awk '/^## B=/{print} /^### Speed-up of the fused scan.*forward \+ backward/{f=1; n=0}
  f{print; if (/^$/ && ++n == 2) exit}' "$OUT/kernels/summary.md"
[ -f "$OUT/targets/summary.md" ] && sed -n '/^## Targets/,/^## B=/p' "$OUT/targets/summary.md" | sed '$d'
[ -f "$OUT/generation/summary.md" ] && sed -n '/^## Findings/,/^## Tokens/p' "$OUT/generation/summary.md"
[ -f "$OUT/generators/summary.md" ] && grep -h "Worst case" "$OUT/generators/summary.md"
if [ -n "${TARBALL:-}" ]; then  # one file to carry back (a lent machine returns only a few files)
  tar czf "$TARBALL" -C "$OUT" . && echo "== packed $OUT into $TARBALL"
fi
echo "== done in $((SECONDS - T0))s; results under $OUT"
