"""Causal depthwise conv1d: reference and Triton kernels."""
