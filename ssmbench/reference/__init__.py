"""The Mamba paper's published numbers, shipped as package data so reports can print them beside ours.

Source: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv 2312.00752:
Table 1 (selective copying accuracy %) and Table 11 (induction heads test accuracy % by test length; Table 2 in v2).
"""

SOURCE = "Gu & Dao 2023, arXiv 2312.00752"
TABLE1_CSV = "mamba_table1_selective_copying.csv"  # Table 1: accuracy (%) per (block, inner layer)
TABLE11_CSV = "mamba_table11_induction_heads.csv"  # Table 11: accuracy (%) per model and test length, or "oom"
