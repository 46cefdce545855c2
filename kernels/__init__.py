"""Fused and reference kernels: selective scan, causal conv1d, attention."""
