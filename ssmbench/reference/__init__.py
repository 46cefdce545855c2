"""The Mamba paper's published numbers, shipped as package data so reports can print them beside ours.

Source: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv 2312.00752:
Table 1 (selective copying accuracy %) and Table 11 (induction heads test accuracy % by test length; Table 2 in v2).
"""

SOURCE = "Gu & Dao 2023, arXiv 2312.00752"
TABLE1_CSV = "mamba_table1_selective_copying.csv"  # Table 1: accuracy (%) per (block, inner layer)
TABLE11_CSV = "mamba_table11_induction_heads.csv"  # Table 11: accuracy (%) per model and test length, or "oom"
# The official mamba_ssm 2.3.2 CUDA scan and causal SDPA, timed on one H200 on 2026-11-28 (median ms, bf16;
# columns op,B,D,L,N,gated_z,fwd_ms,fwdbwd_ms). Measured in another process: targets, not same-run comparisons.
# Read by ssmbench/perf/official.py alone (the profiler's scan rows and its report).
H200_OFFICIAL_CSV = "h200_official_kernels.csv"
