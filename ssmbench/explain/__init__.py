"""`ssmbench-explain`: figures that explain the models, in the order of the visual guide to Mamba
(docs/explain.md):

1. the SSM itself (ssm.py): HiPPO-LegS, S4's recurrent and convolutional views, zero-order hold;
2. selectivity (selectivity.py): Mamba's input-dependent Delta, B, C against S4's fixed kernel;
3. memory (memory.py): recurrent state norms over time, attention maps on induction heads;
4. the scan (scan.py): sequential vs parallel combine order, and the backward's memory with and without
   recomputation.

app.py is the Hydra app (conf/explain.yaml, schema in config.py); common.py builds the models and sequences.
"""
