#!/usr/bin/env bash
# Table 11 (induction heads) on one GPU: the six models of the paper's table (scripts/studies/induction.txt)
# trained side by side, each for at most BUDGET_S seconds of this call; see gpu_parallel.sh.
#   bash scripts/gpu_induction.sh BUDGET_S [RESULTS_ROOT] [extra Hydra overrides...]
exec bash "$(dirname "$0")/gpu_parallel.sh" "$(dirname "$0")/studies/induction.txt" "$@"
